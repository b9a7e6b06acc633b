"""Every ``ignore_changes`` the program passes, with the reason for each.

An ignored property hides drift too, so this table is also what mlseclab reports
as "drift cannot see this": the driver reads it from here (``stacks.ignored``,
loaded like ``stacks.outputs``), and docs/proxmox.md lists every entry. No
Pulumi import: reading the table needs neither the SDK nor the provider.
"""

from __future__ import annotations

from typing import NamedTuple


class IgnoredChange(NamedTuple):
    """One ``ignore_changes`` entry: it hides drift too, so the drift report lists it."""

    type: str
    property: str
    reason: str


IGNORED_CHANGES: list[IgnoredChange] = [
    IgnoredChange(
        "proxmoxve:index/vmLegacy:VmLegacy",
        "vga",
        "a clone inherits the template's display; the provider diffs it on every run (bpg#1224)",
    ),
    IgnoredChange(
        "proxmoxve:index/vmLegacy:VmLegacy",
        "clone",
        "the template is only the starting image: a new template must not replace "
        "running VMs (use rebuild); a tag lookup would otherwise re-resolve each run",
    ),
]


def ignored_properties(type_name: str) -> list[str]:
    """Properties to pass as ``ignore_changes`` for a provider class (e.g. ``VmLegacy``)."""
    return [c.property for c in IGNORED_CHANGES if c.type.rsplit(":", 1)[-1] == type_name]
