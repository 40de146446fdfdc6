"""GLM-4.5/4.6 and 4.5-Air (SGLang ``Glm4MoeForCausalLMNextN``): NextN fusion, GLM's
attention (biases, partial rotary, optional q/k norms), the MoE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .registry import register_head
from .spec import HeadSpec

_L = "model.layers.0."


@register_head("glm4_moe")
def glm4_moe(config: Mapping[str, Any]) -> HeadSpec:
    return HeadSpec(
        family="glm4_moe",
        module="transformers.models.glm4_moe.modeling_glm4_moe",
        prefix="Glm4Moe",
        embed_norm=_L + "enorm.weight",
        hidden_norm=_L + "hnorm.weight",
        proj=_L + "eh_proj.weight",
        final_norm=_L + "shared_head.norm.weight",
        layer=_L,
    )
