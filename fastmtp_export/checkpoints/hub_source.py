"""A checkpoint on the Hugging Face Hub, read without downloading it.

``export ORG/NAME[@REVISION]`` resolves the revision to a commit, downloads the small
files (``config.json``, the safetensors index, ``generation_config.json``, the card)
through huggingface_hub into its cache, and reads everything else with HTTP range
requests against that commit: 8 bytes and the header of each shard that holds MTP
tensors, then the MTP tensors' byte ranges. For FastMTP's 15.7 GB MiMo release that is
about 0.42 GB. A shard that is already complete in the cache is read from disk, and
``HF_HUB_OFFLINE=1`` reads a fully cached snapshot. ``HF_TOKEN``, ``HF_ENDPOINT`` and the
cache location are huggingface_hub's own settings. What the server says (the commit id,
the index's shard names) is checked before it is used; the ranges themselves, with
their checks, timeouts and resume, are :mod:`.hub_transfer`'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util.hashing import sha256_bytes
from .._util.remote import (
    COMMIT_SHA,
    checked_commit,
    checked_remote_name,
    remote_timeout,
)
from ..errors import SourceError
from .checkpoint import INDEX_NAME, SINGLE_NAME, LocalShards, SourceCheckpoint, joined
from .hub_transfer import RemoteFile, hub_errors
from .safetensors_io import Header, parse_header

#: ``ORG/NAME`` or ``ORG/NAME@REVISION`` (a Hub model id; the same shape as a relative
#: path, so a local directory of that name wins).
REPO_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>\S+))?$")

#: small files read whole (through the cache) when the repository has them.
SMALL_FILES = ("config.json", INDEX_NAME, "generation_config.json", "README.md")


def parse_repo_ref(text: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` for ``ORG/NAME[@REV]`` that is not a local path, else ``None``."""
    m = REPO_REF.match(text)
    if m is None or Path(text).exists():
        return None
    return m["repo"], m["rev"]


@dataclass
class HubShards:
    """Shards of one Hub commit, read by HTTP range (or from the cache when complete)."""

    repo_id: str
    revision: str
    sizes: dict[str, int]
    snapshot: Path
    #: bytes fetched over HTTP (headers and tensor data).
    bytes_read: int = 0
    _local: LocalShards = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._local = LocalShards(self.snapshot)

    def _cached(self, shard: str) -> bool:
        path = self.snapshot / shard
        return path.is_file() and path.stat().st_size == self.sizes.get(shard)

    def header(self, shard: str) -> Header:
        if self._cached(shard):
            return self._local.header(shard)
        if shard not in self.sizes:
            raise SourceError(
                f"{self.repo_id}@{self.revision[:12]} has no {shard} although its index names "
                "it; the repository is incomplete"
            )
        return parse_header(Path(shard), self.sizes[shard], lambda b, n: self.read(shard, b, n))

    def read(self, shard: str, begin: int, nbytes: int) -> bytes:
        if self._cached(shard):
            return self._local.read(shard, begin, nbytes)
        return joined(self.chunks(shard, begin, nbytes))

    def total_bytes(self, shards: Iterable[str]) -> int:
        """The size of ``shards`` on the Hub (the whole checkpoint, for the report)."""
        return sum(self.sizes.get(s, 0) for s in set(shards))

    def chunks(self, shard: str, begin: int, nbytes: int) -> Iterator[memoryview]:
        """The bytes, from disk when the shard is cached, else by HTTP range (resumed
        after a cut, a timeout or a 5xx: :class:`~.hub_transfer.RemoteFile`)."""
        if self._cached(shard):
            yield from self._local.chunks(shard, begin, nbytes)
            return
        remote = RemoteFile(self.repo_id, self.revision, shard, self.sizes.get(shard))
        for chunk in remote.chunks(begin, nbytes):
            self.bytes_read += len(chunk)
            yield chunk


def open_hub_checkpoint(repo_id: str, revision: str | None = None) -> SourceCheckpoint:
    """The checkpoint ``repo_id`` at ``revision`` (default: main), read lazily.

    What the server says is checked before it is used: the commit id (it becomes a cache
    path component), and the shard names of a remote index (they are joined to the
    snapshot folder). Every request has a bounded connect and read time
    (:func:`~.._util.remote.remote_timeout`).

    Raises:
        SourceError: a missing repository or revision, a gated or private one without a
            token that can read it, no safetensors weights, the Hub unreachable or not
            answering, a commit id or file name that is not plain, a malformed index, or
            ``HF_HUB_OFFLINE`` with a snapshot that is not fully cached.
    """
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return _offline(repo_id, revision)
    timeout = remote_timeout()
    with hub_errors(repo_id, revision, source=True):
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout)
    sha = checked_commit(info.sha, f"the Hub at {constants.ENDPOINT}")
    sizes = {str(s.rfilename): int(s.size or 0) for s in info.siblings or []}
    if INDEX_NAME not in sizes and SINGLE_NAME not in sizes:
        raise SourceError(
            f"{repo_id}@{sha[:12]} has neither {INDEX_NAME} nor {SINGLE_NAME}; export "
            "needs safetensors weights"
        )
    with hub_errors(repo_id, sha), _bounded_metadata_retry(timeout):
        local = {
            name: _download(repo_id, name, sha, timeout) for name in SMALL_FILES if name in sizes
        }
    if "config.json" not in local:
        raise SourceError(f"{repo_id}@{sha[:12]} has no config.json; it is not a model checkpoint")
    snapshot = local["config.json"].parent
    raw = local["config.json"].read_bytes()
    config = _json_object(raw, f"{repo_id}/config.json")
    shards = HubShards(repo_id, sha, sizes, snapshot)
    if INDEX_NAME in local:
        where = f"{repo_id}@{sha[:12]}/{INDEX_NAME}"
        weight_map = remote_weight_map(_json_object(local[INDEX_NAME].read_bytes(), where), where)
    else:
        with hub_errors(repo_id, sha):
            weight_map = dict.fromkeys(shards.header(SINGLE_NAME).tensors, SINGLE_NAME)
    return SourceCheckpoint(
        snapshot, config, sha256_bytes(raw), weight_map,
        shards=shards, repo_id=repo_id, revision=sha,
    )  # fmt: skip


def remote_weight_map(doc: dict[str, Any], where: str) -> dict[str, str]:
    """An index's ``weight_map`` (tensor name -> shard), each shard a plain file name.

    Raises:
        SourceError: no ``weight_map`` object, a value that is not a string, or a shard
            name with a ``/``, ``..`` or an absolute path (it would be joined to a local
            folder).
    """
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise SourceError(
            f"{where} is not a safetensors index (its weight_map must be an object of "
            "tensor name -> shard file name); the repository is broken, or HF_ENDPOINT "
            "points at a server that is not a Hugging Face Hub"
        )
    for shard in set(weight_map.values()):
        checked_remote_name(shard, where)
    return {str(k): v for k, v in weight_map.items()}


def _download(repo_id: str, name: str, sha: str, timeout: float) -> Path:
    """One small file through huggingface_hub's cache, its metadata request bounded by
    ``timeout`` (``HF_HUB_ETAG_TIMEOUT`` wins when set, as huggingface_hub decides; the
    body's read time is its ``HF_HUB_DOWNLOAD_TIMEOUT``)."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, name, revision=sha, etag_timeout=timeout))


@contextmanager
def _bounded_metadata_retry(timeout: float) -> Iterator[None]:
    """huggingface_hub retries a timed-out metadata request of a file not yet cached with
    a fixed 60 s timeout (``file_download._ETAG_RETRY_TIMEOUT``); bound that one too."""
    from huggingface_hub import file_download

    name = "_ETAG_RETRY_TIMEOUT"
    before = getattr(file_download, name, None)
    if not isinstance(before, int | float):
        yield
        return
    setattr(file_download, name, min(before, timeout))
    try:
        yield
    finally:
        setattr(file_download, name, before)


def _offline(repo_id: str, revision: str | None) -> SourceCheckpoint:
    """A snapshot already complete in the cache, as a local checkpoint (no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        raise SourceError(
            f"no local directory {repo_id}, and HF_HUB_OFFLINE is set and {repo_id}"
            + (f"@{revision}" if revision else "")
            + " is not in the Hugging Face cache; unset HF_HUB_OFFLINE, or download it "
            "first (hf download)"
        ) from None
    # the folder's name is the commit a cached ref points at: a ref file holding
    # anything but a commit id (a path) must not choose the folder read
    sha = folder.name
    if ".." in folder.parts or folder.parent.name != "snapshots" or not COMMIT_SHA.match(sha):
        raise SourceError(
            f"the Hugging Face cache's ref for {repo_id}"
            + (f"@{revision}" if revision else "")
            + f" points at {str(folder)[-120:]!r}, not a snapshot named by a 40-digit hex "
            "commit; delete that ref file under the cache's refs/ folder, or pass the "
            "commit (ORG/NAME@SHA)"
        )
    try:
        ckpt = SourceCheckpoint.open(folder)
    except SourceError as exc:
        raise SourceError(
            f"HF_HUB_OFFLINE is set and the cached {repo_id} is incomplete ({exc}); unset "
            "HF_HUB_OFFLINE to read the missing parts from the Hub"
        ) from exc
    for shard in set(ckpt.weight_map.values()):  # the cached index came from the Hub
        checked_remote_name(shard, f"the cached {repo_id}@{sha[:12]}/{INDEX_NAME}")
    ckpt.repo_id, ckpt.revision = repo_id, sha
    return ckpt


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise SourceError(f"{what} is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise SourceError(f"{what} is not a JSON object")
    return doc
