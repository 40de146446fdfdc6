"""Where the draft's manifest and maps are: a local directory, or a Hub repository.

``--speculative-draft-model-path ORG/NAME`` makes SGLang download the draft's config and
weights from the Hub itself (``--speculative-draft-model-revision``, default ``main``).
The plugin reads the same repository, but only what it needs: ``config.json``,
``fastmtp.json`` and the maps that manifest lists (``HF_TOKEN``, ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE`` are huggingface_hub's own).

Which commit: the revision is resolved to a commit once per process (``model_info``;
offline, the cache's ``refs``), the commit id is checked (``HF_ENDPOINT`` may be a
broken mirror or a hostile proxy, and the id becomes a cache path), and every file is
fetched by that commit. The scheduler then pins SGLang's own weight download to it
(:func:`.hooks.guard.pin_draft_revision`), so weights and maps come from one commit.

Where: a shared Hugging Face cache snapshot (``hf download``) of that commit is read in
place only when it holds ``config.json``, ``fastmtp.json`` and every file the manifest
lists. Otherwise the files go to a cache of the plugin's own,
``$HF_HOME/fastmtp-artifacts``, and never into the shared snapshot: SGLang's weight
loader takes a cached snapshot holding any file that matches its patterns (``*.pt``
among them, for drafts) as complete, and would then load the *maps* as PyTorch weights
instead of downloading ``model.safetensors`` (found by the lane test). The manifest is
fetched and checked before any map, so a repository that is not an artifact never has
its ``*.pt`` files downloaded.

When: the fetch runs in a background thread, bounded as a whole by
``FASTMTP_HUB_TIMEOUT`` seconds (:func:`~fastmtp_export._util.remote.remote_timeout`,
also the timeout of ``model_info`` and of each file's metadata request; huggingface_hub
retries those and reads bodies under its own timeouts, so only the whole bound holds).
The scheduler starts it in its start-up hook and waits for it there (never longer than
the bound); the tokenizer manager starts it when it is built and never waits: until it
is done its requests are not language-detected. The outcome, whatever it is, is final
for the process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastmtp_export._util.atomic import atomic_write
from fastmtp_export._util.remote import COMMIT_SHA, TIMEOUT_ENV, checked_commit, remote_timeout
from fastmtp_export.artifact import manifest as mf
from fastmtp_export.checkpoints.hub_source import parse_repo_ref
from fastmtp_export.errors import FastMTPError


class PendingError(FastMTPError):
    """The draft's files are still being fetched (only when the caller does not wait)."""


@dataclass(frozen=True)
class Fetched:
    """A repo-id draft's files on disk: ``folder`` holds ``config.json`` and, for an
    artifact, ``fastmtp.json`` and its maps; all of them from ``commit``."""

    folder: Path
    commit: str


def resolve_draft(
    draft: str | None, revision: str | None = None, *, wait: bool = True
) -> Path | None:
    """The local directory holding the draft's manifest and maps, or ``None`` when the
    draft path is neither a directory nor a Hub repo id.

    ``wait``: block until a repo id's fetch is done or its time bound has passed;
    otherwise raise :class:`PendingError` while it runs.

    Raises:
        FastMTPError: a repo id whose files cannot be fetched in time (one line, naming why).
    """
    fetched = draft_fetch(draft, revision, wait=wait)
    if fetched is None:
        return Path(draft) if draft and Path(draft).is_dir() else None
    return fetched.folder


def draft_fetch(
    draft: str | None, revision: str | None = None, *, wait: bool = True
) -> Fetched | None:
    """A repo-id draft's fetched files and commit; ``None`` for anything else (no draft, a
    local directory, a path that is not a repo id).

    Raises:
        PendingError: ``wait`` is false and the fetch is still running.
        FastMTPError: the fetch failed or ran out of time.
    """
    repo_id = _repo_id(draft)
    if repo_id is None:
        return None
    found = _resolution(repo_id, revision).outcome(wait)
    if found is None:
        raise PendingError(f"fastmtp: the manifest and maps of {repo_id} are still being fetched")
    if isinstance(found, str):
        raise FastMTPError(found)
    return found


def start_resolving(draft: str | None, revision: str | None = None) -> None:
    """Start fetching a repo-id draft's files in the background (no-op otherwise)."""
    repo_id = _repo_id(draft)
    if repo_id is not None:
        _resolution(repo_id, revision)


def _repo_id(draft: str | None) -> str | None:
    """``ORG/NAME`` when the draft path is a bare Hub repo id (not an existing local path,
    which :func:`parse_repo_ref` leaves out; SGLang takes the revision in its own flag),
    else ``None``."""
    ref = parse_repo_ref(draft) if draft else None
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


def _repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def shared_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The shared cache's snapshot folder for ``repo_id`` at ``revision`` (a branch or a
    commit), complete or not, as SGLang's loader finds it; ``None`` when absent."""
    from huggingface_hub import constants

    repo = _repo_folder(Path(constants.HF_HUB_CACHE), repo_id)
    commit = _ref(repo, revision) or revision
    if commit is None or not COMMIT_SHA.match(commit):
        return None
    folder = repo / "snapshots" / commit
    return folder if folder.is_dir() else None


def _ref(repo: Path, revision: str | None) -> str | None:
    """The commit a cache's ``refs/<revision>`` file names (checked), or ``None``."""
    ref = repo / "refs" / (revision or "main")
    if not ref.resolve().is_relative_to((repo / "refs").resolve()) or not ref.is_file():
        return None
    return checked_commit(ref.read_text().strip(), f"the cache file {ref}")


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds ``config.json``, ``fastmtp.json`` and every file the
    manifest lists (names confined by the manifest's own validation)."""
    if not (folder / "config.json").is_file() or not (folder / mf.MANIFEST_NAME).is_file():
        return False
    try:
        names = mf.referenced_files(mf.load(folder))
    except FastMTPError:
        return False
    return all((folder / name).is_file() for name in names)


class _Resolution:
    """One repo id's fetch, in a daemon thread, with a deadline; its outcome is final."""

    def __init__(self, repo_id: str, revision: str | None) -> None:
        self.repo_id, self.revision = repo_id, revision
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._result: Fetched | str | None = None
        self._final: Fetched | str | None = None
        try:
            self.bound = remote_timeout()
        except FastMTPError as exc:
            self.bound = 0.0
            self._final = f"{exc}; drafting without the artifact's maps"
            return
        self.deadline = time.monotonic() + self.bound
        name = f"fastmtp-fetch {repo_id}"
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            self._result = _fetch(self.repo_id, self.revision, self.bound)
        except Exception as exc:
            at = f"@{self.revision}" if self.revision else ""
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            self._result = (
                f"fastmtp: cannot read the manifest and maps of {self.repo_id}{at} from the "
                f"Hub ({type(exc).__name__}: {first}); check HF_TOKEN / HF_ENDPOINT, or pass a "
                "local artifact directory"
            )
        finally:
            self._done.set()

    def outcome(self, wait: bool) -> Fetched | str | None:
        """The fetched files or why they cannot be had; ``None`` while running and not waiting."""
        if self._final is not None:
            return self._final
        if wait:
            self._done.wait(max(0.0, self.deadline - time.monotonic()))
        with self._lock:
            if self._final is None:
                if self._done.is_set():
                    self._final = self._result
                    if isinstance(self._final, Fetched):
                        _alias(self, self._final.commit)
                elif time.monotonic() >= self.deadline:
                    at = f"@{self.revision}" if self.revision else ""
                    self._final = (
                        f"fastmtp: the Hub did not deliver the manifest and maps of "
                        f"{self.repo_id}{at} within {self.bound:g} s ({TIMEOUT_ENV}); check "
                        f"HF_ENDPOINT and the network, raise {TIMEOUT_ENV}, or pass a local "
                        "artifact directory"
                    )
            return self._final


#: every fetch of this process, by (repo id, revision); a fetched commit is an alias
#: (the scheduler pins SGLang's revision to it, and its hooks then ask by the commit)
_resolutions: dict[tuple[str, str | None], _Resolution] = {}
_resolutions_lock = threading.Lock()


def _resolution(repo_id: str, revision: str | None) -> _Resolution:
    with _resolutions_lock:
        found = _resolutions.get((repo_id, revision))
        if found is None:
            found = _resolutions[(repo_id, revision)] = _Resolution(repo_id, revision)
        return found


def _alias(resolution: _Resolution, commit: str) -> None:
    with _resolutions_lock:
        _resolutions.setdefault((resolution.repo_id, commit), resolution)


def forget_fetches() -> None:
    """Drop every remembered fetch (tests: each starts from a cold process)."""
    with _resolutions_lock:
        _resolutions.clear()


def _fetch(repo_id: str, revision: str | None, timeout: float) -> Fetched:
    """Resolve ``revision`` to a checked commit, then read the shared snapshot in place
    when complete, else fetch config, manifest and the manifest's maps by that commit."""
    from huggingface_hub import HfApi, constants, hf_hub_download

    names: set[str] | None = None
    if constants.HF_HUB_OFFLINE:
        commit = _cached_commit(repo_id, revision)
    else:
        info = HfApi().model_info(repo_id, revision=revision, timeout=timeout)
        commit = checked_commit(info.sha, f"the Hub at {constants.ENDPOINT} ({repo_id})")
        if revision is not None and COMMIT_SHA.match(revision) and commit != revision:
            raise FastMTPError(
                f"the Hub at {constants.ENDPOINT} answered commit {commit} for commit {revision}"
            )
        names = {str(s.rfilename) for s in info.siblings or []}
    shared = shared_snapshot(repo_id, commit)
    if shared is not None and _complete(shared):
        return Fetched(shared, commit)  # complete already (hf download): read in place
    cache = private_cache()
    if not constants.HF_HUB_OFFLINE and (revision or "main") != commit:
        _write_ref(_repo_folder(cache, repo_id), revision or "main", commit)  # for offline

    def get(name: str) -> Path:
        got = hf_hub_download(
            repo_id, name, revision=commit, cache_dir=cache, etag_timeout=timeout
        )  # fmt: skip
        return Path(got)

    folder = get("config.json").parent
    if names is not None and mf.MANIFEST_NAME not in names:
        return Fetched(folder, commit)  # not an artifact: nothing more to read
    get(mf.MANIFEST_NAME)
    try:
        manifest = mf.load(folder)  # names it lists are plain file names (validated)
    except FastMTPError:
        return Fetched(folder, commit)  # settings.artifact_maps reports it
    if manifest.token_maps is not None:
        for entry in manifest.token_maps.languages.values():
            get(entry.file)
    return Fetched(folder, commit)


def _cached_commit(repo_id: str, revision: str | None) -> str:
    """Offline: the commit ``revision`` names in the shared or the plugin's cache.

    Raises:
        FastMTPError: neither cache knows it.
    """
    from huggingface_hub import constants

    if revision is not None and COMMIT_SHA.match(revision):
        return revision
    for cache in (Path(constants.HF_HUB_CACHE), private_cache()):
        commit = _ref(_repo_folder(cache, repo_id), revision)
        if commit is not None:
            return commit
    raise FastMTPError(
        f"HF_HUB_OFFLINE is set and no cache knows which commit {repo_id}@{revision or 'main'} "
        "is; run once online, or pass a local artifact directory"
    )


def _write_ref(repo: Path, revision: str, commit: str) -> None:
    """``refs/<revision>`` of the plugin's cache names ``commit`` (atomically)."""
    ref = repo / "refs" / revision
    if not ref.resolve().is_relative_to((repo / "refs").resolve()):
        return
    ref.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(ref, commit.encode())
