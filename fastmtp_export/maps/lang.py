"""Language of a text: a Unicode-script pass, then an optional statistical detector.

Shared by the token-map builder (``--detect``) and the SGLang plugin, so it must be
fast and offline. The script pass decides the FastMTP case (English vs Chinese) in
microseconds and downloads nothing: kana -> ja, hangul -> ko, Han without kana -> zh,
Cyrillic -> ru, Arabic -> ar, Devanagari -> hi, Greek -> el, Hebrew -> he, Thai -> th.
Latin script says nothing about *which* Latin language: the caller's default (``en``)
answers, or, with the ``[langdetect]`` extra, py3langid (BSD-3, model inside the
wheel) restricted to the configured Latin-script languages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FastMTPError

#: (label, code point ranges). Order is the decision order for non-Latin scripts.
_SCRIPT_RANGES: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("latin", ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F))),
    ("ja", ((0x3040, 0x30FF), (0x31F0, 0x31FF))),
    ("ko", ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F))),
    ("zh", ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))),
    ("ru", ((0x0400, 0x04FF),)),
    ("ar", ((0x0600, 0x06FF),)),
    ("hi", ((0x0900, 0x097F),)),
    ("el", ((0x0370, 0x03FF),)),
    ("he", ((0x0590, 0x05FF),)),
    ("th", ((0x0E00, 0x0E7F),)),
)
_LABELS = tuple(label for label, _r in _SCRIPT_RANGES)
_OTHER = len(_LABELS)
#: script languages the pass can return, i.e. every label but "latin"
SCRIPT_LANGUAGES = frozenset(_LABELS[1:])


def _interval_table() -> tuple[np.ndarray, np.ndarray]:
    spans = sorted((lo, hi, i) for i, (_l, rs) in enumerate(_SCRIPT_RANGES) for lo, hi in rs)
    edges: list[int] = []
    labels: list[int] = []
    for lo, hi, i in spans:
        if edges and edges[-1] == lo:
            labels[-1] = i
        else:
            edges.append(lo)
            labels.append(i)
        edges.append(hi + 1)
        labels.append(_OTHER)
    # interval k = [edges[k], edges[k+1]); code points below edges[0] -> index 0 (other)
    return np.asarray([0, *edges], dtype=np.uint32), np.asarray([_OTHER, *labels], dtype=np.intp)


_EDGES, _EDGE_LABELS = _interval_table()

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


def script_counts(text: str) -> dict[str, int]:
    """Letters per script label (``latin``, ``zh``, ``ja`` kana, ...); zero counts omitted."""
    # surrogatepass: a lone surrogate (possible in JSON input) is one code point of no
    # script instead of an exception; detection must never fail a request
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # [chars]
    idx = np.searchsorted(_EDGES, cps, side="right") - 1  # [chars] interval of each char
    n = np.bincount(_EDGE_LABELS[idx], minlength=_OTHER + 1)  # [labels + 1]
    return {label: int(n[i]) for i, label in enumerate(_LABELS) if n[i]}


def script_language(
    text: str, *, latin: str | None = "en", min_share: float = 0.2, max_chars: int = 4096
) -> str | None:
    """The language implied by ``text``'s scripts, or ``None`` when it says nothing.

    A non-Latin script wins when its letters are at least ``min_share`` of all
    letters (so a Chinese prompt quoting English code stays ``zh``); any kana makes
    Han text Japanese. Otherwise Latin text returns ``latin``. Only the last
    ``max_chars`` characters are read: the end of a prompt is what the model answers.
    """
    counts = script_counts(text[-max_chars:])
    if "ja" in counts:  # kanji count as Japanese once kana shows the text is Japanese
        counts["ja"] += counts.pop("zh", 0)
    total = sum(counts.values())
    if total == 0:
        return None
    for lang in _LABELS[1:]:
        if counts.get(lang, 0) / total >= min_share:
            return lang
    return latin if counts.get("latin") else None


class LanguageDetector:
    """Map a text to one of the configured languages, or ``None``.

    Args:
        languages: the languages that have maps; results outside it are ``None``.
        latin: answer for Latin-script text when no statistical detector decides
            (default: ``en`` when configured).
        statistical: refine Latin-script text with py3langid (``[langdetect]`` extra),
            restricted to the configured Latin-script languages. Only consulted when
            two or more such languages are configured.
        skip_unknown: with ``statistical``, leave out configured languages py3langid
            cannot tell (``py`` for code) instead of refusing: they are reached only by
            a client's ``draft_lang``.
    """

    def __init__(
        self,
        languages: Sequence[str],
        *,
        latin: str | None = None,
        statistical: bool = False,
        min_share: float = 0.2,
        skip_unknown: bool = False,
    ) -> None:
        self.languages = frozenset(languages)
        latin_langs = sorted(self.languages - SCRIPT_LANGUAGES)
        if latin is None and latin_langs:
            latin = "en" if "en" in latin_langs else latin_langs[0]
        self.latin = latin
        self.min_share = min_share
        self._stat: Any = None
        if statistical and len(latin_langs) > 1:
            self._stat = _py3langid(latin_langs, skip_unknown)

    def __call__(self, text: str) -> str | None:
        lang = script_language(text, latin="latin", min_share=self.min_share)
        if lang == "latin":
            lang = self.latin
            if self._stat is not None:
                tail = text[-2048:].encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                lang = normalize_lang(self._stat.classify(tail)[0])
        return lang if lang in self.languages else None


@dataclass(frozen=True)
class DetectorSpec:
    """A picklable recipe for a :class:`LanguageDetector` (worker processes build their own)."""

    languages: tuple[str, ...]
    statistical: bool = False

    def build(self) -> LanguageDetector:
        return LanguageDetector(self.languages, statistical=self.statistical)


def _py3langid(languages: Sequence[str], skip_unknown: bool = False) -> Any:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as exc:
        raise FastMTPError(
            "statistical language detection needs py3langid; install "
            "fastmtp-export[langdetect] or drop --statistical"
        ) from exc
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False)
    known = set(ident.nb_classes)
    unknown = sorted(set(languages) - known)
    if unknown and not skip_unknown:
        raise FastMTPError(f"py3langid cannot detect {unknown}; drop them or use LANG=PATH files")
    usable = [lang for lang in languages if lang in known]
    if len(usable) < 2:
        return None  # nothing to choose between: the script pass decides
    ident.set_languages(usable)
    return ident
