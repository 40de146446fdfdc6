"""speculators (vllm-project/speculators) MTP checkpoints: ``mtp_layers.0.*``, fused experts.

speculators fine-tunes the native MTP head of Qwen3-Next and Qwen3.5 (FastMTP-style) and
saves it MiMo-style (``src/speculators/convert/mtp/converter.py``, ``MTP_EXACT_REMAP`` /
``MTP_PREFIX_REMAP``, inverted by its ``stitch_mtp``):

    mtp_layers.0.input_proj       <- mtp.fc         (embedding first, as Qwen's fc)
    mtp_layers.0.final_layernorm  <- mtp.norm
    mtp_layers.0.hidden_layernorm <- mtp.pre_fc_norm_hidden
    mtp_layers.0.token_layernorm  <- mtp.pre_fc_norm_embedding
    mtp_layers.0.<rest>           <- mtp.layers.0.<rest>

with MoE experts fused (``experts.gate_up_proj`` [E, 2MI, H], gate rows first, and
``experts.down_proj`` [E, H, MI]). Each expert's rows are contiguous, so the view maps
``experts.{e}.gate_proj.weight`` etc. onto byte ranges of the fused tensors (SGLang's
Qwen3-Next loader reads per-expert names only). The config is speculators' own; the
verifier's text config (``transformer_layer_config``) becomes the release config.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...errors import SourceError
from ..checkpoint import SourceCheckpoint
from ..safetensors_io import TensorInfo

EXACT = {
    "mtp_layers.0.input_proj.weight": "mtp.fc.weight",
    "mtp_layers.0.final_layernorm.weight": "mtp.norm.weight",
}
PREFIX = (
    ("mtp_layers.0.hidden_layernorm.", "mtp.pre_fc_norm_hidden."),
    ("mtp_layers.0.token_layernorm.", "mtp.pre_fc_norm_embedding."),
    ("mtp_layers.0.", "mtp.layers.0."),
)
#: the verifier's text model type -> the text-only architecture SGLang maps to its MTP class
ARCHITECTURES = {
    "qwen3_next": "Qwen3NextForCausalLM",
    "qwen3_5_text": "Qwen3_5ForCausalLM",
    "qwen3_5_moe_text": "Qwen3_5MoeForCausalLM",
}
_FUSED = "mtp_layers.0.mlp.experts."


def _release_name(name: str) -> str | None:
    if name in EXACT:
        return EXACT[name]
    for src, dst in PREFIX:
        if name.startswith(src):
            return dst + name[len(src) :]
    return None  # embed_tokens / lm_head / verifier_lm_head: the target's


def _expert_views(gate_up: TensorInfo, down: TensorInfo) -> dict[str, TensorInfo]:
    """Per-expert release names over the fused tensors' contiguous rows."""
    experts, rows2, hidden = gate_up.shape  # [E, 2MI, H]
    block = gate_up.nbytes // (2 * experts)  # one [MI, H] matrix
    d_block = down.nbytes // experts  # one [H, MI] matrix
    half = (rows2 // 2, hidden)
    out = {}
    for e in range(experts):
        p = f"mtp.layers.0.mlp.experts.{e}."
        for name, info, offset, nbytes, shape in (
            ("gate_proj.weight", gate_up, 2 * e * block, block, half),
            ("up_proj.weight", gate_up, (2 * e + 1) * block, block, half),
            ("down_proj.weight", down, e * d_block, d_block, down.shape[1:]),
        ):
            out[p + name] = replace(
                info, name=p + name, begin=info.begin + offset, nbytes=nbytes, shape=shape
            )
    return out


def adapt(ckpt: SourceCheckpoint, base_config: dict[str, Any] | None) -> SourceCheckpoint | None:
    """The speculators checkpoint ``ckpt`` as a Qwen3-Next / Qwen3.5 release, or ``None``.

    Raises:
        SourceError: a speculators MTP checkpoint for a model SGLang has no MTP class for,
            or without its verifier config.
    """
    config = ckpt.config
    if config.get("speculators_model_type") != "mtp":
        return None
    layer_config = config.get("transformer_layer_config")
    if not isinstance(layer_config, dict):
        raise SourceError(
            f"{ckpt.path} is a speculators MTP checkpoint without transformer_layer_config; "
            "re-save it with speculators, which records the verifier's config there"
        )
    model_type = layer_config.get("model_type")
    arch = ARCHITECTURES.get(str(model_type))
    if arch is None:
        raise SourceError(
            f"{ckpt.path} is a speculators MTP checkpoint for {model_type}, which has no SGLang "
            f"MTP draft class; supported verifiers: {', '.join(sorted(ARCHITECTURES))}"
        )
    release: dict[str, Any] = base_config or {
        **layer_config,
        "architectures": [arch],
        "num_nextn_predict_layers": 1,
    }
    views: dict[str, TensorInfo] = {}
    weight_map: dict[str, str] = {}
    fused: dict[str, TensorInfo] = {}
    for stored, shard in ckpt.weight_map.items():
        if stored.startswith(_FUSED) and stored[len(_FUSED) :] in ("gate_up_proj", "down_proj"):
            fused[stored[len(_FUSED) :]] = ckpt.tensor(stored)
            continue
        name = _release_name(stored)
        if name is not None:
            views[name] = replace(ckpt.tensor(stored), name=name)
            weight_map[name] = shard
    if fused:
        if set(fused) != {"gate_up_proj", "down_proj"}:
            raise SourceError(
                f"{ckpt.path} has only {', '.join(fused)} of the fused MoE experts; "
                "the checkpoint is incomplete"
            )
        per_expert = _expert_views(fused["gate_up_proj"], fused["down_proj"])
        views.update(per_expert)
        for name in per_expert:
            src = _FUSED + ("down_proj" if name.endswith("down_proj.weight") else "gate_up_proj")
            weight_map[name] = ckpt.weight_map[src]
    return replace(ckpt, config=release, weight_map=weight_map, views=views, trainer="speculators")
