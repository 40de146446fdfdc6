"""``fastmtp-export demo``: the whole pipeline on an embedded tiny MiMo checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ._errors import handle_errors
from ._options import JsonOpt
from ._output import emit_json, setup_logging


def default_cache() -> Path:
    """``$FASTMTP_CACHE``, else ``$XDG_CACHE_HOME/fastmtp-export``, else ``~/.cache/...``."""
    if env := os.environ.get("FASTMTP_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fastmtp-export"


@handle_errors
def demo(
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Where to build the demo checkpoint [default: ~/.cache/fastmtp-export]."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Build a deterministic tiny MiMo checkpoint, export its MTP head, inspect it.

    The checkpoint has MiMo's real vocabulary (151680) and tensor layout with a tiny
    hidden size, sharded in two files. Ends with the SGLang command that would serve it.
    """
    import time

    from ..artifact import inspect_artifact
    from ..atomic import atomic_directory
    from ..export import export_draft
    from ..synthetic import DEMO, mimo_config, write_synthetic_mimo
    from .inspect import render

    setup_logging(quiet=json_out)
    cache = (cache_dir or default_cache()).absolute()
    source, draft = cache / "demo-mimo-tiny", cache / "demo-mimo-tiny-draft"
    start = time.perf_counter()
    with atomic_directory(source, overwrite=True) as tmp:
        write_synthetic_mimo(tmp, mimo_config(DEMO, training_keys=True), seed=0, num_shards=2)
    built = time.perf_counter() - start
    result = export_draft(source, draft, overwrite=True, progress=False)
    report = inspect_artifact(draft)
    report.raise_for_problems()
    if json_out:
        emit_json(
            {
                **report.to_json(),
                "source_build_seconds": round(built, 3),
                "export_seconds": round(result.seconds, 3),
            }
        )
        return
    typer.echo(f"1. built a tiny MiMo checkpoint in {built:.2f} s: {source}")
    typer.echo(f"2. exported its MTP head in {result.seconds:.2f} s: {draft}")
    typer.echo(
        "3. inspected it (the demo base has no tokenizer: to serve for real, export a "
        "MiMo-7B-RL or FastMTP checkpoint the same way):\n"
    )
    typer.echo(render(report))
