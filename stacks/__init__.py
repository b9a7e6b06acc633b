"""The Pulumi program of the ``proxmox`` target.

``Pulumi.yaml`` (repository root) names this directory as the program: the
Pulumi CLI runs ``stacks/__main__.py``, which puts the repository root on
``sys.path`` and imports the modules here as the package ``stacks``. Tests and
the mlseclab driver do the same (repository root on ``sys.path``, then
``import stacks.lab``), so there is one import path everywhere.

``provider.py`` is the only module that imports ``pulumi_proxmoxve``.
"""
