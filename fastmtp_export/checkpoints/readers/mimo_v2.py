"""MiMo-V2.x (``MiMoV2FlashForCausalLM``, ``MiMoV2ForCausalLM``): ``model.mtp.layers.N.*``.

SGLang 0.5.23 serves these heads with ``MiMoV2MTP`` (``sglang/srt/models/mimo_v2_nextn.py``)
and, for a MiMo-V2 target, always with **multi-layer EAGLE**
(``arg_groups/model_overrides/mimo_v2.py``): draft step i gets its own runner, whose
loader keeps ``model.mtp.layers.{i}.*`` only. The draft therefore holds every MTP layer
under the release's names (a draft with fewer layers than ``--speculative-num-steps``
leaves the later steps' weights uninitialised, silently). Each layer is a NextN fusion,
sliding-window attention sized by the ``swa_*`` keys (with a per-head sink bias when
``add_swa_attention_sink_bias``) and a dense MLP.

Multi-layer EAGLE's ``init_lm_head`` never reads ``--speculative-token-map``: SGLang
drafts these heads over the full vocabulary, so the artifact carries no token maps.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from ..contract import DraftContract, int_field
from . import register_reader
from .base import ReleaseConfigReader
from .layouts import dense_mlp, nextn_fusion

_L = "model.mtp.layers.{layer}."


def mimo_v2_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """Shape symbols of a MiMo-V2 MTP layer (its attention uses the sliding-window dims)."""
    hidden = int_field(config, "hidden_size")
    heads = int_field(config, "swa_num_attention_heads")
    kv_heads = int_field(config, "swa_num_key_value_heads")
    head_dim = int_field(config, "swa_head_dim")
    v_dim = int_field(config, "swa_v_head_dim", head_dim)
    return {
        "H": hidden,
        "2H": 2 * hidden,
        "SQ": heads * head_dim,
        "SK": kv_heads * head_dim,
        "SV": kv_heads * v_dim,
        "SO": heads * v_dim,
        "SH": heads,
        "I": int_field(config, "intermediate_size"),
    }


def _layers(config: Mapping[str, Any]) -> range:
    return range(int_field(config, "num_nextn_predict_layers"))


def _contract(sink: bool) -> DraftContract:
    tensors: dict[str, tuple[str, ...]] = {
        **nextn_fusion(_L),
        _L + "final_layernorm.weight": ("H",),
        # the release's name for the post-attention norm of its MTP layers (SGLang's
        # MiMoV2MTP maps it onto post_attention_layernorm; vLLM's MiMoV2MTP reads
        # this name only, and a draft saying post_attention_layernorm fails its loader)
        _L + "input_layernorm.weight": ("H",),
        _L + "pre_mlp_layernorm.weight": ("H",),
        _L + "self_attn.q_proj.weight": ("SQ", "H"),
        _L + "self_attn.k_proj.weight": ("SK", "H"),
        _L + "self_attn.v_proj.weight": ("SV", "H"),
        _L + "self_attn.o_proj.weight": ("H", "SO"),
        **dense_mlp(_L + "mlp."),
    }
    if sink:
        tensors[_L + "self_attn.attention_sink_bias"] = ("SH",)
    return DraftContract(
        family="mimo_v2",
        variant="with attention sink bias" if sink else "no attention sink bias",
        architecture="MiMoV2FlashForCausalLM",
        sglang_class="MiMoV2MTP",
        vllm_class="MiMoV2MTP",
        tensors=tensors,
        dims=mimo_v2_dims,
        legend=(
            "One set per MTP layer ({layer} = 0 .. num_nextn_predict_layers-1). H = "
            "hidden_size, SQ/SK = swa_num_attention_heads/swa_num_key_value_heads x "
            "swa_head_dim, SV/SO = swa_num_key_value_heads/swa_num_attention_heads x "
            "swa_v_head_dim, SH = swa_num_attention_heads, I = intermediate_size."
        ),
        layers=_layers,
    )


MIMO_V2_SINK = _contract(True)
MIMO_V2_PLAIN = _contract(False)


@register_reader
class MiMoV2Reader(ReleaseConfigReader):
    family = "mimo_v2"
    architectures = ("MiMoV2FlashForCausalLM", "MiMoV2ForCausalLM")
    contract = MIMO_V2_SINK
    LAYER_RE = re.compile(r"^model\.mtp\.layers\.(\d+)\.")
    PREFIX_REMAP = ((_L, _L),)
    MARKER = "model.mtp.layers.*"
    ALL_LAYERS = True
    NO_MAPS = (
        "SGLang 0.5.23 serves MiMo-V2 heads with multi-layer EAGLE, which ignores token "
        "maps (it always drafts over the full vocabulary)"
    )

    def contract_for(
        self, config: Mapping[str, Any], names: Collection[str] | None = None
    ) -> DraftContract:
        return MIMO_V2_SINK if config.get("add_swa_attention_sink_bias") else MIMO_V2_PLAIN

    def contracts(self) -> tuple[DraftContract, ...]:
        return (MIMO_V2_SINK, MIMO_V2_PLAIN)
