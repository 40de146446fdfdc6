"""GLM-4.5/4.6 and 4.5-Air (SGLang ``Glm4MoeForCausalLMNextN``): NextN fusion, GLM's
attention (biases, partial rotary, optional q/k norms), the MoE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .registry import register_head
from .spec import HeadSpec, nextn_spec


@register_head("glm4_moe")
def glm4_moe(config: Mapping[str, Any]) -> HeadSpec:
    return nextn_spec("glm4_moe", "transformers.models.glm4_moe.modeling_glm4_moe", "Glm4Moe")
