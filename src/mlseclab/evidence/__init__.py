"""Incident evidence: what a responder needs from a lab, in one archive that proves itself.

:mod:`mlseclab.evidence.archive` writes and checks the archive (a tar.gz whose
``MANIFEST.sha256`` lists every member); :mod:`mlseclab.evidence.collect` gathers what
goes in it from the nodes (over the lab's SSH, read-only commands only) and the host.
"""
