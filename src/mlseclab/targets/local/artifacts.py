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
