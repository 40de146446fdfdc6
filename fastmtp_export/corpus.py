"""Self-distilled JSONL corpora -> ``(language, text)`` samples, streamed.

One record per line, either ``{"text": ...}`` or chat form ``{"messages": [...]}``.
In chat form only assistant turns count: self-distilled data is the model's own
output, and user turns would rank the *prompt* distribution, not what the draft must
predict. The language comes from a record field, from the file (``LANG=PATH``), or
from :class:`~fastmtp_export.lang.LanguageDetector`.

Every problem names ``file:line``. With ``skip_bad=True`` malformed lines and
records without text are counted and skipped instead of failing the build.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CorpusError
from .lang import normalize_lang


@dataclass(frozen=True)
class CorpusFile:
    """One corpus argument: a JSONL path, optionally with a language for all its records."""

    path: Path
    lang: str | None = None

    @classmethod
    def parse(cls, arg: str) -> CorpusFile:
        """``"data.jsonl"`` or ``"zh=data.jsonl"`` (every record of the file is ``zh``)."""
        head, sep, tail = arg.partition("=")
        if sep and normalize_lang(head) == head.strip().lower() and not Path(arg).exists():
            return cls(Path(tail), head.strip().lower())
        return cls(Path(arg))


@dataclass
class CorpusStats:
    """What reading skipped, reported in the build summary."""

    records: int = 0
    skipped_bad: int = 0
    skipped_undetected: int = 0
    bytes_read: int = 0
    bad_examples: list[str] = field(default_factory=list)


def record_text(record: Any, text_field: str = "text") -> str | None:
    """The countable text of one record, or ``None`` when it has none.

    Chat records yield their assistant turns joined by newlines; OpenAI-style content
    part lists (``[{"type": "text", "text": ...}]``) are flattened.
    """
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list):
            return None
        parts = [
            _content(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "assistant"
        ]
        text = "\n".join(p for p in parts if p)
    else:
        text = _content(record.get(text_field))
    return text or None


def _content(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def read_samples(
    files: Sequence[CorpusFile],
    *,
    lang_field: str = "lang",
    text_field: str = "text",
    detect: Callable[[str], str | None] | None = None,
    languages: Sequence[str] | None = None,
    skip_bad: bool = False,
    stats: CorpusStats | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield ``(language, text)`` for every usable record, in file and line order.

    Language precedence: the file's ``LANG=`` prefix, then ``record[lang_field]``,
    then ``detect(text)``. A record whose language cannot be determined fails the
    build (without ``detect``) or is skipped and counted (with it: detection can
    legitimately say nothing, e.g. for a record of digits).

    Raises:
        CorpusError: unreadable file, malformed line or record without text (unless
            ``skip_bad``), missing or unknown language label.
    """
    stats = stats if stats is not None else CorpusStats()
    allowed = set(languages) if languages else None
    for cf in files:
        try:
            fh = cf.path.open("rb")
        except OSError as exc:
            raise CorpusError(
                f"cannot read corpus {cf.path}: {exc.strerror or exc}; pass a JSONL file"
            ) from exc
        with fh:
            for lineno, raw in enumerate(fh, 1):
                stats.bytes_read += len(raw)
                if not raw.strip():
                    continue
                where = f"{cf.path}:{lineno}"
                try:
                    record = json.loads(raw)
                    problem = None
                except ValueError as exc:
                    record, problem = None, f"is not valid JSON ({exc})"
                text = None if problem else record_text(record, text_field)
                if problem is None and text is None:
                    problem = (
                        f"has no text (expected a non-empty {text_field!r} string or "
                        "'messages' with an assistant turn)"
                    )
                if problem is not None:
                    if not skip_bad:
                        raise CorpusError(
                            f"{where} {problem}; fix the line or pass --skip-bad-records"
                        )
                    stats.skipped_bad += 1
                    if len(stats.bad_examples) < 5:
                        stats.bad_examples.append(f"{where} {problem}")
                    continue
                assert text is not None
                lang = _language(cf, record, lang_field, text, detect, where)
                if lang is None:
                    stats.skipped_undetected += 1
                    continue
                if allowed is not None and lang not in allowed:
                    raise CorpusError(
                        f"{where} has language {lang!r}, not in --languages "
                        f"{','.join(sorted(allowed))}; add it or drop the record"
                    )
                stats.records += 1
                yield lang, text


def _language(
    cf: CorpusFile,
    record: dict[str, Any],
    lang_field: str,
    text: str,
    detect: Callable[[str], str | None] | None,
    where: str,
) -> str | None:
    if cf.lang is not None:
        return cf.lang
    if lang_field in record:
        value = record[lang_field]
        lang = normalize_lang(value)
        if lang is None:
            raise CorpusError(
                f"{where} has an unusable language label {value!r} in {lang_field!r}; "
                "use an ISO 639 code such as en or zh"
            )
        return lang
    if detect is not None:
        return detect(text)
    raise CorpusError(
        f"{where} has no {lang_field!r} field; pass --detect, set --lang-field, "
        "or give the file a language as LANG=PATH"
    )
