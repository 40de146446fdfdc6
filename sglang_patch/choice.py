"""Which language a request drafts in, and which language set a batch drafts with.

Pure functions, no SGLang import. A request's language is
``custom_params["draft_lang"]`` (given by the client or filled in by detection on the
tokenizer manager). Bad values never fail a request: each distinct bad value is logged
once (up to :data:`MAX_REPORTED` of them) and treated as unknown, which drafts as the
default language. Which set a batch drafts with is the bank's choice
(:mod:`fastmtp_export.maps.draft_sets`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from fastmtp_export.maps.draft_sets import draft_set, language_counts
from fastmtp_export.maps.lang import normalize_lang

__all__ = ["PARAM", "draft_set", "language_counts", "request_language"]

log = logging.getLogger(__name__)

#: the custom_params key clients set (OpenAI API: extra_body={"custom_params": {...}})
PARAM = "draft_lang"
#: distinct bad values logged; a client sending endless new ones cannot grow memory
MAX_REPORTED = 32
_reported: set[str] = set()


def request_language(custom_params: object, supported: Collection[str]) -> str | None:
    """The supported language a request asks for, or ``None`` (unknown / absent / bad)."""
    if not isinstance(custom_params, dict) or PARAM not in custom_params:
        return None
    raw = custom_params[PARAM]
    lang = normalize_lang(raw)
    if lang is None or lang not in supported:
        _report(repr(raw)[:80], supported)
        return None
    return lang


def _report(key: str, supported: Collection[str]) -> None:
    if key in _reported or len(_reported) > MAX_REPORTED:
        return
    _reported.add(key)
    if len(_reported) > MAX_REPORTED:
        log.warning("fastmtp: more bad draft_lang values; no longer reporting them")
        return
    log.warning(
        "fastmtp: draft_lang %s is not one of %s; drafting with the default language",
        key,
        sorted(supported),
    )
