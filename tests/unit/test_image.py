"""The node image's inputs (targets/local/image.py), without debootstrap: the package list
comes from the roles, and the apt sources carry Debian's security suite."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlseclab.targets.local.image import (
    BOOTSTRAP_PACKAGES,
    DEBIAN_KEYRING,
    ImageSpec,
    apt_sources,
    site_role_packages,
)

ROLES = Path(__file__).resolve().parents[2] / "roles"
#: The roles site.yml applies to lab nodes (pve_host is for the Proxmox hypervisors).
LAB_ROLES = ("base", "ssh", "firewall", "observability", "vectordb", "inference", "rag", "gateway")
#: Apt tasks whose packages are deliberately not in the image, and why.
NOT_IN_IMAGE = {
    "inference_vllm_packages": "vLLM runs on NVIDIA GPU VMs only; the image stays compiler-free",
}


def _defaults(role: str) -> dict[str, Any]:
    text = (ROLES / role / "defaults" / "main.yml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text) or {}
    return loaded


def _apt_installs(role: str) -> list[tuple[str, str]]:
    """``(task file, variable)`` of every apt task of the role that installs packages."""
    found = []
    for path in sorted((ROLES / role / "tasks").glob("*.yml")):
        for task in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            apt = task.get("ansible.builtin.apt")
            if not apt or apt.get("state", "present") != "present":
                continue
            match = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", str(apt["name"]))
            assert match, f"{path}: apt names {apt['name']!r}, not one *_packages variable"
            found.append((path.name, match[1]))
            assert "update_cache" not in apt and "cache_valid_time" not in apt, (
                f"{path}: an apt task that refreshes the lists needs a mirror nodes lack"
            )
            assert apt.get("install_recommends") is False, f"{path}: recommends must stay off"
    return found


def test_image_role_packages_are_the_union_of_the_roles_lists() -> None:
    union: set[str] = set()
    for role in LAB_ROLES:
        packages = _defaults(role)[f"{role}_packages"]
        assert packages, f"roles/{role}: {role}_packages is empty"
        union |= set(packages)
    union |= set(_defaults("observability")["observability_node_exporter_packages"])
    assert site_role_packages() == tuple(sorted(union))
    assert ImageSpec(mirror=None).role_packages == site_role_packages()


def test_every_package_a_role_installs_is_in_the_image() -> None:
    image = set(site_role_packages()) | set(BOOTSTRAP_PACKAGES)
    for role in LAB_ROLES:
        installs = _apt_installs(role)
        assert (
            "main.yml",
            f"{role}_packages",
        ) in installs, f"roles/{role}: no apt task installs {role}_packages"
        defaults = _defaults(role)
        for file, var in installs:
            if var in NOT_IN_IMAGE:
                continue
            missing = set(defaults[var]) - image
            assert not missing, f"roles/{role}/tasks/{file}: {var} has {missing}, not in the image"


def test_every_lab_role_declares_its_packages_in_its_contract() -> None:
    for role in LAB_ROLES:
        specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
        option = specs["argument_specs"]["main"]["options"][f"{role}_packages"]
        assert option["type"] == "list" and option["elements"] == "str"
        assert option["default"] == _defaults(role)[f"{role}_packages"]


def test_the_image_key_follows_its_package_lists_and_sources() -> None:
    base = ImageSpec(mirror=None)
    assert base.key() == ImageSpec(mirror=None).key()
    more = ImageSpec(mirror=None, role_packages=(*base.role_packages, "tmux"))
    assert more.key() != base.key()
    assert ImageSpec(mirror="http://mirror.lan/debian").key() != base.key()


DEBIAN_SOURCES = f"""Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie trixie-updates
Components: main
Signed-By: {DEBIAN_KEYRING}

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: trixie-security
Components: main
Signed-By: {DEBIAN_KEYRING}
"""


@pytest.mark.parametrize(
    "mirror", [None, "http://deb.debian.org/debian", "http://deb.debian.org/debian/"]
)
def test_debian_mirror_gets_the_security_and_updates_suites(mirror: str | None) -> None:
    assert apt_sources(mirror) == DEBIAN_SOURCES


def test_https_debian_mirror_keeps_its_scheme_for_security() -> None:
    text = apt_sources("https://deb.debian.org/debian")
    assert text is not None
    assert "URIs: https://deb.debian.org/debian\n" in text
    assert "URIs: https://deb.debian.org/debian-security\n" in text


@pytest.mark.parametrize(
    "mirror", ["http://mirror.lan/debian", "file:///srv/mirror", "http://deb.debian.org/ubuntu"]
)
def test_another_mirror_derives_nothing(mirror: str) -> None:
    assert apt_sources(mirror) is None
    script = ImageSpec(mirror=mirror).script()
    assert "debian-security" not in script and "sources.list.d/debian.sources" not in script


def test_the_recipe_writes_the_sources_before_apt_runs() -> None:
    script = ImageSpec(mirror=None).script()
    written = script.index("cat > /etc/apt/sources.list.d/debian.sources <<'MLSECLAB_SOURCES'")
    assert DEBIAN_SOURCES + "MLSECLAB_SOURCES\n" in script
    assert written < script.index("apt-get update") < script.index("apt-get upgrade")
    assert script.index("apt-get upgrade") < script.index("apt-get install")
    assert "rm -f /etc/apt/sources.list\n" in script
