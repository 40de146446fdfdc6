"""Qwen3-Next (SGLang ``Qwen3NextForCausalLMMTP``): ``fc`` over Gemma-style (1 + w)
norms, a gated full-attention layer with the sparse MoE, ``mtp.norm``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .registry import register_head
from .spec import HeadSpec


@register_head("qwen3_next")
def qwen3_next(config: Mapping[str, Any]) -> HeadSpec:
    return HeadSpec(
        family="qwen3_next",
        module="transformers.models.qwen3_next.modeling_qwen3_next",
        prefix="Qwen3Next",
        embed_norm="mtp.pre_fc_norm_embedding.weight",
        hidden_norm="mtp.pre_fc_norm_hidden.weight",
        proj="mtp.fc.weight",
        final_norm="mtp.norm.weight",
        layer="mtp.layers.0.",
    )
