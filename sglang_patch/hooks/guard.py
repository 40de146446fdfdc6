"""Seam 1, ``Scheduler.__init__`` (BEFORE): start-up checks where raising stops the server.

An artifact on an unsupported SGLang version, a partial hook set, a draft loaded from
a base without MTP tensors; says once why the plugin stays idle. A repo-id draft's
manifest and maps are fetched here, before SGLang loads anything (bounded by
``FASTMTP_HUB_TIMEOUT``), and SGLang's weight download is pinned to their commit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastmtp_export.errors import FastMTPError

from ..draft_source import draft_fetch, incomplete_shared_snapshot
from ..settings import ENABLE_ENV, base_mtp_tensors, idle_reason
from .targets import TARGETS

log = logging.getLogger("sglang_patch")

#: set by :func:`..register_guard` when the installed SGLang is not a supported version
_version_problem: str | None = None


def missing_hooks() -> list[str]:
    """Hook targets SGLang's registry failed to apply (moved or renamed seams)."""
    from sglang.srt.plugins.hook_registry import HookRegistry

    return sorted(t for t in TARGETS.values() if t not in HookRegistry._patched)


def guard_before(scheduler: Any, server_args: Any, *args: Any, **kwargs: Any) -> None:
    """Refuse, or say once why the plugin stays idle, before the scheduler loads anything.

    SGLang's ``load_plugins`` and ``apply_hooks`` swallow exceptions; an exception
    raised here stops the scheduler and with it the server.
    """
    if str(getattr(server_args, "speculative_algorithm", None) or "").upper() not in (
        "EAGLE",
        "NEXTN",
    ):
        return None
    draft = getattr(server_args, "speculative_draft_model_path", None)
    model = getattr(server_args, "model_path", None)
    if not draft or (model is not None and str(draft) == str(model)):
        _check_base_draft(str(model))
        return None
    revision = getattr(server_args, "speculative_draft_model_revision", None)
    try:  # a repo id: its manifest and maps, fetched here (bounded) at a checked commit
        fetched = draft_fetch(str(draft), revision)
    except FastMTPError:
        fetched = None  # idle_reason says why
    partial = incomplete_shared_snapshot(str(draft), fetched.commit if fetched else revision)
    if partial is not None:
        raise RuntimeError(
            f"fastmtp: the Hugging Face cache holds an incomplete snapshot of {draft} "
            f"({partial}: token maps but no .safetensors weights); SGLang would take it as "
            f"complete and load the maps as weights: complete it with `hf download {draft}` "
            "or delete that snapshot"
        )
    idle = idle_reason(str(draft), revision)  # raises for an artifact with broken maps
    if idle is not None:
        level = logging.WARNING if idle.warn else logging.INFO
        log.log(level, "fastmtp: plugin idle: %s", idle.message)
        return None
    if _version_problem is not None:
        raise RuntimeError(_version_problem)
    if _multi_layer_eagle(server_args):
        raise RuntimeError(
            f"fastmtp: SGLang serves this target with multi-layer EAGLE (forced for MiMo-V2 "
            f"and Step-3.5 targets), which never reads a token map, so the per-language maps "
            f"of {draft} cannot be served; export the draft without maps, or set "
            f"{ENABLE_ENV}=0 to draft over the full vocabulary"
        )
    refuse_partial_hooks()
    if fetched is not None and fetched.commit != revision:
        pin_draft_revision(str(draft), fetched.commit)
    return None


def pin_draft_revision(draft: str, commit: str) -> None:
    """Make this scheduler load the draft's config and weights from ``commit``, the commit
    the maps were read from (SGLang resolves ``--speculative-draft-model-revision``, a
    branch, by itself when it downloads them, later in ``Scheduler.__init__``).

    SGLang 0.5.23 reads that revision from the published config
    (``get_spec().speculative_draft_model_revision``: ``TpModelWorker._init_model_config``
    for the draft worker); ``RuntimeContext.override`` is its own way to change a
    resolved value after start-up (the raw ``ServerArgs`` stay sealed).
    """
    try:
        from sglang.srt.runtime_context import get_context

        get_context().override("fastmtp.draft_commit", speculative_draft_model_revision=commit)
    except Exception as exc:  # a moved seam: say that the commits may differ
        log.warning(
            "fastmtp: could not pin the draft's weights to commit %s, the commit of its "
            "maps (%s); pin --speculative-draft-model-revision to a commit",
            commit,
            exc,
        )
        return
    log.info("fastmtp: draft %s: weights and maps from commit %s", draft, commit)


def _multi_layer_eagle(server_args: Any) -> bool:
    """Whether SGLang resolved ``enable_multi_layer_eagle`` (model overrides set it after
    the raw field, which still reads ``False``)."""
    try:
        from sglang.srt.arg_groups.overrides import resolution_result
    except ImportError:
        return bool(getattr(server_args, "enable_multi_layer_eagle", False))
    return bool(resolution_result(server_args, "enable_multi_layer_eagle", False))


def refuse_partial_hooks() -> None:
    missing = missing_hooks()
    if missing:
        raise RuntimeError(
            f"fastmtp: SGLang did not apply the plugin's hooks to {', '.join(missing)} "
            "(the seams moved in this SGLang); a partial hook set would serve a wrong draft "
            f"vocabulary: install a supported SGLang, or set {ENABLE_ENV}=0 to serve the "
            "artifact without per-language maps"
        )


def _check_base_draft(model: str) -> None:
    """The silent trap: no draft path, so SGLang loads the MTP draft from the base.

    A base without MTP tensors leaves every draft weight uninitialised (acceptance about
    1, no error from SGLang): refuse. A base with them serves its own head: say so.
    """
    found = base_mtp_tensors(Path(model))
    if found is None:
        return  # not a local checkpoint (a Hub id): nothing cheap to inspect
    if found == 0:
        raise RuntimeError(
            f"fastmtp: no --speculative-draft-model-path, and the base checkpoint {model} has "
            "no MTP tensors: SGLang would draft with uninitialised weights (acceptance about "
            "1); pass --speculative-draft-model-path DIR (a fastmtp-export artifact), or set "
            f"{ENABLE_ENV}=0 to skip this check"
        )
    log.warning(
        "fastmtp: no --speculative-draft-model-path: SGLang serves the base checkpoint's own "
        "MTP head (%d tensors in %s), not a fastmtp-export artifact; no per-language maps",
        found,
        model,
    )
