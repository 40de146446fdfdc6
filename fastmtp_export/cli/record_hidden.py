"""``fastmtp-export record-hidden SOURCE --data FILE --server URL --out DIR``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from ._errors import fail, handle_errors
from ._options import DropCutOpt, JsonOpt, MaxLengthOpt, MaxRepeatOpt, QuietOpt
from ._output import emit_json, setup_logging
from .distill import API_KEY_ENV

log = logging.getLogger("fastmtp_export.cli")

EXAMPLES = """Examples:

\b
  python -m sglang.launch_server --model-path ./DeepSeek-V3 --tp 16 --port 30000 \\
      --enable-return-hidden-states --disable-radix-cache --chunked-prefill-size -1 &
  fastmtp-export record-hidden ./DeepSeek-V3 --data distilled.jsonl \\
      --server http://127.0.0.1:30000 --out ./v3-hidden --concurrency 32
  fastmtp-export train ./DeepSeek-V3 --data distilled.jsonl --hidden ./v3-hidden --out ./v3-head
"""


@handle_errors
def record_hidden(
    source: Annotated[
        Path,
        typer.Argument(
            help="Local directory of the served model (config.json, tokenizer); its weights "
            "are not read.",
            metavar="SOURCE",
            show_default=False,
        ),
    ],
    data: Annotated[
        list[Path],
        typer.Option(
            help="The training JSONL, as passed to train; repeatable, same order.",
            metavar="FILE",
            show_default=False,
        ),
    ],
    server: Annotated[
        str,
        typer.Option(
            help="SGLang server of SOURCE, launched with --enable-return-hidden-states "
            "--disable-radix-cache --chunked-prefill-size -1.",
            metavar="URL",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Directory of the recording (resumed when it holds one).",
            metavar="DIR",
            show_default=False,
        ),
    ],  # fmt: skip
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 8,
    max_length: MaxLengthOpt = 2048,
    drop_cut: DropCutOpt = False,
    max_repeat: MaxRepeatOpt = 1.0,
    shard_records: Annotated[
        int,
        typer.Option(
            help="Sequences per shard file (a killed run loses the shards it was filling)."
        ),
    ] = 64,
    dtype: Annotated[
        str,
        typer.Option(help="Stored dtype: auto (the server's), float32, bfloat16, float16."),
    ] = "auto",
    retries: Annotated[
        int, typer.Option(help="Attempts per sequence on connection errors, timeouts, 429, 5xx.")
    ] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds a request may take in all.")] = 600.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            help=f"Bearer token for the server [default: ${API_KEY_ENV}].", show_default=False
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Record SOURCE's hidden states on the training data from its SGLang server.

    For models no single machine holds: the serving engine computes the frozen trunk's
    final-normed hidden states, and `train --hidden DIR` reads them instead of loading
    the trunk. The data is read exactly as train reads it (same tokenizer, --max-length
    and filters). Re-running the same command resumes; failed sequences exit 1.
    """
    from ..train.record_hidden import RecordOptions
    from ..train.record_hidden import record_hidden as run

    setup_logging(quiet)
    opts = RecordOptions(
        max_length=max_length, drop_cut=drop_cut, max_repeat=max_repeat,
        shard_records=shard_records, dtype=dtype, concurrency=concurrency, retries=retries,
        timeout=timeout,
    )  # fmt: skip
    result = run(
        source, data, server, out, opts, api_key=api_key or os.environ.get(API_KEY_ENV) or None,
        show_progress=False if quiet else None,
    )  # fmt: skip
    summary = {
        "out": str(result.out),
        "samples": result.samples,
        "shards": result.shards,
        "already_done": result.already_done,
        "recorded": result.recorded,
        "failed": len(result.failed),
        "dtype": result.dtype,
        "seconds": round(result.seconds, 3),
    }
    if json_out:
        emit_json({**summary, "failures": {str(k): v for k, v in result.failed.items()}})
    else:
        log.info(
            "recorded %d sequences (%d already done) in %.1f s, %s",
            result.recorded, result.already_done, result.seconds, result.dtype,
        )  # fmt: skip
        if not result.failed:
            typer.echo(str(result.out))  # stdout names the recording only when it is whole
    if result.failed:
        first, why = next(iter(result.failed.items()))
        raise fail(
            f"{len(result.failed)} of {result.samples} sequences failed (first: sample {first}: "
            f"{why}); re-run the same command to retry them"
        )
