"""Language of a text from its Unicode scripts: the dependency-free first pass.

Shared by the token-map builder (``--detect``) and, later, the SGLang plugin. The
script pass decides the FastMTP case (English vs Chinese) in about a microsecond and
never downloads anything: kana -> ja, hangul -> ko, Han without kana -> zh,
Cyrillic -> ru, Arabic -> ar, Devanagari -> hi, Greek -> el, Hebrew -> he, Thai -> th.
Latin script says nothing about *which* Latin language; the caller chooses the default
(``latin``), and a statistical detector can refine it later behind an extra.
"""

from __future__ import annotations

import re

#: (language, character class) in decision order; kana must precede Han (Japanese
#: text mixes kanji with kana, Chinese has none).
_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ja", re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")),
    ("ko", re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")),
    ("zh", re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")),
    ("ru", re.compile(r"[\u0400-\u04ff]")),
    ("ar", re.compile(r"[\u0600-\u06ff]")),
    ("hi", re.compile(r"[\u0900-\u097f]")),
    ("el", re.compile(r"[\u0370-\u03ff]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
    ("th", re.compile(r"[\u0e00-\u0e7f]")),
)
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")

#: detector outputs and user spellings folded onto map language codes.
_ALIASES = {"wuu": "zh", "yue": "zh", "cmn": "zh", "zho": "zh", "chi": "zh", "eng": "en"}
_CODE = re.compile(r"^[a-z]{2,3}$")


def normalize_lang(code: object) -> str | None:
    """``"zh-CN"``, ``"ZH"``, ``"yue"`` -> ``"zh"``; anything unusable -> ``None``.

    Never raises: a bad request value must degrade to "unknown", not fail a request.
    """
    if not isinstance(code, str):
        return None
    base = code.strip().lower().replace("_", "-").split("-", 1)[0]
    base = _ALIASES.get(base, base)
    return base if _CODE.match(base) else None


def script_language(text: str, *, latin: str | None = "en", min_share: float = 0.2) -> str | None:
    """The language implied by ``text``'s scripts, or ``None`` when it says nothing.

    A non-Latin script wins when its letters are at least ``min_share`` of all
    letters counted (so a Chinese prompt quoting English code stays ``zh``); otherwise
    Latin text returns ``latin``.
    """
    latin_count = len(_LATIN.findall(text))
    counts = [(lang, len(rx.findall(text))) for lang, rx in _SCRIPTS]
    # ja is decided by any kana at all; kanji alone would otherwise read as zh
    if counts[0][1]:
        han = counts[2][1]
        counts[0] = ("ja", counts[0][1] + han)
    total = latin_count + sum(n for _lang, n in counts)
    if total == 0:
        return None
    for lang, n in counts:
        if n and n / total >= min_share:
            return lang
    return latin if latin_count else None
