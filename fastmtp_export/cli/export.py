"""``fastmtp-export export SOURCE --out DIR``."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ._errors import handle_errors
from ._options import JsonOpt, OverwriteOpt, QuietOpt
from ._output import emit_json, human_bytes, setup_logging

log = logging.getLogger("fastmtp_export.cli")

EXAMPLES = """Examples:

\b
  fastmtp-export export ./MiMo-7B-RL --out ./mimo-fastmtp-draft
  fastmtp-export export ./FastMTP --out ./draft --dtype bf16 --overwrite --json
  fastmtp-export export deepseek-ai/DeepSeek-V3 --out ./draft --dtype bf16   # FP8 -> bf16
  fastmtp-export export ./MiMo-7B-RL --out ./draft --token-maps ./maps --default-lang en
  fastmtp-export export XiaomiMiMo/MiMo-7B-RL --out ./draft          # reads 0.42 of 15.7 GB
  fastmtp-export export Qwen/Qwen3-Next-80B-A3B-Instruct@main --out ./draft --json
  fastmtp-export export zai-org/GLM-4.5 --out ./draft --for vllm     # vLLM and SGLang
"""


class Engine(StrEnum):
    sglang = "sglang"
    vllm = "vllm"


class DType(StrEnum):
    keep = "keep"
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


def _shard_size(text: str) -> int:
    from ..artifact.draft_writer import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@handle_errors
def export(
    source: Annotated[
        str,
        typer.Argument(
            help="Checkpoint holding the MTP head: a local directory (a model release, or a "
            "speculators / SpecForge MTP fine-tune), or a Hub model id ORG/NAME[@REVISION] "
            "read by byte ranges (only the MTP tensors are fetched).",
            metavar="SOURCE",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Draft artifact directory to create.",
            metavar="DIR",
            show_default=False,
        ),
    ],
    mtp_layer: Annotated[
        int | None,
        typer.Option(help="MTP layer to export when the source has several [default: the first]."),
    ] = None,
    revision: Annotated[
        str | None,
        typer.Option(
            help="Hub revision (branch, tag or commit) of a repo-id SOURCE [default: main]."
        ),
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(
            help="Read SOURCE as this checkpoint family (see `fastmtp-export families`) "
            "[default: detected from config.json and tensor names].",
            show_default=False,
        ),
    ] = None,
    base_config: Annotated[
        Path | None,
        typer.Option(
            help="The base model's config.json, for a trainer checkpoint that does not "
            "record it (SpecForge).",
            metavar="FILE",
        ),
    ] = None,
    dtype: Annotated[
        DType,
        typer.Option(
            help="Weight dtype of the draft: keep copies the source's (an FP8 head, as "
            "DeepSeek-V3 ships it, with its block scales and quantization_config); "
            "bf16/fp16/fp32 convert, dequantizing an FP8 head."
        ),
    ] = DType.keep,
    max_shard_size: Annotated[
        str, typer.Option(help="Split weights into shards of at most this size (5GB, 500MiB).")
    ] = "5GB",
    token_maps: Annotated[
        Path | None,
        typer.Option(
            help="Ship the maps of this token-map build directory in the artifact.",
            metavar="MAPDIR",
        ),
    ] = None,
    token_map: Annotated[
        list[str] | None,
        typer.Option(
            help="Ship one map, LANG=PATH (repeatable; overrides --token-maps for LANG).",
            metavar="LANG=PATH",
        ),
    ] = None,
    default_lang: Annotated[
        str | None,
        typer.Option(help="Map for requests of unknown language [default: the largest corpus]."),
    ] = None,
    for_engine: Annotated[
        Engine,
        typer.Option(
            "--for",
            help="The engine whose draft layout to write where the engines differ: vllm "
            "keeps DeepSeek-V3's and GLM-4.5's release layer numbering, a draft SGLang "
            "loads too (docs/vllm.md); other families write one layout for both.",
        ),
    ] = Engine.sglang,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export the MTP head of SOURCE as an SGLang EAGLE draft directory.

    Reads only the MTP tensors (shard by shard), writes model.safetensors, config.json,
    the validated token maps (freq_<lang>_<K>.pt) and the fastmtp.json manifest into
    DIR atomically, and prints DIR (or JSON). The log names the engines that load it.
    """
    import shlex

    from ..artifact.export import export_draft
    from ..artifact.launch import sglang_command, sglang_command_text, vllm_command

    setup_logging(quiet)
    result = export_draft(
        source,
        out,
        revision=revision,
        mtp_layer=mtp_layer,
        family=family,
        base_config=base_config,
        dtype=dtype.value,
        overwrite=overwrite,
        max_shard_bytes=_shard_size(max_shard_size),
        progress=False if quiet else None,
        token_maps=token_maps,
        token_map=token_map or (),
        default_lang=default_lang,
        engine=for_engine.value,
    )
    m = result.manifest
    engines = result.engines or {}
    vllm = vllm_command(result.out, m) if "vllm" in engines else None
    if json_out:
        emit_json(
            {
                "out": str(result.out),
                "family": m.family,
                "mtp_layer": m.source.mtp_layer,
                "dtype": m.dtype,
                "num_parameters": m.num_parameters,
                "bytes_written": result.bytes_written,
                "bytes_read": result.bytes_read,
                "source_bytes": result.source_bytes,
                "repo_id": m.source.repo_id,
                "revision": m.source.revision,
                "seconds": round(result.seconds, 3),
                "files": {k: v.model_dump() for k, v in m.files.items()},
                "token_maps": m.token_maps.model_dump() if m.token_maps else None,
                "engines": engines,
                "sglang_command": sglang_command(result.out, m),
                "vllm_command": vllm,
            }
        )
        return
    log.info(
        "wrote %d tensors (%s parameters, %s, %s) in %.2f s",
        len(m.tensors),
        f"{m.num_parameters:,}",
        m.dtype,
        human_bytes(result.bytes_written),
        result.seconds,
    )
    log.info("serve with:\n  %s", sglang_command_text(result.out, m))
    if vllm is not None:
        log.info("or with vLLM (full vocabulary):\n  %s", shlex.join(vllm))
    typer.echo(str(result.out))
