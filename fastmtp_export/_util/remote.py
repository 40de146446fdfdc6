"""What a remote server (the Hub, a mirror, a proxy) says is checked before it is used.

``HF_ENDPOINT`` may point anywhere: a broken mirror or a hostile proxy. A commit id it
returns becomes a path component of the huggingface_hub cache (``refs/<rev>``,
``snapshots/<sha>``), and a file name it lists is joined to a local folder, so both are
checked here, by the export and by the SGLang plugin alike. Every request made on a
remote's behalf has a bounded connect and read time (:func:`remote_timeout`).
"""

from __future__ import annotations

import os
import re

from ..errors import SourceError
from .confine import plain_file_name

#: a full git commit id, as the Hub returns it (lower-case hex, 40 digits)
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")

#: seconds to connect and seconds between two reads of one Hub or distill request
TIMEOUT_ENV = "FASTMTP_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 30.0


def checked_commit(sha: object, where: str) -> str:
    """``sha`` when it is a 40-hex-digit commit id.

    Raises:
        SourceError: anything else (a path, an empty value), naming ``where`` it came from.
    """
    if isinstance(sha, str) and COMMIT_SHA.match(sha):
        return sha
    raise SourceError(
        f"{where} answered with commit id {str(sha)[:80]!r}, which is not a 40-digit hex "
        "commit; HF_ENDPOINT points at a server that is not a Hugging Face Hub"
    )


def checked_remote_name(name: object, where: str) -> str:
    """``name`` when it is one plain file name (no ``/``, ``..``, absolute path or NUL).

    Raises:
        SourceError: naming the file and ``where`` it was listed.
    """
    try:
        if not isinstance(name, str):
            raise ValueError(f"file name {name!r} is not a string")
        return plain_file_name(name)
    except ValueError as exc:
        raise SourceError(f"{where} lists an unusable file: {exc}") from None


def remote_timeout() -> float:
    """Seconds to connect and to wait between reads (``FASTMTP_HUB_TIMEOUT``, default 30).

    Raises:
        SourceError: the variable is not a positive number.
    """
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
        if not value > 0 or value == float("inf"):
            raise ValueError
    except ValueError:
        raise SourceError(
            f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds; set it to e.g. 30"
        ) from None
    return value
