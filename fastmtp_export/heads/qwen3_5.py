"""Qwen3.5 dense and MoE (SGLang ``Qwen3_5ForCausalLMMTP``): Qwen3-Next's MTP wiring
over the Qwen3.5 text layer (gated attention output, interleaved M-RoPE, which on text
positions equals 1-D RoPE)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..checkpoints.checkpoint import language_config
from .registry import register_head
from .spec import HeadSpec, qwen_mtp_spec


@register_head("qwen3_5")
def qwen3_5(config: Mapping[str, Any]) -> HeadSpec:
    moe = str(language_config(dict(config)).get("model_type", "")).startswith("qwen3_5_moe")
    name = "qwen3_5_moe" if moe else "qwen3_5"
    prefix = "Qwen3_5Moe" if moe else "Qwen3_5"
    return qwen_mtp_spec(
        "qwen3_5", f"transformers.models.{name}.modeling_{name}", prefix,
        rotary=prefix + "TextRotaryEmbedding",
    )  # fmt: skip
