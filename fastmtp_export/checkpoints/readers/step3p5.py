"""Step-3.5 (``Step3p5ForCausalLM``): MTP layers ``model.layers.[L, L+k)``, L = num_hidden_layers.

SGLang 0.5.23 serves them with ``Step3p5MTP`` (``sglang/srt/models/step3p5_mtp.py``) under
**multi-layer EAGLE** (forced for Step-3.5 targets): draft step i loads layer ``L + i``.
Unlike the other families, the class keeps its *own* embedding and head:
``set_embed_and_head`` is a no-op and ``load_weights`` refuses a checkpoint without
``model.embed_tokens.weight`` and each layer's ``shared_head.output`` (full vocabulary).
The draft therefore holds those too, every MTP layer under its release name, and the
release's config (the class builds every layer as layer L, so ``layer_types[L]`` sizes
the attention of all of them). No token maps: SGLang drafts over the full vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from ..contract import DraftContract, int_field
from . import register_reader
from .base import ReleaseConfigReader
from .layouts import dense_mlp, layer_norms, nextn_fusion

_L = "model.layers.{layer}."


def step3p5_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """Shape symbols of a Step-3.5 MTP layer (attention sized by layer L's type)."""
    hidden = int_field(config, "hidden_size")
    first = int_field(config, "num_hidden_layers")
    types = config.get("layer_types") or []
    sliding = first < len(types) and types[first] == "sliding_attention"
    other = config.get("attention_other_setting")
    attn: Mapping[str, Any] = other if sliding and isinstance(other, Mapping) else config
    heads = int_field(attn, "num_attention_heads")
    groups = int_field(attn, "num_attention_groups")
    head_dim = int_field(attn, "head_dim", int_field(config, "head_dim"))
    return {
        "H": hidden,
        "2H": 2 * hidden,
        "V": int_field(config, "vocab_size"),
        "Q": heads * head_dim,
        "KV": groups * head_dim,
        "D": head_dim,
        "NH": heads,
        "I": int_field(config, "intermediate_size"),
    }


def _layers(config: Mapping[str, Any]) -> range:
    first = int_field(config, "num_hidden_layers")
    return range(first, first + int_field(config, "num_nextn_predict_layers"))


def _contract(gate: bool) -> DraftContract:
    tensors: dict[str, tuple[str, ...]] = {
        "model.embed_tokens.weight": ("V", "H"),
        **nextn_fusion(_L),
        _L + "shared_head.norm.weight": ("H",),
        _L + "shared_head.output.weight": ("V", "H"),
        **layer_norms(_L),
        _L + "self_attn.q_proj.weight": ("Q", "H"),
        _L + "self_attn.k_proj.weight": ("KV", "H"),
        _L + "self_attn.v_proj.weight": ("KV", "H"),
        _L + "self_attn.o_proj.weight": ("H", "Q"),
        _L + "self_attn.q_norm.weight": ("D",),
        _L + "self_attn.k_norm.weight": ("D",),
        **dense_mlp(_L + "mlp."),
    }
    if gate:
        tensors[_L + "self_attn.g_proj.weight"] = ("NH", "H")
    return DraftContract(
        family="step3p5",
        variant="head-wise attention gate" if gate else "no attention gate",
        architecture="Step3p5ForCausalLM",
        sglang_class="Step3p5MTP",
        vllm_class="Step3p5MTP",
        tensors=tensors,
        dims=step3p5_dims,
        legend=(
            "One set per MTP layer ({layer} = L .. L+num_nextn_predict_layers-1, L = "
            "num_hidden_layers). H = hidden_size, V = vocab_size, Q/KV = heads/groups x "
            "head_dim of layer L's attention type (attention_other_setting when sliding), "
            "D = head_dim, NH = heads, I = intermediate_size."
        ),
        layers=_layers,
    )


STEP3P5_GATED = _contract(True)
STEP3P5_PLAIN = _contract(False)


@register_reader
class Step3p5Reader(ReleaseConfigReader):
    family = "step3p5"
    architectures = ("Step3p5ForCausalLM",)
    contract = STEP3P5_GATED
    LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")
    PREFIX_REMAP = ((_L, _L), ("model.embed_tokens.", "model.embed_tokens."))
    MARKER = "model.layers.{num_hidden_layers}.* (MTP)"
    ALL_LAYERS = True
    NO_MAPS = (
        "SGLang 0.5.23 serves Step-3.5 heads with multi-layer EAGLE, which ignores token "
        "maps, and its Step3p5MTP drafts with its own full-vocabulary head"
    )

    def layer_offset(self, config: Mapping[str, Any]) -> int:
        return int_field(config, "num_hidden_layers")

    def contract_for(
        self, config: Mapping[str, Any], names: Collection[str] | None = None
    ) -> DraftContract:
        return STEP3P5_GATED if config.get("use_head_wise_attn_gate") else STEP3P5_PLAIN

    def contracts(self) -> tuple[DraftContract, ...]:
        return (STEP3P5_GATED, STEP3P5_PLAIN)
