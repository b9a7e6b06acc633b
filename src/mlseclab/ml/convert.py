"""The ``bert-f16`` converter: a BERT sentence-embedding model (safetensors and a WordPiece
tokenizer) written as GGUF f16 without PyTorch.

The ``gguf`` package writes the file and numpy reads the safetensors; the output is
deterministic, so :mod:`mlseclab.ml.models` pins its sha256 like any other model file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mlseclab.errors import TargetError
from mlseclab.ml.catalog import PICKLE_SUFFIXES


def _import_gguf() -> Any:
    try:
        import gguf  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise TargetError(
            "converting a model to GGUF needs the gguf package: "
            "`pip install gguf==0.19.0` in mlseclab's environment"
        ) from None
    return gguf


def convert_bert_f16(model_dir: Path, out: Path, tokenizer_pre: str) -> None:
    """Write a BERT sentence-embedding model (safetensors + WordPiece tokenizer) as GGUF f16.

    Mirrors llama.cpp's ``convert_hf_to_gguf.py`` (``BertModel``, ``--outtype f16``) with
    numpy in place of PyTorch: the same tensors, names, types and metadata keys.
    """
    gguf = _import_gguf()
    import numpy as np  # type: ignore[import-not-found,unused-ignore]  # gguf needs it

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("architectures") != ["BertModel"] or config.get("model_type") != "bert":
        raise TargetError(f"{model_dir}: not a BertModel ({config.get('architectures')})")
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        pickled = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        raise TargetError(
            f"{model_dir}: no model.safetensors"
            + (f" (only pickle weights {', '.join(pickled)}, which are refused)" if pickled else "")
        )
    arch = gguf.MODEL_ARCH.BERT
    block_count = int(config["num_hidden_layers"])
    tensor_map = gguf.get_tensor_name_map(arch, block_count)
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch])
    f32_keys = [
        gguf.TENSOR_NAMES[k] for k in (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)
    ]

    # tensors (sorted by name, as the safetensors library and the converter order them)
    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": None}
    with weights.open("rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(header_len))
        base = 8 + header_len
        for hf_name in sorted(k for k in header if k != "__metadata__"):
            meta = header[hf_name]
            tname = hf_name.removeprefix("bert.")
            if tname.endswith(".gamma"):
                tname = tname[: -len(".gamma")] + ".weight"
            if tname.endswith(".beta"):
                tname = tname[: -len(".beta")] + ".bias"
            if tname in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
                continue
            if tname.startswith(("cls.predictions", "cls.seq_relationship")):
                continue
            if tname.endswith(
                (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
            ):
                continue
            dtype = dtypes.get(meta["dtype"])
            if dtype is None:
                raise TargetError(
                    f"{weights.name}: tensor {hf_name} has unsupported dtype {meta['dtype']}"
                )
            start, end = meta["data_offsets"]
            fh.seek(base + start)
            data = np.frombuffer(fh.read(end - start), dtype=np.dtype(dtype).newbyteorder("<"))
            data = data.reshape(meta["shape"]).astype(np.float32)
            new_name = tensor_map.get_name(key=tname, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise TargetError(f"{weights.name}: cannot map tensor {hf_name} to GGUF")
            f32 = (
                data.ndim <= 1
                or new_name.endswith("_norm.weight")
                or not new_name.endswith(".weight")
                or any(new_name == k + ".weight" for k in f32_keys)
            )
            qtype = gguf.GGMLQuantizationType.F32 if f32 else gguf.GGMLQuantizationType.F16
            writer.add_tensor(new_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    # general metadata (model card), as the converter does
    total, shared, expert, expert_count = writer.get_total_parameter_count()
    metadata = gguf.Metadata.load(None, model_dir, None, total)
    if metadata.name is None:
        metadata.name = model_dir.name
    if metadata.size_label is None and total > 0:
        metadata.size_label = gguf.size_label(total, shared, expert, expert_count)
    writer.add_type(gguf.GGUFType.MODEL)
    metadata.set_gguf_meta_model(writer)

    # hyperparameters
    writer.add_block_count(block_count)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_causal_attention(False)
    writer.add_pooling_type(_pooling(gguf, model_dir))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # vocabulary: WordPiece, written in llama.cpp's "phantom space" form
    tokens, toktypes = _wordpiece_vocab(gguf, model_dir, int(config["vocab_size"]))
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre(tokenizer_pre)
    writer.add_token_list(tokens)
    writer.add_token_types(toktypes)
    gguf_log = logging.getLogger("gguf")
    level = gguf_log.level
    gguf_log.setLevel(logging.ERROR)  # "no handler for special token type cls": expected for BERT
    try:
        gguf.SpecialVocab(model_dir, n_vocab=len(tokens)).add_to_gguf(writer)
    finally:
        gguf_log.setLevel(level)
    # BertNormalizer flags: newer gguf-py (vendored in llama.cpp) writes them from SpecialVocab;
    # llama.cpp defaults both to true when absent. Written explicitly so the file does not
    # depend on which gguf release is installed (and matches the reference converter).
    normalizer = (
        json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("normalizer")
        or {}
    )
    if normalizer.get("type") == "BertNormalizer":
        for flag in ("lowercase", "strip_accents"):
            if normalizer.get(flag) is not None:
                writer.add_bool(f"tokenizer.ggml.normalizer.{flag}", bool(normalizer[flag]))

    writer.write_header_to_file(path=out)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()


def _pooling(gguf: Any, model_dir: Path) -> Any:
    modules = model_dir / "modules.json"
    if not modules.is_file():
        raise TargetError(f"{model_dir}: no modules.json (pooling unknown)")
    for mod in json.loads(modules.read_text(encoding="utf-8")):
        if str(mod.get("type", "")).endswith("Pooling"):
            pooling = json.loads(
                (model_dir / mod["path"] / "config.json").read_text(encoding="utf-8")
            )
            if pooling.get("pooling_mode_mean_tokens"):
                return gguf.PoolingType.MEAN
            if pooling.get("pooling_mode_cls_token"):
                return gguf.PoolingType.CLS
            raise TargetError(f"{model_dir}: only mean or CLS pooling is supported")
    raise TargetError(f"{model_dir}: modules.json names no pooling module")


def _wordpiece_vocab(gguf: Any, model_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and token types as the converter writes them for a BERT WordPiece tokenizer:
    added special tokens are CONTROL (kept as is), ``##x`` continuations become ``x``,
    other tokens (and ``[PADi]`` for missing ids, UNUSED) get the ``▁`` word-start marker."""
    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if tok.get("model", {}).get("type") != "WordPiece":
        raise TargetError(f"{model_dir}: tokenizer is not WordPiece")
    vocab: dict[str, int] = dict(tok["model"]["vocab"])
    special: set[int] = set()
    for added in tok.get("added_tokens", []):
        vocab[added["content"]] = int(added["id"])
        if not added.get("special"):
            raise TargetError(f"{model_dir}: non-special added token {added['content']!r}")
        special.add(int(added["id"]))
    reverse = {i: t for t, i in vocab.items()}
    if len(reverse) != len(vocab) or max(reverse) >= vocab_size:
        raise TargetError(f"{model_dir}: vocabulary ids are not unique or exceed {vocab_size}")
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"\u2581[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif i in special:
            tokens.append(reverse[i])
            types.append(int(gguf.TokenType.CONTROL))
        else:
            token = reverse[i]
            tokens.append(token[2:] if token.startswith("##") else "\u2581" + token)
            types.append(int(gguf.TokenType.NORMAL))
    return tokens, types
