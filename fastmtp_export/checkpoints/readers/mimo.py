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

from ..contract import MIMO_CONTRACT
from . import register_reader
from .base import ConfigChanges, MTPReader

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

    def needs_remote_code(self, config: Mapping[str, Any]) -> bool:
        return config.get("model_type") == "mimo"

    def target_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        # the trunk is Qwen2; from_pretrained skips the model.mtp_layers.* tensors
        cfg, _ = self.draft_config(config, None)
        cfg["architectures"] = ["Qwen2ForCausalLM"]
        return cfg
