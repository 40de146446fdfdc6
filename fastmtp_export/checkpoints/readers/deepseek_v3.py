"""DeepSeek-V3 / R1 (``DeepseekV3ForCausalLM``): the NextN layer ``model.layers.{L}``.

SGLang 0.5.23 serves it with ``DeepseekV3ForCausalLMNextN``
(``sglang/srt/models/deepseek_nextn.py``): multi-head latent attention with a low-rank
query, and a mixture of experts (per expert, a shared expert, a sigmoid router with a
score-correction bias), whatever ``first_k_dense_replace`` says.

The official release is block FP8 (:mod:`..fp8`): every attention and expert projection
of the NextN layer is ``float8_e4m3fn`` with a ``weight_scale_inv`` per 128x128 block,
while ``eh_proj``, the router ``gate``, its bias and the norms are bf16. ``--dtype bf16``
dequantizes it; ``--dtype keep`` copies the fp8 weights and their scales and keeps the
``quantization_config``, which makes SGLang build exactly those projections
(:data:`DEEPSEEK_FP8_WEIGHTS`) as block-FP8 layers. A bf16 copy (DeepSeek's
``fp8_cast_bf16.py``) exports as it is; its stale ``quantization_config`` is left out.
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


_ATTENTION = mla_attention(_L)
_MOE = per_expert_moe(_L + "mlp.", "shared_experts.", correction_bias=True)
#: what ``DeepseekV2DecoderLayer`` builds with the quantization config: every projection
#: of the attention and of the experts (not the norms, the router gate or its bias; the
#: NextN ``eh_proj`` is a plain ``nn.Linear``)
DEEPSEEK_FP8_WEIGHTS = frozenset(
    t
    for t in {**_ATTENTION, **_MOE}
    if not t.endswith(("norm.weight", "mlp.gate.weight", "e_score_correction_bias"))
)

DEEPSEEK_V3_CONTRACT = DraftContract(
    family="deepseek_v3",
    architecture="DeepseekV3ForCausalLMNextN",
    sglang_class="DeepseekV3ForCausalLMNextN",
    tensors={
        **nextn_fusion(_L),
        _L + "shared_head.norm.weight": ("H",),
        **layer_norms(_L),
        **_ATTENTION,
        **_MOE,
    },
    dims=deepseek_dims,
    legend=f"{NEXTN_LEGEND}, {MLA_LEGEND}.",
    fp8_weights=DEEPSEEK_FP8_WEIGHTS,
    # the experts' gate/up rows (fused per expert), the shared experts' merged gate/up,
    # and q_a_proj, whose scale rows are concatenated with kv_a_proj_with_mqa's
    fp8_aligned=("MI", "SI", "QL"),
)


@register_reader
class DeepSeekV3Reader(NextNReader):
    family = "deepseek_v3"
    architectures = ("DeepseekV3ForCausalLM",)
    contract = DEEPSEEK_V3_CONTRACT
    VLLM_CLASS = "DeepSeekMTP"
