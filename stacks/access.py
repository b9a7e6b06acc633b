"""The lab's Proxmox identity: least-privilege roles, a user and a privilege-separated token,
and separate operator roles for inference and for training machines.

Every privilege is granted on the narrowest path that works and carries the reason
it is there. Privilege-separated tokens start with no rights: the token gets only
what the ACLs below grant it (the user itself gets nothing). The privilege names
exist in Proxmox VE 8 and 9 (none of the ones 9.0 removed, such as VM.Monitor).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from mlseclab.spec import LabSpec, Role
from stacks import provider
from stacks.network import proxmox_settings, sdn_acl_path
from stacks.settings import StackSettings

#: (privilege, why) per role suffix. Paths are chosen in LabAccess.
LAB_VMS: tuple[tuple[str, str], ...] = (
    ("VM.Allocate", "create and delete the lab's VMs (only inside the lab's pool)"),
    ("VM.Audit", "read VM config and status: refresh, drift and outputs"),
    ("VM.PowerMgmt", "start the VMs after cloning, stop them on down"),
    ("VM.Config.CPU", "set cores and the CPU type"),
    ("VM.Config.Memory", "set memory (no ballooning)"),
    ("VM.Config.Disk", "add the /var, /var/log, /var/log/audit and /tmp disks"),
    ("VM.Config.CDROM", "attach the cloud-init drive (a CD-ROM device)"),
    ("VM.Config.Cloudinit", "set static addresses, the SSH key and DNS"),
    ("VM.Config.Network", "attach NICs to lab VLANs and write the VM's firewall rules"),
    ("VM.Config.HWType", "q35, OVMF, EFI disk, hostpci (GPU by mapping) and virtiofs"),
    ("VM.Config.Options", "name, tags, description, boot and agent options"),
    ("Pool.Allocate", "put the lab's VMs into the lab's pool (granted on that pool only)"),
)
LAB_TEMPLATE: tuple[tuple[str, str], ...] = (
    ("VM.Clone", "full-clone the cloud-init template (granted on the template only)"),
    ("VM.Audit", "read the template's config while cloning"),
)
LAB_STORAGE: tuple[tuple[str, str], ...] = (
    ("Datastore.AllocateSpace", "allocate the VMs' disks on the lab datastore"),
    ("Datastore.Audit", "read the datastore's content and free space"),
)
LAB_NETWORK: tuple[tuple[str, str], ...] = (
    (
        "SDN.Use",
        "attach NICs to the lab's VLANs on the lab bridge, or to the vnets of the lab's SDN "
        "zone (granted there, propagated)",
    ),
)
LAB_MAPPINGS: tuple[tuple[str, str], ...] = (
    ("Mapping.Use", "pass the lab's GPU mappings and dataset directories to its VMs"),
)
INFERENCE_OPERATOR: tuple[tuple[str, str], ...] = (
    ("VM.Audit", "see the inference VMs' state and config"),
    ("VM.Console", "reach the console for incident response when SSH is down"),
    ("VM.PowerMgmt", "restart a hung model server VM"),
)
TRAINING_OPERATOR: tuple[tuple[str, str], ...] = (
    ("VM.Audit", "see the training VMs' state and config"),
    ("VM.Console", "reach the console of a training VM"),
    ("VM.PowerMgmt", "stop or restart long training runs"),
    ("VM.Snapshot", "checkpoint a training VM before a risky run and roll it back"),
)
#: Nodes with this tag in the spec are training machines (the spec has no training role).
TRAINING_TAG = "training"


def privileges(table: tuple[tuple[str, str], ...]) -> list[str]:
    return sorted({p for p, _why in table})


@dataclass
class LabAccessArgs:
    spec: LabSpec
    settings: StackSettings
    pool_id: str
    vm_ids: dict[str, int]
    template_vm_id: pulumi.Input[int]
    mappings: list[tuple[str, str]]  # (kind "pci"|"dir", mapping name)


class LabAccess(pulumi.ComponentResource):
    token_id: pulumi.Output[str]
    token_value: pulumi.Output[str]

    def __init__(
        self, name: str, args: LabAccessArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlseclab:access:LabAccess", name, None, opts)
        spec, px = args.spec, proxmox_settings(args.spec)
        lab = spec.lab.name
        child = pulumi.ResourceOptions(parent=self)

        def role(suffix: str, table: tuple[tuple[str, str], ...]) -> pulumi.CustomResource:
            return provider.role(
                f"{name}-role-{suffix}",
                role_id=f"mlseclab-{lab}-{suffix}",
                privileges=privileges(table),
                opts=child,
            )

        roles = {
            "vms": role("vms", LAB_VMS),
            "template": role("template", LAB_TEMPLATE),
            "storage": role("storage", LAB_STORAGE),
            "network": role("network", LAB_NETWORK),
            "mappings": role("mappings", LAB_MAPPINGS),
        }
        user_id = f"mlseclab-{lab}@pve"
        user = provider.user(
            f"{name}-user",
            user_id=user_id,
            comment=f"mlseclab {lab}: automation (token only, no password)",
            opts=child,
        )
        token = provider.token(
            f"{name}-token",
            user_id=user_id,
            token_name="automation",  # noqa: S106 - a name
            comment=f"mlseclab {lab}: least-privilege automation token",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[user]),
        )
        self.token_id = pulumi.Output.from_input(f"{user_id}!automation")
        self.token_value = token.value  # type: ignore[attr-defined]
        grants: list[tuple[str, pulumi.Input[str], str]] = [
            ("pool", f"/pool/{args.pool_id}", "vms"),
            (
                "template",
                pulumi.Output.from_input(args.template_vm_id).apply(lambda vm_id: f"/vms/{vm_id}"),
                "template",
            ),
            ("storage", f"/storage/{px.datastore}", "storage"),
            ("network", sdn_acl_path(spec), "network"),
            *(
                (f"mapping-{kind}-{m}", f"/mapping/{kind}/{m}", "mappings")
                for kind, m in args.mappings
            ),
        ]
        for key, path, role_key in grants:
            provider.acl(
                f"{name}-acl-{key}",
                path=path,
                role_id=roles[role_key].id,
                token_id=self.token_id,
                # Proxmox checks SDN.Use on the vnet (or VLAN) below the zone (or bridge)
                # path: only a propagated grant reaches it (pve-guest-common GuestHelpers).
                propagate=key in ("pool", "network"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[token]),
            )

        # Operators: one group and role per kind of machine, granted per VM.
        kinds = {
            "inference": (
                INFERENCE_OPERATOR,
                [n for n, node in spec.nodes.items() if node.role is Role.INFERENCE],
            ),
            "training": (
                TRAINING_OPERATOR,
                [n for n, node in spec.nodes.items() if TRAINING_TAG in node.tags],
            ),
        }
        for kind, (table, members) in kinds.items():
            op_role = role(f"{kind}-operator", table)
            grp = provider.group(
                f"{name}-group-{kind}",
                group_id=f"mlseclab-{lab}-{kind}-ops",
                comment=f"mlseclab {lab}: operators of {kind} machines",
                opts=child,
            )
            for node in sorted(members):
                provider.acl(
                    f"{name}-acl-{kind}-{node}",
                    path=f"/vms/{args.vm_ids[node]}",
                    role_id=op_role.id,
                    group_id=grp.id,
                    propagate=False,
                    opts=child,
                )
        self.register_outputs({"tokenId": self.token_id})
