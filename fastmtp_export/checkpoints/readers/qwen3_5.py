"""Qwen3.5 / Qwen3.6 (``Qwen3_5[Moe]ForConditionalGeneration``): ``mtp.*`` as in Qwen3-Next.

SGLang 0.5.23 serves the head with ``Qwen3_5ForCausalLMMTP``
(``sglang/srt/models/qwen3_5_mtp.py``) for the dense and the MoE models alike; the
language settings sit under ``text_config``. The MoE release stores each MTP layer's
experts fused (``experts.gate_up_proj`` [E, 2MI, H], gate rows first, and
``experts.down_proj`` [E, H, MI], no ``.weight``); other exports store them per expert.
SGLang reads both, so both are copied as they are.

Tied models (``tie_word_embeddings``, the small dense ones) need one config change: the
MTP class then makes its head *the embedding* and ignores the head SGLang hands it, so
a reduced draft vocabulary would be dropped while SGLang still maps draft indices
through the reduced ids (wrong tokens). The draft config unties it: the class then
builds its own head, which receives the target's head sliced to the draft vocabulary.
For a tied target that head is the embedding itself, so the values are the same.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ..checkpoint import language_config
from ..contract import DraftContract
from . import register_reader
from .base import ConfigChanges
from .layouts import dense_mlp
from .qwen3_next import (
    QWEN_ATTENTION,
    QWEN_FUSION,
    QWEN_LEGEND,
    QWEN_MOE,
    QwenMTPReader,
    qwen_dims,
)

_L = "mtp.layers.0."
_FUSED_MOE = {
    **{k: v for k, v in QWEN_MOE.items() if ".experts.{e}." not in k},
    _L + "mlp.experts.gate_up_proj": ("E", "2MI", "H"),
    _L + "mlp.experts.down_proj": ("E", "H", "MI"),
}


def _contract(variant: str, mlp: dict[str, tuple[str, ...]], vllm: str) -> DraftContract:
    return DraftContract(
        family="qwen3_5",
        variant=variant,
        architecture="Qwen3_5ForConditionalGeneration",
        sglang_class="Qwen3_5ForCausalLMMTP",
        tensors={**QWEN_FUSION, **QWEN_ATTENTION, **mlp},
        dims=qwen_dims,
        legend=QWEN_LEGEND,
        vllm_class=vllm,
    )


QWEN3_5_DENSE = _contract("dense", dense_mlp(_L + "mlp."), "Qwen3_5MTP")
QWEN3_5_MOE = _contract("MoE, experts per expert", QWEN_MOE, "Qwen3_5MoeMTP")
QWEN3_5_MOE_FUSED = _contract("MoE, experts fused", _FUSED_MOE, "Qwen3_5MoeMTP")

_TIE = "tie_word_embeddings"


@register_reader
class Qwen35Reader(QwenMTPReader):
    family = "qwen3_5"
    architectures = (
        "Qwen3_5ForConditionalGeneration",
        "Qwen3_5MoeForConditionalGeneration",
        "Qwen3_5ForCausalLM",
        "Qwen3_5MoeForCausalLM",
    )
    contract = QWEN3_5_DENSE
    TRUNK_EMBED = "model.language_model.embed_tokens.weight"
    TRUNK_NORM = "model.language_model.norm.weight"

    def contract_for(
        self, config: Mapping[str, Any], names: Collection[str] | None = None
    ) -> DraftContract:
        if "num_experts" not in language_config(dict(config)):
            return QWEN3_5_DENSE
        fused = names is not None and _L + "mlp.experts.gate_up_proj" in names
        return QWEN3_5_MOE_FUSED if fused else QWEN3_5_MOE

    def contracts(self) -> tuple[DraftContract, ...]:
        return (QWEN3_5_DENSE, QWEN3_5_MOE, QWEN3_5_MOE_FUSED)

    def draft_config(
        self, config: Mapping[str, Any], dtype: str | None
    ) -> tuple[dict[str, Any], ConfigChanges]:
        cfg, changes = super().draft_config(config, dtype)
        changed = dict(changes.set)
        if cfg.get(_TIE):
            cfg[_TIE] = changed[_TIE] = False
        inner = cfg.get("text_config")
        if isinstance(inner, Mapping) and inner.get(_TIE):
            cfg["text_config"] = {**inner, _TIE: False}
            changed[f"text_config.{_TIE}"] = False
        return cfg, ConfigChanges(changes.removed, dict(sorted(changed.items())))

    def draft_config_problems(self, config: Mapping[str, Any]) -> list[str]:
        problems = super().draft_config_problems(config)
        if config.get(_TIE) or language_config(dict(config)).get(_TIE):
            problems.append(
                f"config.json sets {_TIE}: SGLang's Qwen3_5ForCausalLMMTP would ignore the "
                "reduced draft head; re-export the artifact"
            )
        return problems
