"""Qwen3-Next (SGLang ``Qwen3NextForCausalLMMTP``): ``fc`` over Gemma-style (1 + w)
norms, a gated full-attention layer with the sparse MoE, ``mtp.norm``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .registry import register_head
from .spec import HeadSpec, qwen_mtp_spec


@register_head("qwen3_next")
def qwen3_next(config: Mapping[str, Any]) -> HeadSpec:
    return qwen_mtp_spec(
        "qwen3_next", "transformers.models.qwen3_next.modeling_qwen3_next", "Qwen3Next"
    )
