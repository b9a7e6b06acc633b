"""Paths from the spec (mount points, the datasets root, model files): a safe alphabet,
no system directories, every refusal saying what would be valid."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlseclab.spec import LabModel, LocalSettings, Mount, system_path_problem


@pytest.mark.parametrize(
    "path",
    ["/srv/models", "/srv/vectors", "/data/lab.v2/models_1", "/var/lib/postgresql", "/home/a/m"],
)
def test_mount_path_accepted(path: str) -> None:
    assert Mount(dataset="models", path=path).path == path


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/", "it is the root directory"),
        ("//", "it is the root directory"),
        ("a:b", "it is not an absolute path"),
        ("/srv/a:b", "':' cannot be in a path here"),
        ("/srv/{{ x }}", "' ' '{' '}' cannot be in a path here"),
        ("/srv/a\nb", "'\\n' cannot be in a path here"),
        ("/srv//m", "it has an empty component (//)"),
        ("/srv/m/", "it ends in /"),
        ("/srv/./m", "it has a '.' or '..' component"),
        ("/srv/-m", "a component starts with '-'"),
        ("/s" + "x" * 100, "it is longer than 100 characters"),
        ("/proc", "it is /proc, a kernel or OS directory"),
        ("/sys/fs/cgroup", "it lies inside /sys, a kernel or OS directory"),
        ("/etc/models", "it lies inside /etc"),
        ("/usr/share/m", "it lies inside /usr"),
        ("/tmp/m", "it lies inside /tmp, a temporary directory the system cleans"),
        ("/var", "it is a system directory"),
        ("/var/lib", "it is a system directory"),
        ("/srv", "it is a system directory"),
        ("/home", "it is a system directory"),
        ("/root", "it is a system directory"),
    ],
)
def test_mount_path_refused(path: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Mount(dataset="models", path=path)
    message = str(exc.value.errors()[0]["ctx"]["error"])
    assert message.startswith(f"{path!r} is not a mount point: ")
    assert fragment in message
    assert "; " in message and "/srv/models" in message.rsplit("; ", 1)[1]


@pytest.mark.parametrize(
    "root", ["/var/lib/mlseclab", "/srv/mlseclab", "/tmp/pytest-of-root/pytest-7/test_a0/data"]
)
def test_datasets_root_accepted(root: str) -> None:
    assert LocalSettings(datasets_root=root).datasets_root == root


@pytest.mark.parametrize(
    ("root", "fragment"),
    [
        ("/", "it is the root directory"),
        ("/var", "it is a system directory"),
        ("/var/lib", "it is a system directory"),
        ("/usr", "it is /usr, a kernel or OS directory"),
        ("/usr/local/lab", "it lies inside /usr"),
        ("/home", "it is a system directory"),
        ("/srv", "it is a system directory"),
        ("/tmp", "it is a system directory"),
        ("/run/lab", "it lies inside /run"),
        ("/var/lib/mlseclab/", "it ends in /"),
        ("/var/lib/ml seclab", "' ' cannot be in a path here"),
    ],
)
def test_datasets_root_refused(root: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as exc:
        LocalSettings(datasets_root=root)
    message = str(exc.value.errors()[0]["ctx"]["error"])
    assert message.startswith(f"{root!r} is not a datasets root: ")
    assert fragment in message and "like /var/lib/mlseclab" in message


def test_system_path_problem_sees_containment() -> None:
    assert system_path_problem("/var") == "it is a system directory"
    assert system_path_problem("/var/lib/mlseclab") is None
    assert system_path_problem("/lib64/x") == "it lies inside /lib64, a kernel or OS directory"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("file:/srv/import/a\nb.gguf", "'\\n' cannot be in a path here"),
        ("file:/srv/import/{{x}}.gguf", "'{' '}' cannot be in a path here"),
        ("file:/srv/import/a:b/", "':' cannot be in a path here"),
        ("file:/srv//import/m.gguf", "it has an empty component (//)"),
        ("file:/srv/import/m//", "it ends in //"),
        ("file:/srv/../etc/m.gguf", "it has a '.' or '..' component"),
        ("file:/etc/", "it is /etc, a kernel or OS directory"),
        ("file:/proc/self/m.gguf", "it lies inside /proc"),
        ("file:/home/", "it is a system directory"),
    ],
)
def test_model_file_path_refused(source: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as exc:
        LabModel(source=source, sha256="0" * 64, task="chat")
    message = str(exc.value.errors()[0]["ctx"]["error"])
    assert fragment in message and "give an absolute path like file:/srv/import/" in message


@pytest.mark.parametrize(
    "source", ["file:/srv/import/m.gguf", "file:/srv/import/Qwen2.5-0.5B/", "file:/root/.c/m.gguf"]
)
def test_model_file_path_accepted(source: str) -> None:
    assert LabModel(source=source, sha256="0" * 64, task="chat").source == source
