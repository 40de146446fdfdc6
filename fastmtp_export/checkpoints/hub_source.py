"""A checkpoint on the Hugging Face Hub, read without downloading it.

``export ORG/NAME[@REVISION]`` resolves the revision to a commit, downloads the small
files (``config.json``, the safetensors index, ``generation_config.json``, the card)
through huggingface_hub into its cache, and reads everything else with HTTP range
requests against that commit: 8 bytes and the header of each shard that holds MTP
tensors, then the MTP tensors' byte ranges. For FastMTP's 15.7 GB MiMo release that is
about 0.42 GB. A shard that is already complete in the cache is read from disk, and
``HF_HUB_OFFLINE=1`` reads a fully cached snapshot. ``HF_TOKEN``, ``HF_ENDPOINT`` and the
cache location are huggingface_hub's own settings.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util.hashing import sha256_bytes
from .._util.remote import (
    COMMIT_SHA,
    TIMEOUT_ENV,
    checked_commit,
    checked_remote_name,
    remote_timeout,
)
from ..errors import SourceError
from . import safetensors_io
from .checkpoint import INDEX_NAME, SINGLE_NAME, LocalShards, SourceCheckpoint, joined
from .safetensors_io import Header, parse_header

#: ``ORG/NAME`` or ``ORG/NAME@REVISION`` (a Hub model id; the same shape as a relative
#: path, so a local directory of that name wins).
REPO_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>\S+))?$")

#: small files read whole (through the cache) when the repository has them.
SMALL_FILES = ("config.json", INDEX_NAME, "generation_config.json", "README.md")

#: times one byte range is resumed after a cut, a timeout or a 5xx before giving up
RANGE_RETRIES = 5
#: seconds before the first resume (doubled each time, jittered x0.5-1.5)
RETRY_WAIT_ENV = "FASTMTP_HUB_RETRY_WAIT"
DEFAULT_RETRY_WAIT = 1.0
#: an error reply's body is read (for its message) only up to this size
MAX_ERROR_BODY = 1 << 20

log = logging.getLogger(__name__)


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
        """The bytes, from disk when the shard is cached, else by HTTP range; a cut or
        timed-out transfer (or a 5xx) resumes from the byte reached, at most
        :data:`RANGE_RETRIES` times with jittered exponential backoff; a 4xx never."""
        if self._cached(shard):
            yield from self._local.chunks(shard, begin, nbytes)
            return
        got = failures = 0
        while got < nbytes:
            try:
                for chunk in self._ranged(shard, begin + got, nbytes - got):
                    got += len(chunk)
                    yield chunk
            except _TransientError as exc:
                failures += 1
                if failures > RANGE_RETRIES:
                    raise SourceError(
                        f"the transfer of {shard} from {self.repo_id} failed {failures} times, "
                        f"the last at byte {got} of {nbytes} ({exc}); nothing was written: "
                        "check the network or HF_ENDPOINT and run the export again"
                    ) from exc
                wait = retry_wait() * 2 ** (failures - 1) * random.uniform(0.5, 1.5)
                log.info(
                    "%s: %s at byte %d of %d; retry %d of %d in %.1f s",
                    shard, exc, got, nbytes, failures, RANGE_RETRIES, wait,
                )  # fmt: skip
                time.sleep(wait)

    def _ranged(self, shard: str, begin: int, nbytes: int) -> Iterator[memoryview]:
        """One GET of ``nbytes`` from ``begin``: the reply must be a 206 for exactly that
        range, and is streamed up to ``nbytes`` (a server that sends more is refused at
        the first piece past it; nothing beyond the range is ever yielded).

        Raises:
            _TransientError: a cut connection, a timeout or a 5xx (worth resuming).
            SourceError: anything else.
        """
        import httpx
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session

        last = begin + nbytes - 1
        url = hf_hub_url(self.repo_id, shard, revision=self.revision)
        headers = {
            **build_hf_headers(),
            "Range": f"bytes={begin}-{last}",
            "Accept-Encoding": "identity",
        }
        got, buf = 0, bytearray()
        want = min(safetensors_io.CHUNK_BYTES, nbytes)  # bytes per yielded chunk
        cut: httpx.TransportError | None = None
        try:
            with get_session().stream(
                "GET", url, headers=headers, follow_redirects=True,
                timeout=httpx.Timeout(remote_timeout()),
            ) as response:  # fmt: skip
                self._check_reply(response, shard, begin, last)
                for piece in response.iter_bytes():  # as received (tens of KiB)
                    if len(piece) > nbytes - got - len(buf):
                        raise SourceError(
                            f"the Hub sent more than the {nbytes} bytes asked for of {shard} "
                            f"from {self.repo_id}; refused, nothing was written: HF_ENDPOINT "
                            "points at a server that does not answer byte ranges correctly"
                        )
                    buf += piece
                    if len(buf) >= want:
                        got += len(buf)
                        self.bytes_read += len(buf)
                        yield memoryview(buf)
                        buf = bytearray()
        except httpx.TransportError as exc:  # cut, refused, timed out
            cut = exc
        except httpx.HTTPError as exc:
            raise SourceError(
                f"the transfer of {shard} from {self.repo_id} failed ({type(exc).__name__}: "
                f"{exc}); nothing was written: check HF_ENDPOINT and run the export again"
            ) from exc
        if buf:  # what arrived before a cut counts: the retry resumes after it
            got += len(buf)
            self.bytes_read += len(buf)
            yield memoryview(buf)
        if cut is not None:
            raise _TransientError(f"{type(cut).__name__}: {cut}".rstrip(": ")) from cut
        if got < nbytes:
            raise _TransientError(f"the connection closed after {got} of {nbytes} bytes")

    def _check_reply(self, response: Any, shard: str, begin: int, last: int) -> None:
        """A 206 whose ``Content-Range`` (and length, when given) is the range asked for."""
        status = response.status_code
        if status >= 500:
            raise _TransientError(f"server error {status}")
        if status >= 400:
            from huggingface_hub.utils import hf_raise_for_status

            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) <= MAX_ERROR_BODY:
                response.read()  # the error body and headers name the cause
                with hub_errors(self.repo_id, self.revision):
                    hf_raise_for_status(response)
            raise SourceError(
                f"the Hub refused bytes of {shard} from {self.repo_id} ({status}); check "
                "HF_TOKEN and HF_ENDPOINT"
            )
        if status != 206:
            raise SourceError(
                f"the Hub answered a byte-range request for {shard} with the whole file "
                f"({status}); export needs range requests (HF_ENDPOINT points at a server "
                "without them?)"
            )
        asked = f"bytes {begin}-{last}/{self.sizes.get(shard)}"
        answered = response.headers.get("Content-Range", "")
        length = response.headers.get("Content-Length")
        if answered.strip() != asked or (length is not None and length != str(last - begin + 1)):
            raise SourceError(
                f"the Hub answered a request for {asked} of {shard} from {self.repo_id} with "
                f"Content-Range {answered[:80]!r} and Content-Length {length}; refused, nothing "
                "was written: HF_ENDPOINT points at a server that does not answer byte ranges "
                "correctly"
            )


class _TransientError(Exception):
    """A failure worth resuming from the byte reached; the message says what happened."""


def retry_wait() -> float:
    """First wait before resuming a range, seconds (``FASTMTP_HUB_RETRY_WAIT``, default 1).

    Raises:
        SourceError: the variable is not a non-negative number.
    """
    raw = os.environ.get(RETRY_WAIT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_RETRY_WAIT
        if not 0 <= value < float("inf"):
            raise ValueError
    except ValueError:
        raise SourceError(
            f"{RETRY_WAIT_ENV}={raw!r} is not a number of seconds; set it to e.g. 1"
        ) from None
    return value


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


@contextmanager
def hub_errors(repo_id: str, revision: str | None, *, source: bool = False) -> Iterator[None]:
    """huggingface_hub and transport failures as one-line :class:`SourceError`.

    ``source``: ``repo_id`` is the SOURCE as typed, which is also no local directory
    (a mistyped path reads as a repo id): the missing-repo and unreachable errors say both.
    """
    import httpx
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = repo_id + (f"@{revision}" if revision else "")
    local = f"no local directory {repo_id}, and " if source else ""
    try:
        yield
    except GatedRepoError:
        raise SourceError(
            f"{repo_id} is gated: accept its terms on the Hub with your account, then set "
            "HF_TOKEN (or run `hf auth login`) with a token of that account"
        ) from None
    except RevisionNotFoundError:
        raise SourceError(
            f"revision {revision!r} does not exist in {repo_id}; pass a branch, tag or commit "
            "that does (--revision or ORG/NAME@REV)"
        ) from None
    except RepositoryNotFoundError:
        from huggingface_hub import constants

        raise SourceError(
            f"{local}{repo_id} was not found on the Hub at {constants.ENDPOINT} (or it is "
            "private: set HF_TOKEN to a token that can read it); check the path or the "
            "repo id"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise SourceError(f"the Hub failed reading {where} ({status}); retry later") from exc
    except (httpx.HTTPError, LocalEntryNotFoundError) as exc:  # the latter: a file's
        from huggingface_hub import constants  # metadata request failed, none cached

        raise SourceError(
            f"{local}cannot reach the Hub at {constants.ENDPOINT} to read {where} "
            f"({type(exc).__name__}, {remote_timeout():g} s timeout); check the path, the "
            f"network or HF_ENDPOINT (slow network: raise {TIMEOUT_ENV})"
        ) from exc
