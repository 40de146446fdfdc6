"""Qwen3-Next (``Qwen3NextForCausalLM``): ``mtp.{fc,pre_fc_norm_*,layers.0.*,norm}``.

SGLang 0.5.23 serves the head with ``Qwen3NextForCausalLMMTP``
(``sglang/srt/models/qwen3_next_mtp.py``). Its loader (``Qwen3NextForCausalLM.load_weights``
with ``is_mtp=True``) keeps only names containing ``mtp`` and renames them itself, so
the draft holds the release's ``mtp.*`` tensors under their own names and the release's
``config.json`` unchanged: ``ModelConfig`` turns the architecture into the MTP class and
sets ``num_nextn_predict_layers = 1`` when it loads a draft. The MTP layer is full
attention (gated: ``q_proj`` holds a query and a gate per head) with a mixture of
experts stored per expert; the embedding and head come from the target.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..checkpoint import language_config
from ..contract import DraftContract, int_field
from . import register_reader
from .base import ReleaseConfigReader
from .layouts import gqa_attention, layer_norms, per_expert_moe

_L = "mtp.layers.0."

#: the fusion in front of every Qwen MTP layer; note the input order differs from
#: MiMo's: ``fc(cat(norm_embedding(embed), norm_hidden(hidden)))``.
QWEN_FUSION: dict[str, tuple[str, ...]] = {
    "mtp.fc.weight": ("H", "2H"),
    "mtp.pre_fc_norm_embedding.weight": ("H",),
    "mtp.pre_fc_norm_hidden.weight": ("H",),
    "mtp.norm.weight": ("H",),
}

QWEN_LEGEND = (
    "H = hidden_size, Q = num_attention_heads x head_dim, QG = 2Q (query and gate, "
    "attn_output_gate), KV = num_key_value_heads x head_dim, D = head_dim, "
    "E = num_experts, MI = moe_intermediate_size, SI = shared_expert_intermediate_size, "
    "I = intermediate_size (dense)."
)


def qwen_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """Shape symbols of a Qwen3-Next / Qwen3.5 MTP layer."""
    c = language_config(dict(config))
    hidden = int_field(c, "hidden_size")
    heads = int_field(c, "num_attention_heads")
    head_dim = int_field(c, "head_dim", hidden // heads)
    q = heads * head_dim
    dims = {
        "H": hidden,
        "2H": 2 * hidden,
        "Q": q,
        "QG": 2 * q if c.get("attn_output_gate", True) else q,
        "KV": int_field(c, "num_key_value_heads", heads) * head_dim,
        "D": head_dim,
    }
    if "num_experts" in c:
        dims |= {
            "E": int_field(c, "num_experts"),
            "MI": int_field(c, "moe_intermediate_size"),
            "SI": int_field(c, "shared_expert_intermediate_size"),
            "2MI": 2 * int_field(c, "moe_intermediate_size"),
        }
    if "intermediate_size" in c:
        dims["I"] = int_field(c, "intermediate_size")
    return dims


#: the MoE layer with one tensor per expert, a shared expert and its sigmoid gate.
QWEN_MOE: dict[str, tuple[str, ...]] = {
    **per_expert_moe(_L + "mlp.", "shared_expert."),
    _L + "mlp.shared_expert_gate.weight": ("1", "H"),
}
QWEN_ATTENTION = {**layer_norms(_L), **gqa_attention(_L, qk_norm=True)}

QWEN3_NEXT_CONTRACT = DraftContract(
    family="qwen3_next",
    architecture="Qwen3NextForCausalLM",
    sglang_class="Qwen3NextForCausalLMMTP",
    vllm_class="Qwen3NextMTP",
    tensors={**QWEN_FUSION, **QWEN_ATTENTION, **QWEN_MOE},
    dims=qwen_dims,
    legend=QWEN_LEGEND,
)


class QwenMTPReader(ReleaseConfigReader):
    """Shared by the Qwen MTP families: names and config pass through unchanged."""

    LAYER_RE = re.compile(r"^mtp\.layers\.(\d+)\.")
    PREFIX_REMAP = (
        ("mtp.layers.{layer}.", "mtp.layers.0."),
        ("mtp.fc.", "mtp.fc."),
        ("mtp.pre_fc_norm_embedding.", "mtp.pre_fc_norm_embedding."),
        ("mtp.pre_fc_norm_hidden.", "mtp.pre_fc_norm_hidden."),
        ("mtp.norm.", "mtp.norm."),
    )
    MARKER = "mtp.*"


@register_reader
class Qwen3NextReader(QwenMTPReader):
    family = "qwen3_next"
    architectures = ("Qwen3NextForCausalLM",)
    contract = QWEN3_NEXT_CONTRACT
