"""``fastmtp-export eval DIR --base BASE --prompts FILE``: acceptance before deploying."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._util.units import percent
from ..errors import FastMTPError
from ._errors import fail, handle_errors
from ._options import ArtifactArg, JsonOpt, QuietOpt
from ._output import emit_json, setup_logging

if TYPE_CHECKING:
    from ..artifact.eval_record import EvaluationInfo

log = logging.getLogger("fastmtp_export.cli")

EXAMPLES = """Examples:

\b
  fastmtp-export eval ./mimo-fastmtp-draft --base ./MiMo-7B-RL --prompts prompts.jsonl
  fastmtp-export eval ./draft --base ./MiMo-7B-RL --prompts p.jsonl --vocab full \\
      --vocab auto --vocab en --output eval.json --write-manifest
"""


def render(info: EvaluationInfo) -> str:
    """The results table: one row per vocabulary mode and language, then losslessness."""
    k = info.k
    head = ["vocab", "lang", "prompts", "tokens", "tau"]
    head += [f"acc@{p}" for p in range(1, k + 1)]
    head += [f"cond@{p}" for p in range(2, k + 1)] + ["draft tok/s"]
    rows = [head]
    for mode, result in info.modes.items():
        for lang, st in [("all", result.all), *result.languages.items()]:
            rows.append([
                mode, lang, str(st.prompts), str(st.output_tokens),
                "-" if st.accept_length is None else f"{st.accept_length:.2f}",
                *(percent(v) for v in st.position_acceptance),
                *(percent(v) for v in st.conditional_acceptance[1:]),
                "-" if st.draft_tokens_per_s is None else f"{st.draft_tokens_per_s:,.0f}",
            ])  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    n = info.prompts * len(info.modes)
    if info.lossless:
        lines.append(f"lossless: all {n} speculative outputs equal greedy decoding")
    else:
        lines.append(f"NOT lossless: {len(info.mismatches)} of {n} outputs differ from greedy")
        lines += [
            f"  line {m.line}, vocab {m.vocab}: first difference at token {m.position}"
            for m in info.mismatches[:10]
        ]
    lines.append(
        f"K={k}, max {info.max_new_tokens} new tokens, {info.prompts} prompts, "
        f"{info.device}, {info.dtype}"
    )
    return "\n".join(lines)


@handle_errors
def eval_(
    artifact: ArtifactArg,
    base: Annotated[
        Path,
        typer.Option(
            help="The base (target) model directory the draft was exported from.",
            metavar="DIR",
            show_default=False,
        ),
    ],
    prompts: Annotated[
        Path,
        typer.Option(
            help="JSONL prompts: {'prompt' | 'messages' | 'input_ids', 'lang'?} per line.",
            metavar="FILE",
            show_default=False,
        ),
    ],
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="Tokenizer directory [default: --base].", metavar="DIR"),
    ] = None,
    vocab: Annotated[
        list[str] | None,
        typer.Option(
            help="Draft vocabulary: full, auto (each prompt's language map, as sglang_patch), "
            "LANG (one static map, as stock SGLang) or union (the artifact's union map, "
            "as stock SGLang). Repeatable [default: full, and auto and union when shipped].",
            metavar="MODE",
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Draft tokens per verify step.")] = 3,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt.")] = 128,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N prompts.")] = None,
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu or cuda[:N].")] = (
        "auto"
    ),
    dtype: Annotated[
        str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16.")
    ] = "auto",
    output: Annotated[
        Path | None,
        typer.Option(
            help="Write the results as JSON here, and the acceptance chart next to it (.png).",
            metavar="FILE.json",
        ),
    ] = None,
    write_manifest: Annotated[
        bool,
        typer.Option(
            "--write-manifest",
            help="Store the results in the artifact's fastmtp.json under 'evaluation'.",
        ),
    ] = False,
    choose: Annotated[
        bool,
        typer.Option(
            "--choose",
            help="Instead: the expected tau of every deployable vocabulary (each map, the "
            "union at K_u, the plugin at K_u alone and under --concurrency) for a traffic "
            "--mix, from one greedy pass per prompt, and the best one.",
        ),
    ] = False,
    mix: Annotated[
        str | None,
        typer.Option(
            help="With --choose: request shares, LANG=SHARE,... [default: the prompts' own].",
            metavar="MIX",
        ),
    ] = None,
    rows: Annotated[
        int | None,
        typer.Option(help="With --choose: K_u, the plugin's and the union's rows [default: 2K]."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="With --choose: requests in flight the plugin is modelled at.")
    ] = 32,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure a draft's acceptance per language with a reference speculative decoder.

    Decodes every prompt greedily with the base model, then with K-step chain
    speculation (SGLang's EAGLE semantics) once per vocabulary mode, and reports tau
    (SGLang's spec_accept_length) and per-position acceptance per language. Every
    speculative output must equal greedy decoding: a difference exits 1. With --choose,
    compares the deployable draft vocabularies for a traffic mix instead.
    """
    from ..evaluate.run import EvalOptions, evaluate
    from ..evaluate.target import DTYPES

    setup_logging(quiet)
    if dtype != "auto" and dtype not in DTYPES:
        raise typer.BadParameter(f"--dtype {dtype}: choose auto, {', '.join(DTYPES)}")
    if output is not None and output.suffix != ".json":
        raise typer.BadParameter(f"--output {output}: name a .json file (the chart goes beside)")
    if output is not None and importlib.util.find_spec("matplotlib") is None:
        raise FastMTPError(
            "--output also draws the chart, which needs matplotlib: "
            "pip install 'fastmtp-export[eval]' (checked before the run, not after it)"
        )
    opts = EvalOptions(
        tokenizer=tokenizer,
        vocab=vocab or (),
        k=k,
        max_new_tokens=max_new_tokens,
        device=device,
        dtype=dtype,
        limit=limit,
        show_progress=False if quiet else None,
    )
    if choose:
        if vocab or write_manifest:
            raise typer.BadParameter(
                "--choose scores every vocabulary itself and stores nothing in the manifest; "
                "drop --vocab and --write-manifest"
            )
        _choose(artifact, base, prompts, opts, mix, rows, concurrency, output, json_out)
        return
    if mix is not None or rows is not None:
        raise typer.BadParameter("--mix and --rows shape --choose; pass --choose too")
    info = evaluate(artifact, base, prompts, opts)
    if output is not None:
        from .._util.atomic import atomic_write
        from ..evaluate.chart import write_chart

        atomic_write(output, info.canonical_json().encode())
        write_chart(info, output.with_suffix(".png"))
        log.info("wrote %s and %s", output, output.with_suffix(".png"))
    if json_out:
        emit_json(info.model_dump(mode="json"))
    else:
        typer.echo(render(info))
    if not info.lossless:
        raise fail(
            f"{len(info.mismatches)} speculative outputs differ from greedy decoding (first: "
            f"{prompts}:{info.mismatches[0].line}, vocab {info.mismatches[0].vocab}); the "
            "manifest was not updated. Check --base is the exported source; otherwise report it"
        )
    if write_manifest:
        from ..artifact.manifest import write_evaluation

        write_evaluation(artifact, info)
        log.info("stored the evaluation in %s/fastmtp.json", artifact)


def _choose(
    artifact: Path,
    base: Path,
    prompts: Path,
    opts: Any,
    mix: str | None,
    rows: int | None,
    concurrency: int,
    output: Path | None,
    json_out: bool,
) -> None:
    """``eval --choose``: the options table (or JSON), optionally written to ``--output``."""
    import json

    from ..evaluate.choose import ChooseOptions, choose, parse_mix, render_choice
    from ..evaluate.run import prepare

    copts = ChooseOptions(mix=parse_mix(mix) if mix else None, concurrency=concurrency, rows=rows)
    report = choose(prepare(artifact, base, prompts, opts), opts, copts)
    if output is not None:
        from .._util.atomic import atomic_write

        atomic_write(output, (json.dumps(report, indent=2) + "\n").encode())
    if json_out:
        emit_json(report)
    else:
        typer.echo(render_choice(report))
