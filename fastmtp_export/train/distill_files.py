"""What ``distill`` reads and appends to: the prompt file, and its own ``--out``.

Both are checked whole before the first request: every prompt line parses, and an
existing ``--out`` is this command's own output (every line a record it writes), so a
mistyped ``--out`` (a notes file, another corpus) is refused untouched instead of
having its last line cut or answers appended to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import TrainError
from ..maps.lang import normalize_lang

log = logging.getLogger(__name__)

#: how every record this command writes begins (``id`` is written first)
RECORD_START = b'{"id": '


class DistillError(TrainError):
    """The server cannot be used (unreachable, no model) or the prompts are unusable."""


@dataclass(frozen=True)
class Prompt:
    """One prompt: its id, the messages sent, and its language label if any."""

    id: str
    messages: list[dict[str, Any]]
    lang: str | None


def read_prompts(path: Path) -> list[Prompt]:
    """Every prompt of ``path`` (JSONL: ``text``/``prompt`` or ``messages``, optional ``lang``)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DistillError(f"cannot read prompts {path} ({exc.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise DistillError(f"{path} is not UTF-8 text; pass a JSONL prompt file") from None
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise DistillError(f"{where}: not valid JSON ({exc}); fix or remove the line") from None
        prompt = _prompt(doc, where)
        if prompt.id not in seen:  # a repeated prompt is answered once
            seen.add(prompt.id)
            prompts.append(prompt)
    if not prompts:
        raise DistillError(f"{path} holds no prompts; one JSON object per line")
    return prompts


def _prompt(doc: Any, where: str) -> Prompt:
    if not isinstance(doc, dict):
        raise DistillError(f"{where}: a prompt is a JSON object, not {type(doc).__name__}")
    messages = doc.get("messages")
    text = doc.get("text", doc.get("prompt"))
    if isinstance(messages, list) and messages:
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise DistillError(f"{where}: every message needs a role and content")
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]  # an existing answer is replaced by the model's own
        if not messages:
            raise DistillError(f"{where}: the record has no message before the answer")
    elif isinstance(text, str) and text.strip():
        messages = [{"role": "user", "content": text}]
    else:
        raise DistillError(
            f'{where}: a prompt needs {{"text": ...}}, {{"prompt": ...}} or {{"messages": [...]}}'
        )
    lang = doc.get("lang")
    if lang is not None and normalize_lang(lang) is None:
        raise DistillError(f"{where}: lang {lang!r} is not a language code (en, zh, ...)")
    ident = doc.get("id")
    if ident is None:
        ident = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
    return Prompt(str(ident), messages, normalize_lang(lang) if lang is not None else None)


@dataclass(frozen=True)
class OutState:
    """What an existing ``--out`` holds, read without changing it."""

    ids: set[str]  #: ids answered in it
    size: int  #: its size when read (0: absent)
    keep: int  #: bytes of whole records; a cut last line past them is dropped on append
    newline: bool = False  #: the last record lacks its newline (added before appending)


def record_problem(doc: Any) -> str | None:
    """Why ``doc`` is not a record :func:`distill` writes, or None when it is one."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    if not isinstance(doc.get("id"), str):
        return 'no string "id"'
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        return 'no "messages" list'
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return "a message without a role"
    if messages[-1]["role"] != "assistant" or not isinstance(messages[-1].get("content"), str):
        return "the last message is not an assistant answer"
    if not isinstance(doc.get("finish_reason"), str):
        return 'no string "finish_reason"'
    if "lang" in doc and not isinstance(doc["lang"], str):
        return '"lang" is not a string'
    return None


def read_out(out: Path) -> OutState:
    """The ids already in ``out``, after checking every line is a distill record.

    Nothing is written here: a file that is not this command's output is refused as it
    is. A last line without its newline is a record cut by a kill when it begins as
    every record does (``{"id": ``) and does not parse; it is dropped later, on append.

    Raises:
        DistillError: ``out`` cannot be read, or a line is not a distill record.
    """
    refuse = "pass another --out (distill appends to its own output only)"
    if not out.exists():
        return OutState(set(), 0, 0)
    ids: set[str] = set()
    pos = 0
    try:
        with out.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            for n, raw in enumerate(fh, 1):
                whole = raw.endswith(b"\n")
                if raw.strip():  # blank lines are kept as they are
                    try:
                        doc = json.loads(raw.decode("utf-8"))
                        why = record_problem(doc)
                    except ValueError:  # UnicodeDecodeError included
                        doc, why = None, "not UTF-8 JSON"
                    if why is not None:
                        if not whole and (
                            raw.startswith(RECORD_START) or RECORD_START.startswith(raw)
                        ):
                            return OutState(ids, size, pos)  # a kill cut the last record
                        raise DistillError(f"{out}:{n} is not a distill record ({why}); {refuse}")
                    ids.add(doc["id"])
                pos += len(raw)
                if not whole:
                    return OutState(ids, size, pos, newline=True)
    except OSError as exc:
        raise DistillError(f"cannot read --out {out} ({exc.strerror}); {refuse}") from None
    return OutState(ids, size, pos)


def open_for_append(out: Path, state: OutState) -> BinaryIO:
    """``out`` opened to append, its cut last line dropped (checked unchanged since read)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fh = out.open("ab")
    try:
        if os.fstat(fh.fileno()).st_size != state.size:
            raise DistillError(
                f"{out} changed while it was read (another distill writing it?); re-run the "
                "command when that one has finished"
            )
        if state.keep < state.size:
            fh.truncate(state.keep)  # our own output: the partial record of a killed run
            log.warning("%s: dropped a partial last line (an interrupted run)", out)
        if state.newline:
            fh.write(b"\n")
    except BaseException:
        fh.close()
        raise
    return fh
