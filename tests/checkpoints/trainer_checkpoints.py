"""Checkpoints as MTP trainers save them, built from a synthetic release's MTP tensors.

The renames are written out here from each trainer's own code (speculators'
``convert/mtp/converter.py`` tables and expert fusion, SpecForge PR #667's
``Qwen3_5MTPDraftModel`` names), independently of fastmtp_export's adapters.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..conftest import source_tensors

SPECULATORS_NAMES = {  # release -> speculators (MTP_EXACT_REMAP, MTP_PREFIX_REMAP)
    "mtp.fc.weight": "mtp_layers.0.input_proj.weight",
    "mtp.norm.weight": "mtp_layers.0.final_layernorm.weight",
}
SPECULATORS_PREFIXES = (
    ("mtp.pre_fc_norm_hidden.", "mtp_layers.0.hidden_layernorm."),
    ("mtp.pre_fc_norm_embedding.", "mtp_layers.0.token_layernorm."),
    ("mtp.layers.0.", "mtp_layers.0."),
)
_EXPERT = re.compile(r"^mtp\.layers\.0\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")


def _speculators_name(name: str) -> str:
    if name in SPECULATORS_NAMES:
        return SPECULATORS_NAMES[name]
    for src, dst in SPECULATORS_PREFIXES:
        if name.startswith(src):
            return dst + name[len(src) :]
    raise KeyError(name)


def write_speculators(out: Path, release: Path, text_config: dict[str, Any]) -> Path:
    """What speculators saves after fine-tuning ``release``'s MTP head."""
    tensors = source_tensors(release, lambda n: n.startswith("mtp."))
    experts: dict[int, dict[str, torch.Tensor]] = {}
    saved: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if m := _EXPERT.match(name):
            experts.setdefault(int(m.group(1)), {})[m.group(2)] = t
        else:
            saved[_speculators_name(name)] = t
    if experts:  # _fuse_moe_experts: gate rows then up rows per expert
        order = sorted(experts)
        saved["mtp_layers.0.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([experts[e]["gate"], experts[e]["up"]]) for e in order]
        )  # [E, 2MI, H]
        saved["mtp_layers.0.mlp.experts.down_proj"] = torch.stack(
            [experts[e]["down"] for e in order]
        )  # [E, H, MI]
    out.mkdir(parents=True)
    save_file(saved, out / "model.safetensors", metadata={"format": "pt"})
    config = {
        "architectures": ["MTPDraftModel"],
        "speculators_model_type": "mtp",
        "speculators_version": "0.9.0",
        "speculators_config": {
            "algorithm": "mtp",
            "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": 3}],
            "default_proposal_method": "greedy",
            "verifier": {"name_or_path": "Qwen/base", "architectures": ["BaseArch"]},
        },
        "transformer_layer_config": text_config,
        "num_nextn_predict_layers": 1,
        "torch_dtype": "bfloat16",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def write_specforge(out: Path, release: Path) -> Path:
    """What SpecForge's MTP trainer (PR #667) exports: release names, its own config."""
    saved = dict(source_tensors(release, lambda n: n.startswith("mtp.")))
    hidden = next(t for n, t in saved.items() if n == "mtp.fc.weight").shape[0]
    saved["embed_tokens.weight"] = torch.zeros(256, hidden, dtype=torch.bfloat16)  # frozen copy
    out.mkdir(parents=True)
    save_file(saved, out / "model.safetensors", metadata={"format": "pt"})
    config = {
        "architectures": ["Qwen3_5MTPDraftModel"],
        "auto_map": {"AutoModel": "mtp.Qwen3_5MTPDraftModel"},
        "model_type": "qwen3",
        "num_hidden_layers": 1,
        "mtp_config": {"share_lm_head": True},
        "hidden_size": hidden,
        "tie_word_embeddings": True,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
