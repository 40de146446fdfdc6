"""Self-distilled JSONL corpora -> ``(language, text, crc32)`` records, read in chunks.

One record per line, either ``{"text": ...}`` or chat form ``{"messages": [...]}``.
In chat form only assistant turns count: self-distilled data is the model's own
output, and user turns would rank the *prompt* distribution, not what the draft must
predict. The language comes from a record field, from the file (``LANG=PATH``), or
from :class:`~fastmtp_export.lang.LanguageDetector`.

Every problem names ``file:line``. With ``skip_bad=True`` malformed lines and
records without text are counted and skipped instead of failing the build.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CorpusError
from .lang import normalize_lang


@dataclass(frozen=True)
class CorpusFile:
    """One corpus argument: a JSONL path, optionally with a language for all its records."""

    path: Path
    lang: str | None = None

    @classmethod
    def parse(cls, arg: str) -> CorpusFile:
        """``"data.jsonl"`` or ``"zh=data.jsonl"`` (every record of the file is ``zh``).

        An existing path containing ``=`` stays a path.
        """
        head, sep, tail = arg.partition("=")
        lang = normalize_lang(head) if sep and tail else None
        if lang is not None and not Path(arg).exists():
            return cls(Path(tail), lang)
        return cls(Path(arg))


@dataclass
class CorpusStats:
    """What reading skipped, reported in the build summary; mergeable across chunks."""

    records: int = 0
    skipped_bad: int = 0
    skipped_undetected: int = 0
    bytes_read: int = 0
    bad_examples: list[str] = field(default_factory=list)

    def merge(self, other: CorpusStats) -> None:
        self.records += other.records
        self.skipped_bad += other.skipped_bad
        self.skipped_undetected += other.skipped_undetected
        self.bytes_read += other.bytes_read
        self.bad_examples = sorted(self.bad_examples + other.bad_examples)[:5]


@dataclass(frozen=True)
class Chunk:
    """Lines of ``file`` whose first byte lies in ``[start, end)``: a unit of parallel work."""

    file: CorpusFile
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def plan_chunks(files: Sequence[CorpusFile], chunk_bytes: int) -> list[Chunk]:
    """Split every file into byte ranges of about ``chunk_bytes`` (line-aligned when read).

    Raises:
        CorpusError: a file is missing or unreadable.
    """
    chunks = []
    for cf in files:
        try:
            size = cf.path.stat().st_size
        except OSError as exc:
            raise CorpusError(
                f"cannot read corpus {cf.path}: {exc.strerror or exc}; pass a JSONL file"
            ) from exc
        if cf.path.is_dir():
            raise CorpusError(f"corpus {cf.path} is a directory; pass JSONL files")
        chunks += [Chunk(cf, s, min(s + chunk_bytes, size)) for s in range(0, size, chunk_bytes)]
    return chunks


@dataclass(frozen=True)
class ReadOptions:
    """How records become ``(language, text)``: picklable, so worker processes share it."""

    lang_field: str = "lang"
    text_field: str = "text"
    languages: tuple[str, ...] | None = None
    skip_bad: bool = False


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


def read_chunk(
    chunk: Chunk,
    opts: ReadOptions,
    stats: CorpusStats,
    detect: Callable[[str], str | None] | None = None,
) -> Iterator[tuple[str, str, int]]:
    """Yield ``(language, text, crc32 of the line)`` for every usable record of ``chunk``.

    Language precedence: the file's ``LANG=`` prefix, then ``record[lang_field]``,
    then ``detect(text)``. A record whose language cannot be determined fails the
    build (without ``detect``) or is skipped and counted (with it: detection can
    legitimately say nothing, e.g. for a record of digits). The crc32 lets the caller
    hold records out by content, independent of order and chunking.

    Raises:
        CorpusError: unreadable file, malformed line or record without text (unless
            ``skip_bad``), missing or unknown language label; named ``file:line``.
    """
    cf = chunk.file
    decode = json.JSONDecoder().decode
    allowed = set(opts.languages) if opts.languages else None
    try:
        fh = cf.path.open("rb")
    except OSError as exc:
        raise CorpusError(
            f"cannot read corpus {cf.path}: {exc.strerror or exc}; pass a JSONL file"
        ) from exc
    with fh:
        if chunk.start:  # start at the first line that begins inside the chunk
            fh.seek(chunk.start - 1)
            fh.readline()
        pos = fh.tell()
        index = -1  # line index within the chunk
        while pos < chunk.end:
            raw = fh.readline()
            if not raw:
                break
            pos += len(raw)
            index += 1
            stats.bytes_read += len(raw)
            if raw.isspace():
                continue
            try:
                record = decode(raw.decode("utf-8"))
                problem = None
            except ValueError as exc:  # also UnicodeDecodeError
                record, problem = None, f"is not valid JSON ({exc})"
            text = None if problem else record_text(record, opts.text_field)
            if problem is None and text is None:
                problem = (
                    f"has no text (expected a non-empty {opts.text_field!r} string or "
                    "'messages' with an assistant turn)"
                )
            if problem is not None:
                where = _where(chunk, index)
                if not opts.skip_bad:
                    raise CorpusError(f"{where} {problem}; fix the line or pass --skip-bad-records")
                stats.skipped_bad += 1
                if len(stats.bad_examples) < 5:
                    stats.bad_examples.append(f"{where} {problem}")
                continue
            assert text is not None
            lang = _language(cf, record, opts.lang_field, text, detect, chunk, index)
            if lang is None:
                stats.skipped_undetected += 1
                continue
            if allowed is not None and lang not in allowed:
                raise CorpusError(
                    f"{_where(chunk, index)} has language {lang!r}, not in --languages "
                    f"{','.join(sorted(allowed))}; add it or drop the record"
                )
            stats.records += 1
            yield lang, text, zlib.crc32(raw)


def _where(chunk: Chunk, index: int) -> str:
    """``file:line`` of line ``index`` of ``chunk`` (counts earlier lines only when needed)."""
    before = 0
    if chunk.start:
        with chunk.file.path.open("rb") as fh:
            head = fh.read(chunk.start)
        # a line straddling ``start`` belongs to the previous chunk: count it too
        before = head.count(b"\n") + (0 if head.endswith(b"\n") else 1)
    return f"{chunk.file.path}:{before + index + 1}"


def _language(
    cf: CorpusFile,
    record: dict[str, Any],
    lang_field: str,
    text: str,
    detect: Callable[[str], str | None] | None,
    chunk: Chunk,
    index: int,
) -> str | None:
    if cf.lang is not None:
        return cf.lang
    if lang_field in record:
        value = record[lang_field]
        lang = _normalize(value) if isinstance(value, str) else None
        if lang is None:
            raise CorpusError(
                f"{_where(chunk, index)} has an unusable language label {value!r} in "
                f"{lang_field!r}; use an ISO 639 code such as en or zh"
            )
        return lang
    if detect is not None:
        return detect(text)
    raise CorpusError(
        f"{_where(chunk, index)} has no {lang_field!r} field; pass --detect, set --lang-field, "
        "or give the file a language as LANG=PATH"
    )


#: labels repeat on every record: normalise each distinct string once
_normalize = functools.lru_cache(maxsize=1024)(normalize_lang)
