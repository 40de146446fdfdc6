"""Which language a request and a batch draft with: pure functions, no SGLang import.

A request's language is ``custom_params["draft_lang"]`` (given by the client or filled
in by detection on the tokenizer manager). Bad values never fail a request: each
distinct bad value is logged once and treated as unknown. A batch drafts with the
majority language of its requests, keeping the current one on ties so mixed batches
do not thrash the active buffers.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Sequence

from fastmtp_export.lang import normalize_lang

log = logging.getLogger(__name__)

#: the custom_params key clients set (OpenAI API: extra_body={"custom_params": {...}})
PARAM = "draft_lang"
_reported: set[str] = set()


def request_language(custom_params: object, supported: Collection[str]) -> str | None:
    """The supported language a request asks for, or ``None`` (unknown / absent / bad)."""
    if not isinstance(custom_params, dict) or PARAM not in custom_params:
        return None
    raw = custom_params[PARAM]
    lang = normalize_lang(raw)
    if lang is None or lang not in supported:
        key = repr(raw)[:80]
        if key not in _reported:
            _reported.add(key)
            log.warning(
                "fastmtp: draft_lang %s is not one of %s; drafting with the default language",
                key,
                sorted(supported),
            )
        return None
    return lang


def batch_language(langs: Sequence[str | None], *, current: str, default: str) -> str:
    """Majority language of a batch; unknown requests count as ``default``.

    Ties keep ``current`` when it is among the tied languages, else the smallest code
    (deterministic).
    """
    if not langs:
        return current
    counts = Counter(lang or default for lang in langs)
    top = max(counts.values())
    tied = sorted(lang for lang, n in counts.items() if n == top)
    return current if current in tied else tied[0]
