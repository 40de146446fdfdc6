"""The union map: one static hot-token map that serves several languages at once.

Stock SGLang drafts every request with one ``--speculative-token-map``. A server with
mixed-language traffic is best served by a map that holds each language's hot tokens:
the languages' rankings interleaved by weight, so with weights ``w`` a language gets
about ``w[lang] * size`` of the rows (its top ones) and, at ``size = L * K`` with equal
weights, every language keeps exactly its own K-map's tokens. Ids shared between
languages are taken once, so the next language digs deeper into its ranking.

Weights split the *rows*, not the probability mass. Weighting by probability mass
(the corpus-wide ranking) is what starves the minority language in the first place:
with 90 % English text, the all-language ranking at 2K rows is mostly English tails.
The default is therefore equal weights; ``tokens`` weights by counted token share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..errors import TokenMapError
from .lang import normalize_lang
from .token_map import select_hot_ids

#: the name union maps use where a language code would go: ``freq_union_<N>.pt``
UNION = "union"
#: ``--weights`` values that are not an explicit ``LANG=W`` list
EQUAL = "equal"
TOKENS = "tokens"


def check_weights(spec: str) -> dict[str, float] | None:
    """The explicit ``LANG=W`` weights of ``spec`` (not normalized), ``None`` for
    ``equal``/``tokens``: the syntax, checkable before any language is known.

    Raises:
        TokenMapError: a malformed item, a repeated language, a weight that is not a
            positive finite number; one line naming the fix.
    """
    text = spec.strip()
    if text in (EQUAL, TOKENS):
        return None
    raw: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        lang = normalize_lang(name)
        if not sep or lang is None or not value.strip():
            raise TokenMapError(
                f"--weights {spec!r}: {item.strip()!r} is not LANG=WEIGHT; write e.g. "
                "en=0.7,zh=0.3, or equal, or tokens"
            )
        if lang in raw:
            raise TokenMapError(f"--weights {spec!r}: {lang!r} is given twice; give it once")
        try:
            w = float(value)
        except ValueError:
            w = math.nan
        if not (math.isfinite(w) and w > 0):
            raise TokenMapError(
                f"--weights {spec!r}: the weight of {lang!r} must be a positive number, "
                f"not {value.strip()!r}; leave a language out to exclude it"
            )
        raw[lang] = w
    return raw


def parse_weights(
    spec: str, languages: Sequence[str], tokens: Mapping[str, int]
) -> dict[str, float]:
    """``--weights`` -> normalized weights (summing to 1) of the union's languages.

    Args:
        spec: ``equal`` (every language alike), ``tokens`` (each language's share of the
            counted tokens), or ``en=0.7,zh=0.3``: only the named languages join the
            union, in those proportions (any positive scale).
        languages: the languages that have maps.
        tokens: counted tokens per language (for ``tokens``).

    Raises:
        TokenMapError: as :func:`check_weights`, or a named language without a map.
    """
    have = sorted(languages)
    if not have:
        raise TokenMapError("a union map needs at least one language map")
    raw = check_weights(spec)
    if raw is None:
        equal = spec.strip() == EQUAL
        raw = {lang: 1.0 if equal else float(tokens.get(lang, 0)) for lang in have}
        raw = {lang: w for lang, w in raw.items() if w > 0}
        if not raw:
            raise TokenMapError("--weights tokens: no language has counted tokens; use equal")
    for lang in raw:
        if lang not in have:
            raise TokenMapError(
                f"--weights {spec!r}: {lang!r} has no map; choose among {', '.join(have)}"
            )
    total = sum(raw.values())
    return {lang: raw[lang] / total for lang in sorted(raw)}


def interleave(
    rankings: Mapping[str, Sequence[int]], weights: Mapping[str, float], size: int
) -> list[int]:
    """Up to ``size`` distinct ids: the rankings merged so each language's share of rows
    follows its weight.

    Each next row goes to the language with the smallest ``(taken + 1) / weight`` (ties:
    language code), which takes its best id not yet in the union; an exhausted ranking
    drops out and the others share its rows. Deterministic.
    """
    order = sorted(lang for lang, w in weights.items() if w > 0)
    pos = dict.fromkeys(order, 0)
    taken = dict.fromkeys(order, 0)
    out: list[int] = []
    seen: set[int] = set()
    live = list(order)
    while live and len(out) < size:
        lang = min(live, key=lambda x: ((taken[x] + 1) / weights[x], x))
        ids, i = rankings[lang], pos[lang]
        while i < len(ids) and ids[i] in seen:
            i += 1
        if i == len(ids):
            live.remove(lang)
            continue
        seen.add(ids[i])
        out.append(ids[i])
        pos[lang] = i + 1
        taken[lang] += 1
    return out


def union_hot_ids(
    rankings: Mapping[str, Sequence[int]],
    weights: Mapping[str, float],
    size: int,
    *,
    required: Sequence[int] = (),
    fallback: Sequence[int] = (),
    vocab_size: int,
) -> list[int]:
    """The union map: :func:`interleave`, then the EOS ids forced in and a shortfall padded
    from ``fallback`` (the all-language ranking), exactly as a language map is.

    Raises:
        TokenMapError: ``size`` outside ``[1, vocab_size]`` or an id out of range.
    """
    if not 0 < size <= vocab_size:
        raise TokenMapError(
            f"union map size {size} must be between 1 and the vocab size {vocab_size}"
        )
    merged = interleave(rankings, weights, size)
    return select_hot_ids(merged, size, required=required, fallback=fallback, vocab_size=vocab_size)
