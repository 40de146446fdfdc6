"""SpecForge MTP checkpoints (``Qwen3_5MTPDraftModel``): the release's ``mtp.*`` names.

SpecForge's MTP trainer (sgl-project/SpecForge PR #667, Qwen3.5 dense) loads the release's
``mtp.*`` tensors one to one and saves them under the same names
(``specforge/export/to_hf.py``), plus a bare ``embed_tokens.weight`` and sometimes a
shared ``mtp.lm_head.weight`` (both the target's at serving time, so not exported);
older runs nest ``mtp.model.layers.*`` / ``mtp.model.norm``. Its ``config.json`` is the
draft's own (``model_type: qwen3``, no base model recorded), while SGLang needs the
base's hybrid Qwen3.5 config for the draft, so export asks for ``--base-config``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...errors import SourceError
from ..checkpoint import SourceCheckpoint

ARCHITECTURE = "Qwen3_5MTPDraftModel"
_LEGACY = (("mtp.model.layers.", "mtp.layers."), ("mtp.model.norm.", "mtp.norm."))


def _release_name(name: str) -> str | None:
    for src, dst in _LEGACY:
        if name.startswith(src):
            return dst + name[len(src) :]
    if name.startswith("mtp.") and not name.startswith("mtp.lm_head."):
        return name
    return None  # embed_tokens / lm_head: the target's


def adapt(ckpt: SourceCheckpoint, base_config: dict[str, Any] | None) -> SourceCheckpoint | None:
    """The SpecForge checkpoint ``ckpt`` as a Qwen3.5 release, or ``None``.

    Raises:
        SourceError: a SpecForge checkpoint without ``--base-config``, or one whose base
            config is not a Qwen3.5 model.
    """
    if ARCHITECTURE not in (ckpt.config.get("architectures") or []):
        return None
    if base_config is None:
        raise SourceError(
            f"{ckpt.path} is a SpecForge MTP checkpoint, which does not record its base "
            "model's config; pass --base-config BASE/config.json (the Qwen3.5 model it "
            "was trained for)"
        )
    base_arch = str((base_config.get("architectures") or ["<none>"])[0])
    if not base_arch.startswith("Qwen3_5"):
        raise SourceError(
            f"--base-config is {base_arch}, but SpecForge MTP checkpoints are Qwen3.5 heads; "
            "pass the config.json of the Qwen3.5 model it was trained for"
        )
    views = {}
    weight_map = {}
    for stored, shard in ckpt.weight_map.items():
        if (name := _release_name(stored)) is not None:
            views[name] = replace(ckpt.tensor(stored), name=name)
            weight_map[name] = shard
    return replace(
        ckpt, config=dict(base_config), weight_map=weight_map, views=views, trainer="specforge"
    )
