"""``fastmtp-export inspect DIR``: offline validation and a human summary."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Annotated

import typer

from .._util.units import percent, percents
from ._errors import fail, handle_errors
from ._options import ArtifactArg, JsonOpt
from ._output import emit_json, human_bytes

if TYPE_CHECKING:
    from ..artifact.inspect import ArtifactReport


def render(report: ArtifactReport) -> str:
    """Multi-line text summary of an artifact report."""
    m = report.manifest
    status = "OK" if report.ok else f"INVALID ({len(report.problems)} problems)"
    lines = [
        f"artifact   {report.path}  {status}",
        f"family     {m.family} (SGLang {m.sglang.draft_class})",
        f"weights    {len(report.tensors)} tensors, {m.num_parameters:,} parameters, {m.dtype}",
        f"source     {m.source.path} ({m.source.architecture}, MTP layer {m.source.mtp_layer}"
        f" of {m.source.available_mtp_layers}"
        + (f", a {m.source.trainer} checkpoint" if m.source.trainer else "")
        + ")",
        f"hashes     {report.hashes_checked}/{len(m.files)} files checked",
        "engines    "
        + (
            ", ".join(f"{_ENGINE_NAMES[e]} ({cls})" for e, cls in report.engines.items())
            if report.engines
            else "none (the draft is invalid)"
        ),
        "files",
    ]
    lines += [
        f"  {name:<34} {human_bytes(e.size):>9}  sha256 {e.sha256[:16]}"
        for name, e in m.files.items()
    ]
    lines.append("tensors")
    width = max((len(k) for k in report.tensors), default=0)
    lines += [
        f"  {k:<{width}}  {dtype:<4} {list(shape)}"
        for k, (dtype, shape, _f) in sorted(report.tensors.items())
    ]
    maps = m.token_maps
    if maps is None:
        lines.append("languages  none (no token maps in this artifact)")
    else:
        lines.append(
            f"languages  {', '.join(sorted(maps.languages))}: K={maps.size}, "
            f"default {maps.default_lang}, EOS ids {maps.required_ids}"
        )
        for lang, e in sorted(maps.languages.items()):
            cov = "coverage unknown" if e.coverage is None else f"coverage {percent(e.coverage)}"
            tokens = "" if e.tokens is None else f", {e.tokens:,} corpus tokens"
            lines.append(f"  {lang:<4} {e.file:<28} {cov}{tokens}")
            if e.ranking is not None:
                r = e.ranking
                lines.append(
                    f"       {r.file:<28} ranking to N={r.size} (the plugin's rows), "
                    f"coverage {percent(r.coverage)}"
                )
        if maps.union:
            u = maps.union
            cov = percents(u.coverage)
            shares = ", ".join(f"{t} {w:.2f}" for t, w in (u.weights or {}).items())
            lines.append(
                f"  union {u.file:<27} N={u.size}"
                + (f", row shares {shares}" if shares else "")
                + (f", coverage {cov}" if cov else "")
            )
    lines += [f"problem    {p}" for p in report.problems]
    lines += [f"warning    {w}" for w in report.warnings]
    lines += ["serve with", "  " + shlex.join(report.launch_command())]
    if maps is not None:
        lines += [
            "stock SGLang without the plugin (one static map"
            + (": the union)" if maps.union else ")"),
            "  " + shlex.join(report.launch_command(static_map=True)),
        ]
    vllm = report.vllm_command()
    if vllm is not None:
        lines += ["vLLM (full vocabulary: vLLM has no MTP token map)", "  " + shlex.join(vllm)]
    elif report.ok:
        lines.append("vLLM       cannot load this layout; export with --for vllm (docs/vllm.md)")
    return "\n".join(lines)


_ENGINE_NAMES = {"sglang": "SGLang", "vllm": "vLLM"}


@handle_errors
def inspect(
    artifact: ArtifactArg,
    no_hashes: Annotated[
        bool, typer.Option("--no-hashes", help="Skip re-hashing files (sizes are still checked).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Validate an exported artifact offline and print its summary.

    Checks file sizes and sha256 against fastmtp.json, the tensor key set and shapes
    against SGLang's loader contract, and the config, and names the engines whose MTP
    class loads the draft (SGLang; vLLM where its layout allows). Exits 1 on any mismatch.
    """
    from ..artifact.inspect import inspect_artifact

    report = inspect_artifact(artifact, check_hashes=not no_hashes)
    if json_out:
        emit_json(report.to_json())
    else:
        typer.echo(render(report))
    if not report.ok:
        raise fail(f"{artifact} is invalid: {'; '.join(report.problems)}; re-export it")
