"""Checkpoints written by MTP trainers, read as their family's release layout.

A trainer saves the fine-tuned head under its own names and config; an adapter here
recognises the format from ``config.json`` and returns the same checkpoint *viewed* in
the base family's release layout (release names mapped to the stored bytes, a release
config), so the family's reader and contract apply unchanged and nothing is copied.

- speculators (``speculators_model_type: "mtp"``): :mod:`.speculators`.
- SpecForge (``Qwen3_5MTPDraftModel``): :mod:`.specforge`.
- FastMTP / ms-swift save the whole model under the release's names: no adapter needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import SourceError
from ..checkpoint import SourceCheckpoint
from . import specforge, speculators

ADAPTERS = (speculators.adapt, specforge.adapt)


def as_release(ckpt: SourceCheckpoint, base_config: Path | None = None) -> SourceCheckpoint:
    """``ckpt`` in its family's release layout (itself when no trainer wrote it).

    ``base_config``: the base model's ``config.json``, for trainers that do not record
    it (SpecForge); it also replaces the one speculators records.

    Raises:
        SourceError: a trainer's checkpoint that cannot be read as a family SGLang
            serves, or an unreadable ``base_config``.
    """
    base = _read_config(base_config) if base_config is not None else None
    for adapt in ADAPTERS:
        if (viewed := adapt(ckpt, base)) is not None:
            return viewed
    if base is not None:
        raise SourceError(
            f"--base-config applies to trainer checkpoints (speculators, SpecForge); {ckpt.path} "
            "is a model release with its own config.json: drop --base-config"
        )
    return ckpt


def _read_config(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SourceError(f"--base-config {path} is not a readable JSON file ({exc})") from exc
    if not isinstance(doc, dict):
        raise SourceError(f"--base-config {path} is not a config.json object")
    return doc
