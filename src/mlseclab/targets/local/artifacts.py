"""What the nodes need from the operator's machine before hardening: models and wheels.

Nodes never reach a package index or a model hub. ``prepare`` produces the
spec's models into their dataset (checked against the pinned sha256) and the
model server's wheelhouse (built once for the node image), and returns the
extra variables the roles read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from mlseclab import ui
from mlseclab.digest import sha256_file
from mlseclab.errors import TargetError
from mlseclab.ml.catalog import BUILTIN_PREFIX, FILE_PREFIX, model_file
from mlseclab.spec import Engine, LabModel, LabSpec, Role


def spec_models(spec: LabSpec) -> dict[str, tuple[Any, str]]:
    """Each spec model as a pinned :class:`mlseclab.ml.models.Model`, with its dataset."""
    from mlseclab.ml import models

    builtins = {m.name: m for m in models.DEFAULT_MODELS}
    out: dict[str, tuple[Any, str]] = {}
    for name, lab_model in spec.models.items():
        out[name] = (_model(name, lab_model, builtins, models), lab_model.dataset)
    return out


def _model(name: str, lab_model: LabModel, builtins: dict[str, Any], models: Any) -> Any:
    if lab_model.source.startswith(BUILTIN_PREFIX):
        model = builtins[lab_model.source.removeprefix(BUILTIN_PREFIX)]
        return model if model.name == name else _renamed(model, name)
    path = Path(lab_model.source.removeprefix(FILE_PREFIX))
    size = path.stat().st_size if path.exists() else 0
    return models.Model(
        name=name,
        file=model_file(lab_model.source),
        sha256=lab_model.sha256,
        size=size,
        task="completion" if lab_model.task == "chat" else lab_model.task,
        source=models.ModelSource(kind="file", path=path),
        provenance=str(path),
    )


def _renamed(model: Any, name: str) -> Any:
    import dataclasses

    return dataclasses.replace(model, name=name)


@dataclass(frozen=True)
class PinnedFile:
    """A spec model's file in its dataset, with the sha256 the spec pins for it."""

    name: str  # the spec's model name
    dataset: str
    path: Path  # <dataset dir>/<file>
    sha256: str

    @cached_property
    def found(self) -> str | None:
        """The file's sha256 as it is now (None when absent); read once per object."""
        return sha256_file(self.path) if self.path.exists() else None

    @property
    def matches(self) -> bool:
        return self.found == self.sha256


def pinned_model_files(spec: LabSpec, dataset_dir: Callable[[str], Path]) -> list[PinnedFile]:
    """Where each spec model's file is (``dataset_dir(dataset) / file``) and its pin.

    The one answer to "does the file in the dataset match its pin", for drift, for
    ``drift --fix``'s quarantine and for ``prepare_local``; nothing is read until
    :attr:`PinnedFile.found` is asked.
    """
    return [
        PinnedFile(
            name=name,
            dataset=m.dataset,
            path=Path(dataset_dir(m.dataset)) / model_file(m.source),
            sha256=m.sha256,
        )
        for name, m in spec.models.items()
    ]


def refuse_gpu_only(spec: LabSpec) -> None:
    """The local target cannot run an engine that needs a GPU: refused before anything."""
    gpu_only = [n for n, node in spec.nodes.items() if node.engine is Engine.VLLM]
    if gpu_only:
        raise TargetError(
            f"{', '.join(gpu_only)}: engine vllm needs a VM with an NVIDIA GPU (target proxmox); "
            "the local target runs every node as a container without a GPU: use engine llama_cpp"
        )


#: The RAG corpus beside a spec (``inventories/<lab>/corpus/``) and the dataset it goes in.
CORPUS_DIR = "corpus"
CORPUS_DATASET = "corpora"
#: What one corpus may hold: the RAG service refuses documents over 1 MiB anyway.
CORPUS_MAX_FILES = 10_000
CORPUS_MAX_FILE_BYTES = 16 * 1024 * 1024


def ensure_corpus(spec: LabSpec, spec_path: Path, dataset_dir: Callable[[str], Path]) -> list[str]:
    """Copy the corpus beside the spec into the corpora dataset: new and changed files only
    (compared by sha256), never a symlink, never deleting (the dataset is the operator's
    data; the manifest decides what is indexed). Returns what it changed."""
    source = spec_path.parent / CORPUS_DIR
    if not source.is_dir() or CORPUS_DATASET not in spec.datasets:
        return []
    if not spec.mounts_of(CORPUS_DATASET):
        return []
    dest = Path(dataset_dir(CORPUS_DATASET))
    files = sorted(p for p in source.rglob("*") if not p.is_dir())
    if len(files) > CORPUS_MAX_FILES:
        raise TargetError(f"{source}: {len(files)} files, more than {CORPUS_MAX_FILES}")
    changed: list[str] = []
    for path in files:
        rel = path.relative_to(source)
        if path.is_symlink() or not path.is_file():
            raise TargetError(f"{path}: not a regular file; a corpus holds regular files only")
        if path.stat().st_size > CORPUS_MAX_FILE_BYTES:
            raise TargetError(f"{path}: larger than {CORPUS_MAX_FILE_BYTES} bytes")
        target = dest / rel
        if (
            target.is_file()
            and not target.is_symlink()
            and sha256_file(target) == sha256_file(path)
        ):
            continue
        for parent in reversed(target.relative_to(dest).parents):
            d = dest / parent
            if d.is_symlink():
                raise TargetError(f"{d} is a symbolic link; remove it and run `mlseclab up` again")
            d.mkdir(mode=0o755, exist_ok=True)
        tmp = target.with_name(f".{target.name}.mlseclab-tmp")
        tmp.write_bytes(path.read_bytes())
        tmp.chmod(0o644)
        tmp.replace(target)
        changed.append(f"corpus {rel}")
    return changed


def prepare_local(spec: LabSpec, dataset_dir: Any, image_rootfs: Path) -> dict[str, Any]:
    """Models into their datasets, the wheelhouse for the image; the roles' extra vars.

    Run by the local target's ``up``, which records the result in the lab's state.
    """
    refuse_gpu_only(spec)
    extravars: dict[str, Any] = {}
    serving = any(n.role is Role.INFERENCE for n in spec.nodes.values())
    if not serving or not spec.models:
        return extravars
    from mlseclab.ml.models import ensure_models
    from mlseclab.ml.wheelhouse import ensure_wheelhouse

    by_dataset: dict[str, list[Any]] = {}
    for model, dataset in spec_models(spec).values():
        by_dataset.setdefault(dataset, []).append(model)
    for dataset, models in by_dataset.items():
        with ui.step(f"models: {', '.join(m.name for m in models)} (sha256 pinned)"):
            ensure_models(tuple(models), Path(dataset_dir(dataset)))
    with ui.step("model server wheelhouse (llama-cpp-python, built once per Python and libc)"):
        extravars["mlseclab_wheelhouse_dir"] = str(ensure_wheelhouse(image_rootfs))
    return extravars
