"""Where the draft's manifest and maps are: a local directory, or a Hub repository.

``--speculative-draft-model-path ORG/NAME`` makes SGLang download the draft's config and
weights from the Hub itself (``--speculative-draft-model-revision``, default ``main``).
The plugin reads the same repository at the same revision, but only what it needs:
``fastmtp.json``, ``config.json`` and the ``*.pt`` maps (``HF_TOKEN``, ``HF_ENDPOINT``
and ``HF_HUB_OFFLINE`` are huggingface_hub's own).

Where: an artifact already complete in the shared Hugging Face cache (``hf download``)
is read in place. Otherwise the files go to a cache of the plugin's own,
``$HF_HOME/fastmtp-artifacts``, and never into the shared snapshot: SGLang's weight
loader takes a cached snapshot holding any file that matches its patterns (``*.pt``
among them, for drafts) as complete, and would then load the *maps* as PyTorch weights
instead of downloading ``model.safetensors`` (found by the lane test). Each process
resolves a draft once: the scheduler at start-up, the tokenizer manager on its first
request.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastmtp_export.artifact import manifest as mf
from fastmtp_export.checkpoints.hub_source import parse_repo_ref
from fastmtp_export.errors import FastMTPError

#: what the plugin reads from a Hub artifact (never the weights: SGLang loads those)
ARTIFACT_FILES = [mf.MANIFEST_NAME, "config.json", "*.pt"]


def resolve_draft(draft: str | None, revision: str | None = None) -> Path | None:
    """The local directory holding the draft's manifest and maps, or ``None`` when the
    draft path is neither a directory nor a Hub repo id.

    Raises:
        FastMTPError: a repo id whose files cannot be fetched (one line, naming why).
    """
    if not draft:
        return None
    if Path(draft).is_dir():
        return Path(draft)
    repo_id = _repo_id(draft)
    if repo_id is None:
        return None
    found = _snapshot(repo_id, revision)
    if isinstance(found, str):
        raise FastMTPError(found)
    return found


def _repo_id(draft: str) -> str | None:
    """``ORG/NAME`` when the draft path is a bare Hub repo id (not a local path; SGLang
    takes the revision in its own flag), else ``None``."""
    ref = parse_repo_ref(draft)
    return ref[0] if ref is not None and ref[1] is None else None


def private_cache() -> Path:
    """The plugin's own Hub cache (never the shared snapshots SGLang loads weights from)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "fastmtp-artifacts"


def incomplete_shared_snapshot(draft: str, revision: str | None = None) -> Path | None:
    """A shared-cache snapshot of the draft repo holding ``*.pt`` files but no weights, or
    ``None``: SGLang takes such a snapshot as complete and loads the maps as PyTorch
    weights (a start-up crash in the draft's ``load_weights``)."""
    repo_id = _repo_id(draft)
    if repo_id is None:
        return None
    shared = shared_snapshot(repo_id, revision)
    if shared is not None and any(shared.glob("*.pt")) and not any(shared.glob("*.safetensors")):
        return shared
    return None


def shared_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The shared cache's snapshot folder for ``repo_id`` at ``revision`` (a branch or a
    commit), complete or not, as SGLang's loader finds it; ``None`` when absent."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else revision
    folder = repo / "snapshots" / commit if commit else None
    return folder if folder is not None and folder.is_dir() else None


@functools.cache
def _snapshot(repo_id: str, revision: str | None) -> Path | str:
    """The artifact's manifest, config and maps on disk, or why they cannot be had (cached
    too: a request must never wait on a Hub that already failed)."""
    from huggingface_hub import snapshot_download

    shared = shared_snapshot(repo_id, revision)  # complete already (hf download): read in place
    if (
        shared is not None
        and (shared / mf.MANIFEST_NAME).is_file()
        and any(shared.glob("*.safetensors"))
    ):
        return shared
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=ARTIFACT_FILES,
                cache_dir=private_cache(),
            )
        )  # fmt: skip
    except Exception as exc:
        at = f"@{revision}" if revision else ""
        return (
            f"fastmtp: cannot read the manifest and maps of {repo_id}{at} from the Hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            "check HF_TOKEN / HF_ENDPOINT, or pass a local artifact directory"
        )
