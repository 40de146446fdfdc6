"""DeepSeek-V3/R1 (SGLang ``DeepseekV3ForCausalLMNextN``): NextN fusion, MLA, the MoE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .registry import register_head
from .spec import HeadSpec, nextn_spec


@register_head("deepseek_v3")
def deepseek_v3(config: Mapping[str, Any]) -> HeadSpec:
    return nextn_spec(
        "deepseek_v3", "transformers.models.deepseek_v3.modeling_deepseek_v3", "DeepseekV3"
    )
