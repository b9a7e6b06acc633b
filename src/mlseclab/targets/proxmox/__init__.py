"""The ``proxmox`` target: the Pulumi program in ``stacks/``, driven through the Automation API.

- ``target.py``: :class:`ProxmoxTarget`, what the commands call (the Target protocol).
- ``engine.py``: :class:`PulumiEngine`, the real engine: preview, up, destroy, drift.
- ``offline.py``: the program run in-process under Pulumi mocks, and the offline plan.
- ``preflight.py``: what the engine needs (tools, plugin, token, endpoint, privileges),
  each missing piece named with how to get it; failures worded as one line.
- ``program.py``: where the program is, how to import ``stacks.*``, shared names.

Pulumi is imported lazily, so the rest of mlseclab works without it.
"""
