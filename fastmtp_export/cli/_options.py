"""Shared option types, defined once so every command reads the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of text.")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar or log lines on stderr.")
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing non-empty output directory.")
]
ArtifactArg = Annotated[
    Path,
    typer.Argument(help="An exported draft artifact directory.", metavar="DIR", show_default=False),
]

# how `train` reads its data: `record-hidden` must read it the same way, so both take these
MaxLengthOpt = Annotated[
    int,
    typer.Option(
        help="Truncate sequences to this many tokens (train and record-hidden must agree)."
    ),
]
DropCutOpt = Annotated[
    bool,
    typer.Option(
        "--drop-cut", help='Leave out answers cut at the length limit (finish_reason "length").'
    ),
]
MaxRepeatOpt = Annotated[
    float,
    typer.Option(
        help="Leave out answers whose share of repeated 4-grams exceeds this (loops); 1: off."
    ),
]
