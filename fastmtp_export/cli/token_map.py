"""``fastmtp-export token-map build``: per-language hot-token maps from corpora."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._util.units import percent
from ._errors import handle_errors
from ._options import JsonOpt, OverwriteOpt, QuietOpt
from ._output import emit_json, setup_logging

if TYPE_CHECKING:
    from ..maps.summary import TokenMapSummary

log = logging.getLogger("fastmtp_export.cli")

app = typer.Typer(
    help="Build and check per-language hot-token maps (FR-Spec format).",
    no_args_is_help=True,
)

BUILD_EXAMPLES = """Examples:

\b
  fastmtp-export token-map build distill.jsonl --tokenizer ./MiMo-7B-RL --out maps
  fastmtp-export token-map build en=en.jsonl zh=zh.jsonl --tokenizer ./MiMo-7B-RL \\
      --out maps --size 16384 --sizes 8192,16384,32768,65536
  fastmtp-export token-map build chats.jsonl --tokenizer ./tok --detect --languages en,zh,ja
  fastmtp-export token-map build en=en.jsonl zh=zh.jsonl --tokenizer ./MiMo-7B-RL \\
      --out maps --size 16384 --union 32768 --weights en=0.6,zh=0.4
"""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of integers") from None
    if any(v <= 0 for v in values):
        raise typer.BadParameter("sizes must be positive")
    return values


def _languages(text: str | None) -> list[str] | None:
    from ..maps.lang import normalize_lang

    if text is None:
        return None
    out = []
    for raw in text.split(","):
        code = normalize_lang(raw)
        if code is None:
            raise typer.BadParameter(f"{raw!r} is not a language code such as en or zh")
        out.append(code)
    return sorted(set(out))


def render_coverage(summary: TokenMapSummary) -> str:
    """The coverage matrix at K, then (with several sizes) own-map coverage per K."""
    langs = sorted(summary.languages)
    width = max(8, *(len(x) + 2 for x in langs))

    def pct(v: float | None) -> str:
        return f"{percent(v):>{width}}"

    k = str(summary.size)
    u = summary.union
    union_head = f"union:{u.size}" if u else ""
    lines = [
        f"coverage of held-out tokens at K={summary.size} (rows: text language, columns: map)",
        " " * 6
        + "".join(f"{m:>{width}}" for m in langs)
        + (f"{union_head:>{max(width, len(union_head) + 2)}}" if u else ""),
    ]
    for t in langs:
        cells = "".join(pct(summary.coverage[k][t][m]) for m in langs)
        if u:
            cells += f"{percent(u.coverage.get(t)):>{max(width, len(union_head) + 2)}}"
        lines.append(f"{t:<6}" + cells)
    if len(summary.coverage) > 1:
        lines += [
            "",
            "own-map coverage by K",
            f"{'K':<8}" + "".join(f"{x:>{width}}" for x in langs),
        ]
        for size in sorted(summary.coverage, key=int):
            row = summary.coverage[size]
            lines.append(f"{size:<8}" + "".join(pct(row[x][x]) for x in langs))
    lines += ["", f"{'lang':<6}{'records':>10}{'tokens':>14}{'distinct':>10}{'padded':>8}  file"]
    for lang in langs:
        e = summary.languages[lang]
        counts = f"{e.records:>10,}{e.tokens:>14,}{e.distinct_tokens:>10,}{e.padded:>8}"
        ranked = f" + {e.ranking.file} ({percent(e.ranking.coverage)})" if e.ranking else ""
        lines.append(f"{lang:<6}{counts}  {e.file}{ranked}")
    if u:
        shares = ", ".join(f"{lang} {w:.2f}" for lang, w in u.weights.items())
        lines.append(f"{'union':<6}{'':>42}  {u.file} (row shares: {shares})")
    lines.append(f"default language: {summary.default_lang} (most tokens)")
    return "\n".join(lines)


@app.command(epilog=BUILD_EXAMPLES)
@handle_errors
def build(
    corpora: Annotated[
        list[str],
        typer.Argument(
            help="JSONL corpora, one record per line: {'text': ...} or {'messages': [...]} "
            "(assistant turns only). Prefix LANG= to set the language of a whole file.",
            metavar="[LANG=]CORPUS...",
            show_default=False,
        ),
    ],
    tokenizer: Annotated[
        Path,
        typer.Option(
            help="Local Hugging Face tokenizer directory (tokenizer.json), e.g. the model dir.",
            metavar="DIR",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Directory to write the maps into.",
            metavar="DIR",
            show_default=False,
        ),
    ],
    size: Annotated[int, typer.Option(help="K: token ids per map, the same for all.")] = 32768,
    sizes: Annotated[
        str | None,
        typer.Option(
            help="Also report coverage at these K (comma-separated), e.g. 8192,16384,32768,65536."
        ),
    ] = None,
    lang_field: Annotated[str, typer.Option(help="Record field holding the language.")] = "lang",
    text_field: Annotated[str, typer.Option(help="Record field holding the text.")] = "text",
    detect: Annotated[
        bool, typer.Option("--detect", help="Detect the language of records that have none.")
    ] = False,
    statistical: Annotated[
        bool,
        typer.Option(
            "--statistical",
            help="With --detect: tell Latin-script languages apart with py3langid "
            "(fastmtp-export[langdetect]).",
        ),
    ] = False,
    languages: Annotated[
        str | None,
        typer.Option(help="Only these languages (comma-separated); others are an error."),
    ] = None,
    skip_bad_records: Annotated[
        bool,
        typer.Option("--skip-bad-records", help="Skip (and count) malformed or empty records."),
    ] = False,
    holdout: Annotated[
        float, typer.Option(help="Share of each language's records held out for coverage.")
    ] = 0.05,
    eos: Annotated[
        list[str] | None,
        typer.Option(help="Extra token (string or id) every map must contain. Repeatable."),
    ] = None,
    vocab_size: Annotated[
        int | None,
        typer.Option(help="Model vocab size [default: config.json's, else the tokenizer's]."),
    ] = None,
    union: Annotated[
        int | None,
        typer.Option(
            help="Also write freq_union_<N>.pt: one map of N ids holding every language's "
            "hot tokens, for stock SGLang serving mixed traffic (e.g. N = 2K for two).",
            metavar="N",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        str,
        typer.Option(
            help="With --union: each language's share of its rows: equal, tokens (share of "
            "counted tokens) or LANG=W,... (only those languages), e.g. en=0.7,zh=0.3.",
        ),
    ] = "equal",
    rank: Annotated[
        int | None,
        typer.Option(
            help="Also write each language's top N ids with their token shares "
            "(rank_<lang>_<N>.json): sglang_patch fills its N draft rows from them "
            "instead of repeats and weighs mixed batches by them [default: --union's N].",
            metavar="N",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Records per tokenizer batch.")] = 2048,
    workers: Annotated[
        int | None,
        typer.Option(help="Counting processes [default: one per CPU; 1 = no subprocesses]."),
    ] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Count tokens of self-distilled corpora per language and write one map per language.

    Writes freq_<lang>_<K>.pt (torch.save(list_of_ids), loadable by stock SGLang's
    --speculative-token-map), with --union one freq_union_<N>.pt holding every language,
    and token_maps.json (counts and the held-out coverage matrix) into DIR atomically,
    and prints the coverage table.
    """
    from ..errors import FastMTPError
    from ..maps.builder import build_token_maps
    from ..maps.corpus import CorpusFile
    from ..maps.lang import SCRIPT_LANGUAGES, DetectorSpec
    from ..maps.tokenizer import load_tokenizer

    setup_logging(quiet)
    if not 0 <= holdout < 1:
        raise typer.BadParameter("--holdout must be in [0, 1)")
    if statistical and not detect:
        raise FastMTPError("--statistical refines --detect; pass --detect too")
    if weights != "equal" and union is None:
        raise FastMTPError("--weights shapes the union map; pass --union N too")
    langs = _languages(languages)
    tok = load_tokenizer(tokenizer, extra_eos=eos or (), vocab_size=vocab_size)
    detector = None
    if detect:
        detector = DetectorSpec(
            tuple(langs or sorted({*SCRIPT_LANGUAGES, "en"})), statistical=statistical
        )
        detector.build()  # fail now on a missing extra, not inside a worker
    result = build_token_maps(
        [CorpusFile.parse(c) for c in corpora],
        tok,
        out,
        size=size,
        sizes=_int_list(sizes) if sizes else (),
        lang_field=lang_field,
        text_field=text_field,
        detect=detector,
        languages=langs,
        skip_bad=skip_bad_records,
        holdout=holdout,
        batch_size=batch_size,
        workers=workers,
        overwrite=overwrite,
        progress=False if quiet else None,
        union=union,
        weights=weights,
        rank=rank if rank is not None else union if union is not None and union >= size else None,
    )
    if json_out:
        emit_json({"out": str(result.out), **result.summary.model_dump(mode="json")})
        return
    typer.echo(render_coverage(result.summary))
    typer.echo(str(result.out))
