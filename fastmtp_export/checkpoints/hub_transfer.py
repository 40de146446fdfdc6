"""HTTP with the Hub: byte ranges read with checks, timeouts and resume, and one-line errors.

A byte range is one GET whose reply must be a 206 for exactly that range; its body is
streamed as it arrives and never past the asked length. A cut, a timeout or a 5xx
resumes from the byte reached (:data:`RANGE_RETRIES` times, jittered exponential
backoff); a 4xx is final. Every request is bounded by
:func:`~.._util.remote.remote_timeout`.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .._util.remote import TIMEOUT_ENV, remote_timeout
from ..errors import SourceError
from . import safetensors_io

#: times one byte range is resumed after a cut, a timeout or a 5xx before giving up
RANGE_RETRIES = 5
#: seconds before the first resume (doubled each time, jittered x0.5-1.5)
RETRY_WAIT_ENV = "FASTMTP_HUB_RETRY_WAIT"
DEFAULT_RETRY_WAIT = 1.0
#: an error reply's body is read (for its message) only up to this size
MAX_ERROR_BODY = 1 << 20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """One file of one Hub commit, read by HTTP byte ranges."""

    repo_id: str
    revision: str
    name: str
    #: its size as ``model_info`` listed it (a reply's ``Content-Range`` must agree)
    size: int | None

    def chunks(self, begin: int, nbytes: int) -> Iterator[memoryview]:
        """``nbytes`` from ``begin``, in chunks of up to ``CHUNK_BYTES`` (plus one network
        read); a cut or timed-out transfer (or a 5xx) resumes from the byte reached.

        Raises:
            SourceError: a 4xx, a reply that is not the range asked for, or
                :data:`RANGE_RETRIES` resumes that all failed.
        """
        got = failures = 0
        while got < nbytes:
            try:
                for chunk in self._get(begin + got, nbytes - got):
                    got += len(chunk)
                    yield chunk
            except TransientError as exc:
                failures += 1
                if failures > RANGE_RETRIES:
                    raise SourceError(
                        f"the transfer of {self.name} from {self.repo_id} failed {failures} "
                        f"times, the last at byte {got} of {nbytes} ({exc}); nothing was "
                        "written: check the network or HF_ENDPOINT and run the export again"
                    ) from exc
                wait = retry_wait() * 2 ** (failures - 1) * random.uniform(0.5, 1.5)
                log.info(
                    "%s: %s at byte %d of %d; retry %d of %d in %.1f s",
                    self.name, exc, got, nbytes, failures, RANGE_RETRIES, wait,
                )  # fmt: skip
                time.sleep(wait)

    def _get(self, begin: int, nbytes: int) -> Iterator[memoryview]:
        """One GET of ``nbytes`` from ``begin``: the reply must be a 206 for exactly that
        range, and is streamed up to ``nbytes`` (a server that sends more is refused at
        the first piece past it; nothing beyond the range is ever yielded).

        Raises:
            TransientError: a cut connection, a timeout or a 5xx (worth resuming).
            SourceError: anything else.
        """
        import httpx
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session

        last = begin + nbytes - 1
        url = hf_hub_url(self.repo_id, self.name, revision=self.revision)
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
                self._check_reply(response, begin, last)
                for piece in response.iter_bytes():  # as received (tens of KiB)
                    if len(piece) > nbytes - got - len(buf):
                        raise SourceError(
                            f"the Hub sent more than the {nbytes} bytes asked for of {self.name} "
                            f"from {self.repo_id}; refused, nothing was written: HF_ENDPOINT "
                            "points at a server that does not answer byte ranges correctly"
                        )
                    buf += piece
                    if len(buf) >= want:
                        got += len(buf)
                        yield memoryview(buf)
                        buf = bytearray()
        except httpx.TransportError as exc:  # cut, refused, timed out
            cut = exc
        except httpx.HTTPError as exc:
            raise SourceError(
                f"the transfer of {self.name} from {self.repo_id} failed ({type(exc).__name__}: "
                f"{exc}); nothing was written: check HF_ENDPOINT and run the export again"
            ) from exc
        if buf:  # what arrived before a cut counts: the retry resumes after it
            got += len(buf)
            yield memoryview(buf)
        if cut is not None:
            raise TransientError(f"{type(cut).__name__}: {cut}".rstrip(": ")) from cut
        if got < nbytes:
            raise TransientError(f"the connection closed after {got} of {nbytes} bytes")

    def _check_reply(self, response: Any, begin: int, last: int) -> None:
        """A 206 whose ``Content-Range`` (and length, when given) is the range asked for."""
        status = response.status_code
        if status >= 500:
            raise TransientError(f"server error {status}")
        if status >= 400:
            from huggingface_hub.utils import hf_raise_for_status

            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) <= MAX_ERROR_BODY:
                response.read()  # the error body and headers name the cause
                with hub_errors(self.repo_id, self.revision):
                    hf_raise_for_status(response)
            raise SourceError(
                f"the Hub refused bytes of {self.name} from {self.repo_id} ({status}); check "
                "HF_TOKEN and HF_ENDPOINT"
            )
        if status != 206:
            raise SourceError(
                f"the Hub answered a byte-range request for {self.name} with the whole file "
                f"({status}); export needs range requests (HF_ENDPOINT points at a server "
                "without them?)"
            )
        asked = f"bytes {begin}-{last}/{self.size}"
        answered = response.headers.get("Content-Range", "")
        length = response.headers.get("Content-Length")
        if answered.strip() != asked or (length is not None and length != str(last - begin + 1)):
            raise SourceError(
                f"the Hub answered a request for {asked} of {self.name} from {self.repo_id} with "
                f"Content-Range {answered[:80]!r} and Content-Length {length}; refused, nothing "
                "was written: HF_ENDPOINT points at a server that does not answer byte ranges "
                "correctly"
            )


class TransientError(Exception):
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
