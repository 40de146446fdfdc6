"""MiMo-7B (``MiMoForCausalLM``) and the FastMTP release: ``model.mtp_layers.<i>.*``.

Config decision (see docs/format.md): the draft's ``config.json`` says
``model_type: "qwen2"`` with ``architectures: ["MiMoForCausalLM"]``. ``"mimo"`` is not a
transformers model type, so keeping it would force ``--trust-remote-code`` and shipping
``configuration_mimo.py``. MiMo's config class only adds ``num_nextn_predict_layers``
to ``Qwen2Config``, and extra keys become config attributes, so the qwen2 spelling loads
the same values with no remote code (verified with SGLang 0.5.23, reference §14.3);
SGLang still picks ``MiMoMTP`` from the architecture. The original ``model_type`` is
recorded in the manifest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..contract import DraftContract
from . import register_reader
from .base import ConfigChanges, MTPReader

_MIMO = "model.mtp_layers.0."
#: SGLang's ``MiMoMTP``: the fusion (two norms, ``input_proj``), one Qwen2 decoder layer
#: (q/k/v biases) and a final norm; the embedding and head come from the target.
MIMO_CONTRACT = DraftContract(
    family="mimo",
    architecture="MiMoForCausalLM",
    sglang_class="MiMoMTP",
    vllm_class="MiMoMTP",
    tensors={
        _MIMO + "token_layernorm.weight": ("H",),
        _MIMO + "hidden_layernorm.weight": ("H",),
        # concat order is [hidden, embed]: input_proj(cat(hidden_ln(h), token_ln(e)))
        _MIMO + "input_proj.weight": ("H", "2H"),
        _MIMO + "input_layernorm.weight": ("H",),
        _MIMO + "self_attn.q_proj.weight": ("Q", "H"),
        _MIMO + "self_attn.q_proj.bias": ("Q",),
        _MIMO + "self_attn.k_proj.weight": ("KV", "H"),
        _MIMO + "self_attn.k_proj.bias": ("KV",),
        _MIMO + "self_attn.v_proj.weight": ("KV", "H"),
        _MIMO + "self_attn.v_proj.bias": ("KV",),
        _MIMO + "self_attn.o_proj.weight": ("H", "Q"),
        _MIMO + "post_attention_layernorm.weight": ("H",),
        _MIMO + "mlp.gate_proj.weight": ("I", "H"),
        _MIMO + "mlp.up_proj.weight": ("I", "H"),
        _MIMO + "mlp.down_proj.weight": ("H", "I"),
        _MIMO + "final_layernorm.weight": ("H",),
    },
)

#: keys FastMTP's training config adds; meaningless (or harmful) at serve time.
TRAINING_ONLY_KEYS: tuple[str, ...] = (
    "mtp_loss_step_weights",
    "mtp_loss_weight",
    "ntp_loss_weight",
    "num_speculative_steps",
)


@register_reader
class MiMoReader(MTPReader):
    """Reads one ``model.mtp_layers.<i>`` layer; the draft always names it layer 0."""

    family = "mimo"
    architectures = ("MiMoForCausalLM",)
    contract = MIMO_CONTRACT
    LAYER_RE = re.compile(r"^model\.mtp_layers\.(\d+)\.")
    PREFIX_REMAP = (("model.mtp_layers.{layer}.", "model.mtp_layers.0."),)
    MARKER = "model.mtp_layers.*"

    def draft_config(
        self, config: Mapping[str, Any], dtype: str | None
    ) -> tuple[dict[str, Any], ConfigChanges]:
        cfg = dict(config)
        removed = [k for k in TRAINING_ONLY_KEYS if k in cfg]
        if "auto_map" in cfg:
            removed.append("auto_map")  # remote code is not needed with model_type qwen2
        if "tokenizer_class" in cfg and not isinstance(cfg["tokenizer_class"], str):
            removed.append("tokenizer_class")  # FastMTP writes a list, which transformers rejects
        for key in removed:
            del cfg[key]
        wanted: dict[str, Any] = {
            "architectures": [self.contract.architecture],
            "model_type": "qwen2",
            # SGLang sizes the draft KV cache from this; unset, it allocates all trunk layers.
            "num_nextn_predict_layers": 1,
        }
        if dtype is not None:
            wanted["torch_dtype"] = dtype
            if "dtype" in cfg:  # transformers >= 5 spelling
                wanted["dtype"] = dtype
        changed = {k: v for k, v in wanted.items() if cfg.get(k) != v}
        cfg.update(wanted)
        return cfg, ConfigChanges(tuple(sorted(removed)), dict(sorted(changed.items())))

    def draft_config_problems(self, config: Mapping[str, Any]) -> list[str]:
        problems = super().draft_config_problems(config)
        if config.get("num_nextn_predict_layers") != 1:
            problems.append(
                "config.json num_nextn_predict_layers is "
                f"{config.get('num_nextn_predict_layers')!r}, must be 1"
            )
        return problems

    def needs_remote_code(self, config: Mapping[str, Any]) -> bool:
        return config.get("model_type") == "mimo"

    def target_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        # the trunk is Qwen2; from_pretrained skips the model.mtp_layers.* tensors
        cfg, _ = self.draft_config(config, None)
        cfg["architectures"] = ["Qwen2ForCausalLM"]
        return cfg
