"""When the plugin acts: version guard, kill switch, draft rows, and what the draft path is.

The plugin does nothing unless the draft directory holds a fastmtp-export manifest
with token maps; an explicit ``--speculative-token-map`` wins (stock behaviour), and
``FASTMTP_SGLANG_PATCH=0`` disables it entirely. It refuses to serve an artifact on an
unknown SGLang version, whose private seams may have moved, unless
``FASTMTP_SGLANG_PATCH_ANY_VERSION=1``. ``FASTMTP_DRAFT_ROWS`` sets K_u, the active
draft head's rows. No SGLang import here: the hook module passes the facts in.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fastmtp_export._util.confine import refuse_escaping_links
from fastmtp_export.artifact import manifest as mf
from fastmtp_export.checkpoints.checkpoint import SourceCheckpoint, language_config
from fastmtp_export.errors import FastMTPError
from fastmtp_export.maps.ranking import load_ranking, token_shares
from fastmtp_export.maps.token_map import load_token_map

from .bank import default_rows

#: SGLang versions whose hooked seams sglang_patch/INVENTORY.md was checked against
SUPPORTED_SGLANG = ("0.5.23",)
ENABLE_ENV = "FASTMTP_SGLANG_PATCH"
ANY_VERSION_ENV = "FASTMTP_SGLANG_PATCH_ANY_VERSION"
ROWS_ENV = "FASTMTP_DRAFT_ROWS"


def disabled() -> bool:
    """``FASTMTP_SGLANG_PATCH=0`` (or ``false``/``off``) turns the plugin off."""
    return os.environ.get(ENABLE_ENV, "1").strip().lower() in ("0", "false", "off", "no")


def version_problem(version: str) -> str | None:
    """A one-line refusal for an unsupported SGLang version, or ``None``."""
    if version in SUPPORTED_SGLANG or os.environ.get(ANY_VERSION_ENV) == "1":
        return None
    return (
        f"fastmtp sglang_patch supports SGLang {', '.join(SUPPORTED_SGLANG)}, found {version}; "
        f"install a supported SGLang, set {ENABLE_ENV}=0 to run without the plugin, or "
        f"{ANY_VERSION_ENV}=1 to try anyway"
    )


@dataclass(frozen=True)
class ArtifactMaps:
    """The validated maps of a draft artifact, with each language's ranking past its map
    and token shares when the artifact ships them (format 3)."""

    maps: dict[str, list[int]]
    default: str
    size: int
    rankings: dict[str, list[int]] | None = None
    shares: dict[str, dict[int, float]] | None = None


def artifact_maps(draft_dir: Path) -> ArtifactMaps | None:
    """The language maps of ``draft_dir``, or ``None`` when it is not a map-carrying artifact.

    Maps are validated as the exporter does (ids within the draft config's vocab, no
    duplicates, EOS present, one K).

    Raises:
        FastMTPError: the artifact claims maps that are missing or invalid.
    """
    if not (draft_dir / mf.MANIFEST_NAME).is_file():
        return None
    manifest = mf.load(draft_dir)
    info = manifest.token_maps
    if info is None:
        return None
    ranked = {lang: e.ranking for lang, e in info.languages.items() if e.ranking is not None}
    refuse_escaping_links(
        draft_dir, [e.file for e in info.languages.values()] + [r.file for r in ranked.values()]
    )
    try:
        config = json.loads((draft_dir / "config.json").read_text())
        vocab = int(language_config(config)["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FastMTPError(f"{draft_dir}/config.json has no usable vocab_size ({exc})") from exc
    maps = {
        lang: load_token_map(
            draft_dir / e.file, vocab_size=vocab, required=info.required_ids, size=info.size
        )
        for lang, e in info.languages.items()
    }
    if not ranked:
        return ArtifactMaps(maps, info.default_lang, info.size)
    loaded = {
        lang: load_ranking(draft_dir / r.file, vocab_size=vocab, size=r.size)
        for lang, r in ranked.items()
    }
    return ArtifactMaps(
        maps,
        info.default_lang,
        info.size,
        rankings={lang: r.ids for lang, r in loaded.items()},
        shares=token_shares(loaded, maps),
    )


def draft_rows(size: int, n_langs: int, vocab: int) -> int:
    """K_u from ``FASTMTP_DRAFT_ROWS``, else :func:`~.bank.default_rows`.

    Raises:
        FastMTPError: a value that is not an integer in ``[K, V]``.
    """
    default = default_rows(size, n_langs, vocab)
    raw = os.environ.get(ROWS_ENV, "").strip()
    if not raw:
        return default
    try:
        rows = int(raw)
    except ValueError:
        rows = -1
    if not size <= rows <= vocab:
        raise FastMTPError(
            f"fastmtp: {ROWS_ENV}={raw!r} must be an integer from K={size} to the vocabulary "
            f"size {vocab}; unset it for the default {default}"
        )
    return rows


#: MTP tensor names of every family we know (MiMo mtp_layers, Qwen3-Next mtp.*, nextn)
_MTP_NAME = re.compile(r"(^|\.)(mtp_layers|mtp|nextn)[._]")


def base_mtp_tensors(path: Path) -> int | None:
    """How many MTP tensors a local base checkpoint holds; ``None`` when it cannot tell.

    Counts MiMo-, Qwen3-Next- and NextN-style names, and DeepSeek-style layers past
    ``num_hidden_layers`` (where their NextN layer lives). Only headers and the index
    are read.
    """
    try:
        ckpt = SourceCheckpoint.open(path)
    except (FastMTPError, OSError):
        return None
    n_layers = ckpt.config.get("num_hidden_layers")
    extra = f"model.layers.{n_layers}." if isinstance(n_layers, int) else None
    return sum(
        1
        for name in ckpt.weight_map
        if _MTP_NAME.search(name) or (extra is not None and name.startswith(extra))
    )


@dataclass(frozen=True)
class IdleReason:
    """Why the plugin stays idle for a draft path; ``warn``: the user likely meant an artifact."""

    message: str
    warn: bool


def idle_reason(draft: str, revision: str | None = None) -> IdleReason | None:
    """Why the plugin stays idle for this draft path, or ``None`` when it is an artifact with maps.

    The path is a local directory or a Hub repo id (its manifest and maps are read in
    place from a complete cached snapshot, else fetched into the plugin's own cache:
    :mod:`.draft_source`). A directory that is not a fastmtp artifact
    at all (another draft) is only noted; an artifact without maps, or a repo whose
    files cannot be fetched, is warned about.

    Raises:
        FastMTPError: the path is an artifact whose maps are missing or invalid.
    """
    from .draft_source import resolve_draft

    try:
        path = resolve_draft(draft, revision)
    except FastMTPError as exc:
        return IdleReason(f"{exc}; drafting over the full vocabulary", warn=True)
    if path is None:
        return IdleReason(
            f"draft path {draft} is neither a local directory nor a Hub repo id "
            "(ORG/NAME); the plugin reads per-language maps from a fastmtp-export artifact",
            warn=True,
        )
    if not (path / mf.MANIFEST_NAME).is_file():
        return IdleReason(
            f"{draft} has no {mf.MANIFEST_NAME} (not a fastmtp-export artifact)", warn=False
        )
    if artifact_maps(path) is None:
        return IdleReason(
            f"{draft} carries no token maps "
            "(export it with --token-maps DIR or --token-map LANG=PATH)",
            warn=True,
        )
    return None
