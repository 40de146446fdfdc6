"""Which language a request drafts in, and which language set a batch drafts with.

Pure functions, no SGLang import. A request's language is
``custom_params["draft_lang"]`` (given by the client or filled in by detection on the
tokenizer manager). Bad values never fail a request: each distinct bad value is logged
once (up to :data:`MAX_REPORTED` of them) and treated as unknown, which drafts as the
default language. A batch drafts with the set of its most frequent languages that the
bank's active buffer holds (two by default), so every request of a two-language batch
drafts over its own map.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Container, Iterable

from fastmtp_export.maps.lang import normalize_lang

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


def language_counts(langs: Iterable[str | None], default: str) -> Counter[str]:
    """Requests per language; unknown requests count as ``default`` (they draft with it)."""
    return Counter(lang or default for lang in langs)


def draft_set(
    counts: Counter[str], *, current: frozenset[str], sets: Container[frozenset[str]]
) -> frozenset[str]:
    """The largest set of a batch's most frequent languages that is one of ``sets``.

    Ties prefer languages of ``current`` (no needless switch), then code order
    (deterministic). An empty batch keeps ``current``.
    """
    ranked = sorted(counts, key=lambda lang: (-counts[lang], lang not in current, lang))
    for n in range(len(ranked), 0, -1):
        if (langs := frozenset(ranked[:n])) in sets:
            return langs
    return current


def prefill_set(
    counts: Counter[str], *, current: frozenset[str], sets: Container[frozenset[str]]
) -> frozenset[str]:
    """The set for a prefill's draft-extend: ``current`` when it holds every new language.

    Only the new requests are in a prefill batch; keeping a set that already covers them
    drafts their first token over a superset of their maps and spares a switch back when
    the running requests draft next.
    """
    if set(counts) <= current:
        return current
    return draft_set(counts, current=current, sets=sets)
