"""DeepSeek-V3 / R1 (``DeepseekV3ForCausalLM``): the NextN layer ``model.layers.{L}``.

SGLang 0.5.23 serves it with ``DeepseekV3ForCausalLMNextN``
(``sglang/srt/models/deepseek_nextn.py``): multi-head latent attention with a low-rank
query, and a mixture of experts (per expert, a shared expert, a sigmoid router with a
score-correction bias), whatever ``first_k_dense_replace`` says. The official release is
FP8, which export refuses (judged by the tensors): pass a bf16 copy, whose stale
``quantization_config`` the draft config leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..contract import DraftContract
from . import register_reader
from .layouts import MLA_LEGEND, layer_norms, mla_attention, mla_dims, nextn_fusion, per_expert_moe
from .nextn import DRAFT_LAYER, NEXTN_LEGEND, NextNReader, moe_dims

_L = DRAFT_LAYER


def deepseek_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """Shape symbols of a DeepSeek NextN layer (MLA attention plus the MoE)."""
    return moe_dims(config) | mla_dims(config)


DEEPSEEK_V3_CONTRACT = DraftContract(
    family="deepseek_v3",
    architecture="DeepseekV3ForCausalLMNextN",
    sglang_class="DeepseekV3ForCausalLMNextN",
    tensors={
        **nextn_fusion(_L),
        _L + "shared_head.norm.weight": ("H",),
        **layer_norms(_L),
        **mla_attention(_L),
        **per_expert_moe(_L + "mlp.", "shared_experts.", correction_bias=True),
    },
    dims=deepseek_dims,
    legend=f"{NEXTN_LEGEND}, {MLA_LEGEND}.",
)


@register_reader
class DeepSeekV3Reader(NextNReader):
    family = "deepseek_v3"
    architectures = ("DeepseekV3ForCausalLM",)
    contract = DEEPSEEK_V3_CONTRACT
