"""One chat completion reply, read with bounds and checked before it becomes an answer.

An OpenAI-compatible server can answer 200 with an error object (vLLM and SGLang do),
with a malformed body, or with far more bytes than any answer of ``--max-tokens``
tokens can take: none of these may be written into the training data, and none may
hold the client's memory or time unbounded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import httpx

#: a reply body may hold this much beyond ``MAX_BODY_PER_TOKEN`` per --max-tokens token
MAX_BODY_BASE = 4 << 20
#: bytes a token's text can take in JSON: a few \\uXXXX escapes, with room to spare
MAX_BODY_PER_TOKEN = 1024
#: the cap of a ``/v1/models`` reply and of an error reply's body
MAX_SMALL_BODY = 4 << 20


class RetryableError(Exception):
    """A failure worth another attempt (connection, timeout, 429, 5xx, an error object)."""


class BadReplyError(Exception):
    """A reply that is no answer and would not become one on retry (shape, size)."""


@dataclass(frozen=True)
class Answer:
    """What one chat completion says: the answer text, why it ended, its length."""

    content: str
    finish_reason: str
    completion_tokens: int


def body_cap(max_tokens: int) -> int:
    """Bytes one chat completion reply may take before it is abandoned."""
    return MAX_BODY_BASE + MAX_BODY_PER_TOKEN * max_tokens


def parse_answer(body: bytes) -> Answer:
    """The answer in one chat completion reply body.

    Raises:
        RetryableError: the body is an error object (``{"object": "error", ...}`` as
            vLLM and SGLang send, or ``{"error": ...}``), whatever the HTTP status.
        BadReplyError: anything else without a string ``choices[0].message.content``.
    """
    try:
        doc = json.loads(body.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        raise BadReplyError(f"the reply is not JSON: {snippet(body)}") from None
    if isinstance(doc, dict) and (
        doc.get("object") == "error" or ("error" in doc and "choices" not in doc)
    ):
        err = doc.get("error", doc)
        message = err.get("message", err) if isinstance(err, dict) else err
        raise RetryableError(f"the server answered with an error: {snippet(str(message))}")
    try:
        choice = doc["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise BadReplyError(
            f"the reply is not a chat completion (no choices[0].message.content): {snippet(body)}"
        ) from None
    if not isinstance(content, str):
        raise BadReplyError(
            f"choices[0].message.content is {snippet(json.dumps(content))}, not a string"
        )
    reason = choice.get("finish_reason")
    usage = doc.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return Answer(
        content,
        reason if isinstance(reason, str) else "",
        tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 else 0,
    )


def snippet(text: str | bytes, limit: int = 200) -> str:
    """The start of ``text`` on one line (for a message)."""
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", errors="replace")
    return " ".join(text.split())[:limit]


def read_capped(r: httpx.Response, cap: int, deadline: float, what: str) -> bytes:
    """The body of ``r``, read as it arrives; abandoned past ``cap`` bytes or ``deadline``.

    Raises:
        BadReplyError: the body is larger than ``cap`` (announced or as read).
        RetryableError: the body is still arriving at ``deadline`` (``time.monotonic()``).
    """
    length = r.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise BadReplyError(f"the reply is {int(length):,} bytes, over the {cap:,}-byte cap {what}")
    body = bytearray()
    for chunk in r.iter_bytes():
        body += chunk
        if len(body) > cap:
            raise BadReplyError(f"the reply passed the {cap:,}-byte cap {what}")
        if time.monotonic() > deadline:
            raise RetryableError("the reply was still arriving when its time ran out")
    return bytes(body)


def error_head(r: httpx.Response) -> str:
    """The start of an error reply's body (read no further)."""
    body = b""
    for chunk in r.iter_bytes():
        body += chunk
        if len(body) >= 1024:
            break
    return snippet(body)


T = TypeVar("T")


def why(exc: BaseException) -> str:
    """An exception as one bounded line, for messages."""
    return snippet(f"{type(exc).__name__}: {exc}".strip().rstrip(":"))


def post_retried(
    http: httpx.Client,
    url: str,
    body: dict[str, Any],
    *,
    retries: int,
    timeout: float,
    cap: int,
    limits: str,
    refuse: Callable[[int, str], Exception],
    parse: Callable[[bytes], T],
) -> T:
    """POST ``body`` as JSON to ``url`` and ``parse`` the reply, read within ``cap`` bytes
    and ``timeout`` seconds (``limits`` says why in the size error).

    Connection errors, timeouts, 429, 5xx, and a :class:`RetryableError` from ``parse``
    (an error object sent with 200) are retried with jittered exponential backoff,
    ``retries`` attempts; another 4xx raises ``refuse(status, head of the body)``.
    """
    import httpx
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

    @retry(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_attempt(retries),
        wait=wait_random_exponential(multiplier=0.5, max=30),
        reraise=True,
    )
    def post() -> T:
        deadline = time.monotonic() + timeout
        try:
            with http.stream("POST", url, json=body) as r:
                if r.status_code == 429 or r.status_code >= 500:
                    raise RetryableError(f"HTTP {r.status_code}: {error_head(r)}")
                if r.status_code >= 400:
                    raise refuse(r.status_code, error_head(r))
                data = read_capped(r, cap, deadline, limits)
        except httpx.HTTPError as exc:
            raise RetryableError(why(exc)) from None
        return parse(data)

    return post()


#: consecutive failures, beyond the requests in flight, that mean the server is gone
DEAD_AFTER = 3


class FailureStreak:
    """Failures in a row of a client with ``concurrency`` requests in flight: a dead
    server fails everything, so :meth:`failed` says when to stop (distill, record-hidden)."""

    def __init__(self, concurrency: int) -> None:
        self.limit = DEAD_AFTER + concurrency
        self.count = 0

    def failed(self) -> bool:
        """Count one failure; ``True`` once the server must be given up."""
        self.count += 1
        return self.count >= self.limit

    def answered(self) -> None:
        self.count = 0
