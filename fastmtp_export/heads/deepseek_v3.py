"""DeepSeek-V3/R1 (SGLang ``DeepseekV3ForCausalLMNextN``): NextN fusion, MLA, the MoE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .registry import register_head
from .spec import HeadSpec

_L = "model.layers.0."


@register_head("deepseek_v3")
def deepseek_v3(config: Mapping[str, Any]) -> HeadSpec:
    return HeadSpec(
        family="deepseek_v3",
        module="transformers.models.deepseek_v3.modeling_deepseek_v3",
        prefix="DeepseekV3",
        embed_norm=_L + "enorm.weight",
        hidden_norm=_L + "hnorm.weight",
        proj=_L + "eh_proj.weight",
        final_norm=_L + "shared_head.norm.weight",
        layer=_L,
    )
