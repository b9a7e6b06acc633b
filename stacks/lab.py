"""``build(spec, settings)``: the whole lab on Proxmox, as one component tree.

Order of things on a real cluster: the pool, the segments (bridge or SDN,
applied), the cluster firewall and role groups, the dataset mappings, then the
VMs, at most ``clone_parallelism`` clones at a time, each followed by its own
firewall (ipsets and rules first, then the DROP policies). The identity comes
last, when every path it grants on exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from mlseclab.spec import LabSpec, target_problems
from mlseclab.topology import derive
from stacks import provider
from stacks.access import LabAccess, LabAccessArgs
from stacks.compute import (
    DATA_DISKS,
    DatasetMappings,
    DatasetMappingsArgs,
    LabVm,
    LabVmArgs,
    ordered_interfaces,
    placement,
    vm_ids,
)
from stacks.firewall import LabFirewall, LabFirewallArgs, VmFirewall, VmFirewallArgs
from stacks.network import LabNetwork, LabNetworkArgs, proxmox_settings
from stacks.outputs import LabOutputs, NodeOutputs
from stacks.settings import StackSettings


def pool_id(spec: LabSpec) -> str:
    return proxmox_settings(spec).pool or f"mlseclab-{spec.lab.name}"


@dataclass
class LabArgs:
    spec: LabSpec
    settings: StackSettings


class Lab(pulumi.ComponentResource):
    outputs: LabOutputs

    def __init__(
        self, name: str, args: LabArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlseclab:lab:Lab", name, None, opts)
        spec, settings = args.spec, args.settings
        problems = [f"{'.'.join(map(str, p))}: {m}" for p, m in target_problems(spec, "proxmox")]
        if problems:  # containers: the spec reached the program without the CLI's checks
            raise ValueError(problems[0])
        px = proxmox_settings(spec)
        topo = derive(spec)
        lab = spec.lab.name
        prov = provider.provider(
            f"{name}-proxmox",
            endpoint=settings.endpoint or px.endpoint,
            insecure=px.insecure,
            api_token=settings.api_token,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=prov)

        def under(*deps: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=prov, depends_on=list(deps))

        pool = provider.pool(
            f"{name}-pool", pool_id=pool_id(spec), comment=f"mlseclab lab {lab}", opts=child
        )
        network = LabNetwork(f"{name}-net", LabNetworkArgs(spec, settings), opts=child)
        firewall = LabFirewall(f"{name}-fw", LabFirewallArgs(topo, settings), opts=child)
        mappings = DatasetMappings(
            f"{name}-datasets", DatasetMappingsArgs(spec, settings), opts=child
        )

        template: pulumi.Input[dict[str, Any]]
        if px.template.vm_id is not None:
            template = {"node_name": px.nodes[0], "vm_id": px.template.vm_id}
        elif px.template.tag is not None:
            template = provider.template_by_tag(
                px.template.tag, opts=pulumi.InvokeOptions(parent=self, provider=prov)
            )
        else:
            raise ValueError("lab.proxmox.template needs vm_id or tag")

        ids, hosts = vm_ids(spec), placement(spec)
        # Clones run at most clone_parallelism at a time: each VM waits for the one
        # clone_parallelism places before it (storage locks, bpg#995).
        order = sorted(spec.nodes, key=lambda n: ids[n])
        vms: dict[str, LabVm] = {}
        nodes: dict[str, NodeOutputs] = {}
        for i, node in enumerate(order):
            before = [vms[order[i - px.clone_parallelism]].vm] if i >= px.clone_parallelism else []
            vm = LabVm(
                f"{name}-{node}",
                LabVmArgs(
                    spec=spec,
                    topology=topo,
                    settings=settings,
                    node=node,
                    vm_id=ids[node],
                    pve_node=hosts[node],
                    template=template,
                    attachments=network.attachments,
                    mappings=mappings.names,
                    pool_id=pool.pool_id,  # type: ignore[attr-defined]
                    depends_on=[*network.ready, *mappings.resources, *before],
                ),
                opts=child,
            )
            vms[node] = vm
            VmFirewall(
                f"{name}-{node}-fw",
                VmFirewallArgs(
                    topology=topo,
                    node=node,
                    pve_node=hosts[node],
                    vm_id=ids[node],
                    nic_addresses=[i.ip for i in ordered_interfaces(topo, node)],
                ),
                opts=under(vm.vm, firewall),
            )
            n = spec.nodes[node]
            nodes[node] = NodeOutputs(
                mgmt_ip=topo.nodes[node].mgmt.ip,
                vm_id=vm.vm.vm_id,  # type: ignore[attr-defined]
                pve_node=hosts[node],
                role=n.role.value,
                gpu=n.gpu is not None,
                mounts=[
                    {"tag": mappings.names[(m.dataset, m.mode)], "path": m.path, "mode": m.mode}
                    for m in n.mounts
                ],
                data_disks={mount: serial for mount, serial, _size in DATA_DISKS},
            )

        self.outputs = LabOutputs(nodes=nodes, pool=pool_id(spec), network_mode=px.network_mode)
        if settings.manage_access:
            gpu_maps = sorted({("pci", n.gpu.mapping) for n in spec.nodes.values() if n.gpu})
            dir_maps = sorted(("dir", m) for m in mappings.names.values())
            template_id = (
                px.template.vm_id
                if px.template.vm_id is not None
                else pulumi.Output.from_input(template).apply(lambda t: int(t["vm_id"]))
            )
            access = LabAccess(
                f"{name}-access",
                LabAccessArgs(
                    spec=spec,
                    settings=settings,
                    pool_id=pool_id(spec),
                    vm_ids=ids,
                    template_vm_id=template_id,
                    mappings=[*gpu_maps, *dir_maps],
                ),
                opts=under(pool, mappings, *(v.vm for v in vms.values())),
            )
            self.outputs.automation_token_id = access.token_id
            self.outputs.automation_token = access.token_value
        self.register_outputs({"nodes": sorted(nodes)})


def build(spec: LabSpec, settings: StackSettings) -> LabOutputs:
    """Declare the lab's resources; the caller exports ``LabOutputs``."""
    return Lab(spec.lab.name, LabArgs(spec, settings)).outputs
