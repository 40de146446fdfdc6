"""``fastmtp-export record-hidden``: the trunk's states, recorded from the serving engine.

For a model no single machine holds, ``train`` cannot run the frozen trunk itself;
the SGLang deployment that already serves it across many GPUs computes the states
instead. This command reads the training samples exactly as ``train`` does (same
tokenizer, ``--max-length`` and filters, same order), sends each sample's ids to the
server's native ``/generate`` with ``return_hidden_states`` (:mod:`.record_client`),
and stores the prompt positions' states [T, H] in the format of :mod:`.hidden_format`;
``train --hidden DIR`` then reads them instead of loading the trunk.

- **Resumable.** A shard is listed in the manifest only once written whole; re-running
  the same command skips listed shards (a listed shard whose file is gone or has
  another size is recorded again) and a killed run loses at most the shards it was
  filling. Another recording in ``--out`` (other model, data or options) is refused.
- **Retries and bounds** as ``distill``'s: connection errors, timeouts, 429 and 5xx are
  retried with jittered backoff, ``--retries`` attempts per sample; a request gets
  ``--timeout`` seconds; ``--concurrency`` requests are in flight. A sample that still
  fails leaves its shard for the next run; a server that cannot give the states at
  all (flags, another model) stops the run with one line.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainError
from .data import Sample, load_chat_tokenizer, read_samples
from .distill_reply import FailureStreak
from .filters import DataFilter
from .hidden_format import (
    DTYPES,
    MANIFEST_NAME,
    SourceIdentity,
    data_identity,
    is_recording_file,
    new_manifest,
    read_manifest,
    remove_partial,
    sample_options,
    shard_count,
    shard_name,
    shard_range,
    write_manifest,
    write_shard,
)
from .record_client import SGLangServer, check_server, store_dtype
from .source import refuse_overlap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordOptions:
    """Which samples (as ``train`` reads them), how they are stored, the client's mechanics."""

    max_length: int = 2048
    drop_cut: bool = False
    max_repeat: float = 1.0
    shard_records: int = 64
    dtype: str = "auto"  #: stored dtype: the server's, or float32 / bfloat16 / float16
    concurrency: int = 8
    retries: int = 5
    timeout: float = 600.0

    def data_filter(self) -> DataFilter:
        """The filters ``train`` applies with the same options."""
        return DataFilter(drop_cut=self.drop_cut, max_repeat=self.max_repeat)

    def check(self) -> None:
        problems = [
            (self.max_length < 3, "--max-length must be at least 3"),
            (self.shard_records < 1, "--shard-records must be at least 1"),
            (self.concurrency < 1, "--concurrency must be at least 1"),
            (self.retries < 1, "--retries must be at least 1"),
            (not 0 < self.timeout < math.inf, "--timeout must be a positive number of seconds"),
            (
                not (math.isfinite(self.max_repeat) and 0 <= self.max_repeat <= 1),
                "--max-repeat must be in [0, 1] (1: off)",
            ),
            (self.dtype not in ("auto", *DTYPES), "--dtype must be auto, " + ", ".join(DTYPES)),
        ]
        for bad, message in problems:
            if bad:
                raise TrainError(message)


@dataclass
class RecordResult:
    """What a run did."""

    out: Path
    samples: int
    shards: int
    already_done: int  #: samples in shards complete before this run
    recorded: int = 0  #: samples in shards this run completed
    dtype: str = ""
    failed: dict[int, str] = field(default_factory=dict)  #: sample index -> reason
    seconds: float = 0.0


def record_hidden(
    source: Path,
    data: list[Path],
    server: str,
    out: Path,
    opts: RecordOptions,
    *,
    api_key: str | None = None,
    show_progress: bool | None = None,
) -> RecordResult:
    """Record the states of every sample of ``data`` not yet in ``out``.

    Raises:
        TrainError: bad options or data, an ``out`` that holds something else, a server
            that cannot return SOURCE's states, or one that stops answering.
    """
    from .._util.atomic import run_lock

    opts.check()
    refuse_overlap(out, [source, *data])
    ident = SourceIdentity.of(source)
    samples, _stats = read_samples(
        data, load_chat_tokenizer(source), max_length=opts.max_length, keep=opts.data_filter()
    )
    files = data_identity(data)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):  # a second recorder into the same directory would race on shards
        existing = _existing(out)
        client = SGLangServer(server, retries=opts.retries, timeout=opts.timeout, api_key=api_key)
        started = time.perf_counter()
        try:
            longest = max(len(s.ids) for s in samples)
            probe = list(min(samples, key=lambda s: len(s.ids)).ids)
            about = check_server(client, source, ident, longest, probe)
            dtype = store_dtype(opts.dtype, about["dtype"], source)
            options = sample_options(opts.max_length, opts.data_filter())
            doc = new_manifest(
                ident, files, options, len(samples), dtype, opts.shard_records, about
            )
            if existing is not None:
                doc = _resume(out, existing, doc)
            write_manifest(out, doc)
            done = {e["file"] for e in doc["shards"]}
            todo = [
                k
                for k in range(shard_count(len(samples), opts.shard_records))
                if shard_name(k) not in done
            ]
            result = RecordResult(
                out, len(samples), shard_count(len(samples), opts.shard_records),
                sum(len(e["records"]) for e in doc["shards"]), dtype=dtype,
            )  # fmt: skip
            log.info(
                "recording %d sequences' hidden states (%d already in %s) from %s at "
                "concurrency %d, stored as %s",
                len(samples) - result.already_done, result.already_done, out, client.url,
                opts.concurrency, dtype,
            )  # fmt: skip
            _record(client, samples, todo, opts, doc, out, ident.hidden_size, result, show_progress)
        finally:
            client.close()
    result.seconds = time.perf_counter() - started
    return result


def _existing(out: Path) -> dict[str, Any] | None:
    """The manifest of a recording to resume in ``out``, None for a fresh one.

    Raises:
        TrainError: ``out`` holds files a recorder does not write.
    """
    removed = remove_partial(out)
    if removed:
        log.info("removed %d partial files an interrupted run left in %s", removed, out)
    others = sorted(p.name for p in out.iterdir() if not is_recording_file(p.name))
    if others:
        raise TrainError(
            f"--out {out} holds {others[0]}, which record-hidden does not write; pass an "
            "empty or new directory"
        )
    if not (out / MANIFEST_NAME).exists():
        return None
    return read_manifest(out)


def _resume(out: Path, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the shards of ``old`` that are still whole, after checking ``old`` is
    a recording of the same model, data and options."""
    for what, a, b in zip(_IDENTITY, _identity(old), _identity(new), strict=True):
        if a != b:
            raise TrainError(
                f"--out {out} holds a recording with other {what} ({_short(a)}, now "
                f"{_short(b)}); re-run the command it was started with, or pass another --out"
            )
    kept = []
    for entry in old["shards"]:
        path = out / entry["file"]
        if path.is_file() and path.stat().st_size == entry["bytes"]:
            kept.append(entry)
        else:
            log.warning("%s is missing or truncated; recording it again", path)
    return {**new, "shards": kept}


_IDENTITY = ("model", "tokenizer", "data", "sample options", "samples", "dtype",
             "--shard-records")  # fmt: skip


def _identity(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What must match for a run to resume a recording (paths may differ)."""
    src, data = doc.get("source", {}), doc.get("data", {})
    return (
        (src.get("config_sha256"), src.get("hidden_size"), src.get("vocab_size")),
        src.get("tokenizer_sha256"),
        [f.get("sha256") for f in data.get("files", [])],
        data.get("options"),
        data.get("samples"),
        doc.get("dtype"),
        doc.get("shard_records"),
    )


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _record(
    client: SGLangServer,
    samples: list[Sample],
    todo: list[int],
    opts: RecordOptions,
    doc: dict[str, Any],
    out: Path,
    hidden_size: int,
    result: RecordResult,
    show_progress: bool | None,
) -> None:
    """Record the shards ``todo``; each is written and listed as soon as it is whole."""
    from .._util.progress import progress

    store = DTYPES[doc["dtype"]]
    n = len(samples)
    indices = [i for k in todo for i in shard_range(k, opts.shard_records, n)]
    pending: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    broken: set[int] = set()  #: shards with a failed sample: not written this run
    inexact = False
    with progress(len(indices), "record-hidden", unit="seq", enabled=show_progress) as advance:
        streak = FailureStreak(opts.concurrency)
        for i, outcome in _results(client, samples, indices, hidden_size, opts.concurrency):
            advance(1)
            k = i // opts.shard_records
            if isinstance(outcome, TrainError):
                raise outcome  # the server cannot give these states at all
            if isinstance(outcome, BaseException):
                result.failed[i] = str(outcome)
                log.warning("sample %d failed: %s", i, outcome)
                broken.add(k)
                pending.pop(k, None)
                if streak.failed():
                    raise TrainError(
                        f"the server stopped answering usably, {streak.count} samples failed in a "
                        f"row (last: {outcome}); {result.recorded} newly recorded samples are "
                        f"kept in {out}; fix or restart it and re-run the same command"
                    )
                continue
            streak.answered()
            if k in broken:
                continue
            stored = outcome.to(store)  # [T, H]
            if not inexact and store != torch.float32 and not torch.equal(stored.float(), outcome):
                inexact = True
                log.warning(
                    "the server's states are not exact in %s (it computes in another dtype); "
                    "pass --dtype float32 to keep them exactly",
                    doc["dtype"],
                )
            shard = pending.setdefault(k, {})
            shard[i] = (torch.tensor(samples[i].ids, dtype=torch.int64), stored)
            if len(shard) == len(shard_range(k, opts.shard_records, n)):
                doc["shards"].append(write_shard(out, k, pending.pop(k)))
                write_manifest(out, doc)
                result.recorded += len(shard)
    if indices and len(result.failed) == len(indices):
        first = next(iter(result.failed.values()))
        raise TrainError(
            f"every request failed ({first}); check the server's log, then re-run the same "
            "command (recorded shards are kept)"
        )


def _results(
    client: SGLangServer,
    samples: list[Sample],
    indices: list[int],
    hidden_size: int,
    concurrency: int,
) -> Iterator[tuple[int, torch.Tensor | BaseException]]:
    """(sample index, its states or final error) in completion order, ``concurrency`` in
    flight, submitted in index order (so at most a few shards are being filled)."""
    stop = threading.Event()
    inflight: dict[Future[torch.Tensor], int] = {}
    queue = iter(indices)

    def submit(pool: ThreadPoolExecutor, i: int) -> None:
        inflight[pool.submit(client.hidden, list(samples[i].ids), hidden_size)] = i

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        try:
            for i in queue:
                submit(pool, i)
                if len(inflight) >= concurrency:
                    break
            while inflight:
                finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in sorted(finished, key=lambda f: inflight[f]):
                    i = inflight.pop(fut)
                    exc = fut.exception()
                    yield i, exc if exc is not None else fut.result()
                    nxt = next(queue, None)
                    if nxt is not None and not stop.is_set():
                        submit(pool, nxt)
        finally:
            stop.set()
            for fut in inflight:
                fut.cancel()
