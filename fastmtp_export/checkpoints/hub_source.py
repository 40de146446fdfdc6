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
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util.hashing import sha256_bytes
from ..errors import SourceError
from . import safetensors_io
from .checkpoint import INDEX_NAME, SINGLE_NAME, LocalShards, SourceCheckpoint, joined
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
        if self._cached(shard):
            yield from self._local.chunks(shard, begin, nbytes)
            return
        if nbytes == 0:
            return
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(self.repo_id, shard, revision=self.revision)
        headers = {
            **build_hf_headers(),
            "Range": f"bytes={begin}-{begin + nbytes - 1}",
            "Accept-Encoding": "identity",
        }
        got = 0
        with (
            _transport_errors(self.repo_id, shard),
            get_session().stream("GET", url, headers=headers, follow_redirects=True) as response,
        ):
            if response.status_code >= 400:
                response.read()  # the error body and headers name the cause
                with hub_errors(self.repo_id, self.revision):
                    hf_raise_for_status(response)
            if response.status_code != 206:
                raise SourceError(
                    f"the Hub answered a byte-range request for {shard} with the whole file "
                    f"({response.status_code}); export needs range requests (HF_ENDPOINT "
                    "points at a server without them?)"
                )
            for chunk in response.iter_bytes(safetensors_io.CHUNK_BYTES):
                got += len(chunk)
                self.bytes_read += len(chunk)
                yield memoryview(chunk)
        if got != nbytes:
            raise SourceError(
                f"the transfer of {shard} from {self.repo_id} stopped after {got} of {nbytes} "
                "bytes; nothing was written: run the export again"
            )


@contextmanager
def _transport_errors(repo_id: str, what: str) -> Iterator[None]:
    import httpx

    try:
        yield
    except httpx.HTTPError as exc:
        raise SourceError(
            f"the transfer of {what} from {repo_id} failed ({type(exc).__name__}: {exc}); "
            "nothing was written: check the network or HF_ENDPOINT and run the export again"
        ) from exc


def open_hub_checkpoint(repo_id: str, revision: str | None = None) -> SourceCheckpoint:
    """The checkpoint ``repo_id`` at ``revision`` (default: main), read lazily.

    Raises:
        SourceError: a missing repository or revision, a gated or private one without a
            token that can read it, no safetensors weights, the Hub unreachable, or
            ``HF_HUB_OFFLINE`` with a snapshot that is not fully cached.
    """
    from huggingface_hub import HfApi, constants, hf_hub_download

    if constants.HF_HUB_OFFLINE:
        return _offline(repo_id, revision)
    with hub_errors(repo_id, revision):
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
        sha = str(info.sha)
        sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
        if INDEX_NAME not in sizes and SINGLE_NAME not in sizes:
            raise SourceError(
                f"{repo_id}@{sha[:12]} has neither {INDEX_NAME} nor {SINGLE_NAME}; export "
                "needs safetensors weights"
            )
        local = {
            name: Path(hf_hub_download(repo_id, name, revision=sha))
            for name in SMALL_FILES
            if name in sizes
        }
    if "config.json" not in local:
        raise SourceError(f"{repo_id}@{sha[:12]} has no config.json; it is not a model checkpoint")
    snapshot = local["config.json"].parent
    raw = local["config.json"].read_bytes()
    config = _json_object(raw, f"{repo_id}/config.json")
    shards = HubShards(repo_id, sha, sizes, snapshot)
    if INDEX_NAME in local:
        doc = _json_object(local[INDEX_NAME].read_bytes(), f"{repo_id}/{INDEX_NAME}")
        weight_map = {str(k): str(v) for k, v in dict(doc.get("weight_map") or {}).items()}
    else:
        with hub_errors(repo_id, sha):
            weight_map = dict.fromkeys(shards.header(SINGLE_NAME).tensors, SINGLE_NAME)
    return SourceCheckpoint(
        snapshot, config, sha256_bytes(raw), weight_map,
        shards=shards, repo_id=repo_id, revision=sha,
    )  # fmt: skip


def _offline(repo_id: str, revision: str | None) -> SourceCheckpoint:
    """A snapshot already complete in the cache, as a local checkpoint (no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        raise SourceError(
            f"HF_HUB_OFFLINE is set and {repo_id}"
            + (f"@{revision}" if revision else "")
            + " is not in the Hugging Face cache; unset HF_HUB_OFFLINE, or download it "
            "first (hf download)"
        ) from None
    try:
        ckpt = SourceCheckpoint.open(folder)
    except SourceError as exc:
        raise SourceError(
            f"HF_HUB_OFFLINE is set and the cached {repo_id} is incomplete ({exc}); unset "
            "HF_HUB_OFFLINE to read the missing parts from the Hub"
        ) from exc
    ckpt.repo_id, ckpt.revision = repo_id, folder.name
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
def hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """huggingface_hub and transport failures as one-line :class:`SourceError`."""
    import httpx
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = repo_id + (f"@{revision}" if revision else "")
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
        raise SourceError(
            f"{repo_id} was not found on the Hub (or it is private: set HF_TOKEN to a token "
            "that can read it); check the repo id, or pass a local directory"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise SourceError(f"the Hub failed reading {where} ({status}); retry later") from exc
    except httpx.HTTPError as exc:
        from huggingface_hub import constants

        raise SourceError(
            f"cannot reach the Hub at {constants.ENDPOINT} to read {where} "
            f"({type(exc).__name__}); check the network or HF_ENDPOINT"
        ) from exc
