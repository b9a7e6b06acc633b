"""The cloud-init seed of VM nodes (mlseclab.cloudinit): what it says, and that nothing
from the spec can add a key, a route or a command to it."""

from __future__ import annotations

import ipaddress

import yaml

from helpers.bigspec import big_spec_text
from helpers.labs import load_text, reference_text
from mlseclab.cloudinit import HostKey, SeedMount, mac_address, render_seed
from mlseclab.topology import derive

KEY = HostKey(
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----\n",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH root@node",
)
OPERATOR = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO operator"
USER_KEYS = {
    "hostname", "fqdn", "prefer_fqdn_over_hostname", "manage_etc_hosts", "manage_resolv_conf",
    "users", "disable_root", "ssh_pwauth", "ssh_deletekeys", "ssh_genkeytypes", "ssh_keys",
    "ssh_publish_hostkeys", "package_update", "package_upgrade", "package_reboot_if_required",
    "apt", "write_files", "growpart", "runcmd",
}  # fmt: skip


def _seeds(text: str) -> list[tuple[object, dict, dict, dict]]:
    spec = load_text(text)
    topo = derive(spec)
    out = []
    for node in topo.nodes.values():
        seed = render_seed(
            node, lab=spec.lab.name, domain=spec.lab.domain, operator_pubkey=OPERATOR,
            host_key=KEY,
        )  # fmt: skip
        assert seed.user_data.startswith("#cloud-config\n")
        out.append(
            (
                node,
                yaml.safe_load(seed.meta_data),
                yaml.safe_load(seed.user_data),
                yaml.safe_load(seed.network_config),
            )
        )
    return out


def test_the_seed_pins_the_host_key_and_fetches_nothing() -> None:
    for node, meta, user, _ in _seeds(reference_text()):
        assert meta == {
            "instance-id": f"mlseclab-reference-{node.name}",
            "local-hostname": node.name,
        }
        assert user["ssh_keys"] == {
            "ed25519_private": KEY.private,
            "ed25519_public": KEY.public,
        }
        assert user["ssh_genkeytypes"] == [] and user["ssh_deletekeys"] is True
        assert user["package_update"] is False and user["package_upgrade"] is False
        assert user["users"][0]["ssh_authorized_keys"] == [OPERATOR]
        assert user["users"][0]["lock_passwd"] is True and user["ssh_pwauth"] is False


def test_the_network_config_is_exactly_the_topology() -> None:
    for node, _, _, net in _seeds(reference_text()):
        eth = net["ethernets"]
        assert list(eth) == [i.name for i in node.interfaces]
        for i in node.interfaces:
            assert eth[i.name]["addresses"] == [i.cidr]
            assert eth[i.name]["match"] == {
                "macaddress": mac_address("reference", node.name, i.index)
            }
        routes = {
            (r["to"], r["via"], r.get("table")) for e in eth.values() for r in e.get("routes", [])
        }
        want = {(r.destination, r.via, None) for r in node.routes}
        want |= {(r.destination, r.via, st.table) for st in node.source_tables for r in st.routes}
        assert routes == want
        policy = [p for e in eth.values() for p in e.get("routing-policy", [])]
        assert {(p["from"], p["table"]) for p in policy} == {
            (st.source, st.table) for st in node.source_tables
        }
        # no default route: nothing leaves the lab (F1 is solved by the image, not by egress)
        assert not any(
            r["to"] in ("0.0.0.0/0", "default") for e in eth.values() for r in e.get("routes", [])
        )


def test_no_spec_string_adds_a_key_or_a_command() -> None:
    """Over the large generated spec (every name at its length and alphabet limit), every
    seed parses to exactly the documented keys and one command, the partition resize."""
    for node, meta, user, net in _seeds(big_spec_text(40)):
        assert set(meta) == {"instance-id", "local-hostname"}
        assert set(user) == USER_KEYS, node.name
        assert user["runcmd"] == [["resize2fs", "/dev/disk/by-partlabel/var"]]
        assert [f["path"] for f in user["write_files"]] == ["/etc/hosts", "/etc/resolv.conf"]
        for e in net["ethernets"].values():
            for a in e["addresses"]:
                ipaddress.IPv4Interface(a)


def test_macs_are_stable_unicast_and_distinct() -> None:
    macs = {mac_address("lab", f"n{i}", j) for i in range(50) for j in range(4)}
    assert len(macs) == 200
    for mac in macs:
        assert mac.startswith("52:54:00:") and int(mac.split(":")[0], 16) & 1 == 0
    assert mac_address("a", "b", 0) == mac_address("a", "b", 0)


def test_mounts_are_fstab_lines_with_safe_options() -> None:
    spec = load_text(reference_text())
    node = derive(spec).nodes["inference-01"]
    seed = render_seed(
        node, lab="reference", domain="lab.internal", operator_pubkey=OPERATOR, host_key=KEY,
        mounts=[SeedMount("models", "/srv/models", True, "9p")],
    )  # fmt: skip
    user = yaml.safe_load(seed.user_data)
    assert user["mounts"] == [
        [
            "models",
            "/srv/models",
            "9p",
            "ro,trans=virtio,version=9p2000.L,msize=262144,nodev,nosuid,noexec,nofail",
            "0",
            "0",
        ]
    ]
