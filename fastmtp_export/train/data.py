"""Self-distilled JSONL -> token ids plus a loss mask, as the model sees them at serve time.

The same records ``token-map build`` reads: chat form ``{"messages": [...]}`` (what
``distill`` writes) or plain ``{"text": ...}``. A chat record is rendered with the
model's own chat template, the way the server renders a ``/v1/chat/completions``
request, and only its last assistant turn is trained (as ms-swift, which FastMTP
trains with, does by default): the head must predict the model's answers, not its
users. A plain record is trained whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TrainError
from ..maps.corpus import record_text
from ..maps.tokenizer import load_auto_tokenizer
from .filters import CUT, DataFilter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One training sequence: ids [T] and which positions are trained targets."""

    ids: tuple[int, ...]
    #: mask[i]: token i is a target (an assistant token, or any token of a text record)
    mask: tuple[bool, ...]


@dataclass
class DataStats:
    """What reading the data kept and dropped, for the log and ``training.json``."""

    records: int = 0
    samples: int = 0
    truncated: int = 0
    empty: int = 0
    #: dropped by the filters: cut at the length limit, degenerate repetition
    cut: int = 0
    repetitive: int = 0
    target_tokens: int = 0
    sha256: str = ""


def load_chat_tokenizer(model_dir: Path) -> Any:
    """The model's transformers tokenizer (chat template included)."""
    return load_auto_tokenizer(
        model_dir, fix="the source checkpoint must hold its tokenizer files (tokenizer.json)"
    )


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _chat(tokenizer: Any, messages: list[Any], where: str) -> tuple[list[int], int]:
    """(ids of the whole conversation, index of its last assistant turn's first token)."""
    last = max((i for i, m in enumerate(messages) if _role(m) == "assistant"), default=None)
    if last is None:
        raise TrainError(
            f"{where}: the chat record has no assistant turn to train on; distill an "
            "answer for it (fastmtp-export distill) or remove the line"
        )
    if getattr(tokenizer, "chat_template", None) is None:
        raise TrainError(
            f"{where}: chat records need the model's chat template, and its tokenizer has "
            'none; add chat_template to tokenizer_config.json or write {"text": ...} records'
        )
    convo = messages[: last + 1]
    full = tokenizer.apply_chat_template(convo, tokenize=False)
    prefix = tokenizer.apply_chat_template(convo[:-1], tokenize=False, add_generation_prompt=True)
    ids = _encode(tokenizer, full)
    head = _encode(tokenizer, prefix)
    start = 0
    while start < min(len(ids), len(head)) and ids[start] == head[start]:
        start += 1  # the template's assistant header is shared; training starts after it
    return ids, start


def _role(message: Any) -> str | None:
    return message.get("role") if isinstance(message, dict) else None


def read_samples(
    files: Sequence[Path],
    tokenizer: Any,
    *,
    max_length: int,
    keep: DataFilter | None = None,
) -> tuple[list[Sample], DataStats]:
    """Every usable record of ``files`` that ``keep`` keeps, as a :class:`Sample`.

    Raises:
        TrainError: a missing file, a malformed line, a record without text, or no
            trainable tokens at all; named ``file:line``.
    """
    keep = keep or DataFilter()
    stats = DataStats()
    digest = hashlib.sha256()
    samples: list[Sample] = []
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise TrainError(
                f"cannot read --data {path} ({exc.strerror}); check the path"
            ) from None
        digest.update(raw)
        for n, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise TrainError(
                    f"{where}: not valid JSON ({exc}); fix or remove the line"
                ) from None
            stats.records += 1
            if isinstance(record, dict) and isinstance(record.get("messages"), list):
                ids, start = _chat(tokenizer, record["messages"], where)
            elif (text := record_text(record)) is not None:
                ids, start = _encode(tokenizer, text), 0
            else:
                raise TrainError(
                    f'{where}: a record needs {{"messages": [...]}} or {{"text": ...}}'
                )
            if (why := keep.verdict(record, ids[start:])) is not None:
                if why == CUT:
                    stats.cut += 1
                else:
                    stats.repetitive += 1
                continue
            if len(ids) > max_length:
                ids, stats.truncated = ids[:max_length], stats.truncated + 1
            mask = tuple(i >= start for i in range(len(ids)))
            # step 1 predicts token t+2: a sequence needs a target at index >= 2
            if sum(mask[2:]) == 0:
                stats.empty += 1
                continue
            samples.append(Sample(tuple(ids), mask))
            stats.target_tokens += sum(mask)
    stats.samples, stats.sha256 = len(samples), digest.hexdigest()
    log.info(
        "read %d records: %d trained, %d dropped as cut (--drop-cut), %d as repetitive "
        "(--max-repeat), %d too short, %d truncated to --max-length",
        stats.records, stats.samples, stats.cut, stats.repetitive, stats.empty, stats.truncated,
    )  # fmt: skip
    if not samples:
        dropped = stats.cut + stats.repetitive
        raise TrainError(
            f"--data holds no trainable tokens ({stats.records} records, {stats.empty} too "
            f"short, {dropped} dropped by the filters); pass self-distilled answers "
            "(fastmtp-export distill writes them), or loosen --drop-cut / --max-repeat"
        )
    return samples, stats
