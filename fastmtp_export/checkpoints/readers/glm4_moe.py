"""GLM-4.5 / 4.6 / 4.5-Air (``Glm4MoeForCausalLM``): the NextN layer ``model.layers.{L}``.

SGLang 0.5.23 serves it with ``Glm4MoeForCausalLMNextN``
(``sglang/srt/models/glm4_moe_nextn.py``): grouped-query attention with q/k/v biases
(``attention_bias``) and per-head q/k norms (``use_qk_norm``: GLM-4.5 and 4.6, not
4.5-Air), then the same mixture of experts as DeepSeek-V3. GLM-4.6 ships its NextN
layer without the embedding/head copies; both layouts export the same draft.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from typing import Any

from ..contract import DraftContract, int_field
from . import register_reader
from .layouts import gqa_attention, layer_norms, nextn_fusion, per_expert_moe
from .nextn import DRAFT_LAYER, NEXTN_LEGEND, NextNReader, moe_dims

_L = DRAFT_LAYER


def glm_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """Shape symbols of a GLM-4.5 NextN layer."""
    heads = int_field(config, "num_attention_heads")
    head_dim = int_field(config, "head_dim", int_field(config, "hidden_size") // heads)
    q = heads * head_dim
    kv = int_field(config, "num_key_value_heads", heads) * head_dim
    return moe_dims(config) | {"Q": q, "QG": q, "KV": kv, "D": head_dim}


@functools.cache
def _contract(qk_norm: bool, bias: bool = True) -> DraftContract:
    variant = "use_qk_norm" if qk_norm else "no qk norm (4.5-Air)"
    return DraftContract(
        family="glm4_moe",
        variant=variant if bias else variant + ", no attention_bias",
        architecture="Glm4MoeForCausalLMNextN",
        sglang_class="Glm4MoeForCausalLMNextN",
        tensors={
            **nextn_fusion(_L),
            _L + "shared_head.norm.weight": ("H",),
            **layer_norms(_L),
            **gqa_attention(_L, bias=bias, qk_norm=qk_norm),
            **per_expert_moe(_L + "mlp.", "shared_experts.", correction_bias=True),
        },
        dims=glm_dims,
        legend=NEXTN_LEGEND
        + ", Q = QG = num_attention_heads x head_dim, KV = num_key_value_heads x head_dim, "
        "D = head_dim.",
    )


GLM4_MOE_QK_NORM = _contract(True)
GLM4_MOE_AIR = _contract(False)


@register_reader
class Glm4MoeReader(NextNReader):
    family = "glm4_moe"
    architectures = ("Glm4MoeForCausalLM",)
    contract = GLM4_MOE_QK_NORM
    VLLM_CLASS = "Glm4MoeMTP"

    def sglang_contract(
        self, config: Mapping[str, Any], names: Collection[str] | None = None
    ) -> DraftContract:
        return _contract(bool(config.get("use_qk_norm")), bool(config.get("attention_bias", True)))

    def sglang_contracts(self) -> tuple[DraftContract, ...]:
        return (GLM4_MOE_QK_NORM, GLM4_MOE_AIR)
