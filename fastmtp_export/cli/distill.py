"""``fastmtp-export distill PROMPTS --server URL --out FILE``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from ._errors import fail, handle_errors
from ._options import JsonOpt, QuietOpt
from ._output import emit_json, setup_logging

log = logging.getLogger("fastmtp_export.cli")

#: read when --api-key is not given (the name OpenAI clients use)
API_KEY_ENV = "OPENAI_API_KEY"

EXAMPLES = """Examples:

\b
  python -m sglang.launch_server --model-path ./MiMo-7B-RL --port 30000 &
  fastmtp-export distill prompts.jsonl --server http://127.0.0.1:30000 --out distilled.jsonl
  fastmtp-export distill zh_prompts.jsonl --server http://gpu-box:30000 --out zh.jsonl \\
      --concurrency 64 --max-tokens 4096
  fastmtp-export distill prompts.jsonl --server http://127.0.0.1:30000 --out d.jsonl --temperature 0
"""


@handle_errors
def distill(
    prompts: Annotated[
        Path,
        typer.Argument(
            help='Prompt JSONL: {"text": ...} or {"messages": [...]}, optional "lang" and "id".',
            metavar="PROMPTS",
            show_default=False,
        ),
    ],
    server: Annotated[
        str,
        typer.Option(
            help="OpenAI-compatible server serving the base model (SGLang, vLLM).",
            metavar="URL",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Chat JSONL to append to (resumed; a file distill did not write is refused).",
            metavar="FILE",
            show_default=False,
        ),
    ],  # fmt: skip
    model: Annotated[
        str | None, typer.Option(help="Served model name [default: the server's first].")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 8,
    max_tokens: Annotated[int, typer.Option(help="Answer length limit, in tokens.")] = 1024,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature (FastMTP: 0.6); 0 is greedy.")
    ] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (FastMTP: 0.95).")] = 0.95,
    top_k: Annotated[int, typer.Option(help="Top-k sampling (FastMTP: 20); 0 turns it off.")] = 20,
    seed: Annotated[int | None, typer.Option(help="Sampling seed sent to the server.")] = None,
    retries: Annotated[
        int,
        typer.Option(
            help="Attempts per prompt on connection errors, timeouts, 429, 5xx, error replies."
        ),
    ] = 5,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a request may take in all; connecting waits at most "
            "$FASTMTP_HUB_TIMEOUT (default 30) of them."
        ),
    ] = 600.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            help=f"Bearer token for the server [default: ${API_KEY_ENV}].", show_default=False
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Answer PROMPTS with the base model itself: self-distilled data for train and token-map build.

    Appends one chat record per answered prompt to FILE as it finishes; re-running the
    same command skips prompts already there. Failed prompts are listed and exit 1.
    """
    from ..train.distill import DistillOptions
    from ..train.distill import distill as run

    setup_logging(quiet)
    opts = DistillOptions(
        model=model, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
        seed=seed, concurrency=concurrency, retries=retries, timeout=timeout,
    )  # fmt: skip
    result = run(
        prompts, server, out, opts, api_key=api_key or os.environ.get(API_KEY_ENV) or None,
        show_progress=False if quiet else None,
    )  # fmt: skip
    summary = {
        "out": str(result.out),
        "prompts": result.prompts,
        "already_done": result.already_done,
        "written": result.written,
        "failed": len(result.failed),
        "truncated": result.truncated,
        "completion_tokens": result.completion_tokens,
        "seconds": round(result.seconds, 3),
    }
    if json_out:
        emit_json({**summary, "failures": result.failed})
    else:
        log.info(
            "answered %d prompts (%d already done, %d cut at --max-tokens), %d tokens in %.1f s",
            result.written, result.already_done, result.truncated, result.completion_tokens,
            result.seconds,
        )  # fmt: skip
        typer.echo(str(result.out))
    if result.failed:
        first_id, why = next(iter(result.failed.items()))
        raise fail(
            f"{len(result.failed)} of {result.prompts} prompts failed (first: {first_id}: {why}); "
            "re-run the same command to retry them"
        )
