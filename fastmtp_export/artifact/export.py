"""``export_draft``: source checkpoint -> SGLang EAGLE-algorithm MTP draft directory
(one that vLLM's MTP classes load too; ``engine="vllm"`` where the layouts differ)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._util.atomic import atomic_directory
from .._util.progress import byte_progress
from .._util.units import human_bytes
from ..checkpoints.checkpoint import SourceCheckpoint, language_config
from ..checkpoints.hub_source import HubShards, open_hub_checkpoint, parse_repo_ref
from ..checkpoints.readers import resolve_reader
from ..checkpoints.readers.base import ENGINES, Engine
from ..checkpoints.trainers import as_release
from ..errors import SourceError, TokenMapError
from ..maps.eos import model_eos_ids
from . import manifest as mf
from .draft_writer import DEFAULT_MAX_SHARD_BYTES, write_draft
from .map_bundle import collect_maps
from .model_card import CardOptions, write_card

log = logging.getLogger(__name__)

#: ``--dtype`` choices -> torch dtype names (``keep`` = no conversion).
DTYPES: dict[str, str | None] = {
    "keep": None,
    "bf16": "bfloat16",
    "fp16": "float16",
    "fp32": "float32",
}


@dataclass(frozen=True)
class ExportResult:
    """The published artifact and what it cost."""

    out: Path
    manifest: mf.Manifest
    bytes_written: int
    seconds: float
    #: engine -> the class that loads the draft (``sglang``, and ``vllm`` where it can).
    engines: dict[str, str] | None = None
    #: for a Hub source: bytes fetched over HTTP, and the size of its weight shards.
    bytes_read: int | None = None
    source_bytes: int | None = None


def export_draft(
    source: Path | str,
    out: Path,
    *,
    revision: str | None = None,
    mtp_layer: int | None = None,
    family: str | None = None,
    base_config: Path | None = None,
    dtype: str = "keep",
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: bool | None = None,
    token_maps: Path | None = None,
    token_map: Sequence[str] = (),
    default_lang: str | None = None,
    engine: Engine = "sglang",
) -> ExportResult:
    """Export the MTP head of ``source`` into the draft directory ``out``.

    Only the MTP tensors are read (lazily, shard by shard); the trunk, embedding and
    ``lm_head`` are never loaded. ``out`` appears atomically and complete, or not at
    all; ``source`` is never modified. ``source`` is a local directory, or a Hub model
    id ``ORG/NAME[@REVISION]`` whose MTP tensors are read by HTTP range requests
    (:mod:`..checkpoints.hub_source`).

    Args:
        revision: the Hub revision (branch, tag or commit) of a repo-id ``source``.
        mtp_layer: which MTP layer to export when there are several (default: the first).
        family: read ``source`` as this family (default: detected).
        base_config: the base model's ``config.json`` for a trainer checkpoint that does
            not record it (SpecForge).
        dtype: one of :data:`DTYPES`.
        progress: show a byte progress bar on stderr (``None``: only on a TTY).
        token_maps: a ``token-map build`` directory whose maps ship in the artifact.
        token_map: ``LANG=PATH`` maps to ship (override the directory's per language).
        default_lang: the map for unknown languages (default: the largest corpus).
        engine: write the layout this engine needs where the engines' layouts differ
            (``"vllm"``: the NextN families keep the release's layer numbering, a draft
            that SGLang loads as well; the other families have one layout for both).

    Raises:
        FastMTPError: any user-facing problem, with a one-line message.

    Example:
        >>> export_draft(Path("MiMo-7B-RL"), Path("mimo-fastmtp-draft"))  # doctest: +SKIP
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}")
    start = time.perf_counter()
    ckpt = as_release(open_source(source, revision), base_config)
    reader = resolve_reader(ckpt, family).layout(engine)
    if reader.NO_MAPS is not None and (token_maps is not None or token_map):
        raise TokenMapError(
            f"{source} is a {reader.family} checkpoint: {reader.NO_MAPS}; "
            "export it without --token-maps / --token-map"
        )
    plan = reader.plan(ckpt, mtp_layer, quantized=True)  # write_draft reads block FP8
    if engine == "vllm" and plan.quant is not None and DTYPES[dtype] is None:
        raise SourceError(
            f"--for vllm cannot keep the FP8 head of {source}: only unquantized drafts are "
            "checked against vLLM's loader; pass --dtype bf16 to dequantize it"
        )
    maps = collect_maps(  # validated before anything is written
        token_maps=token_maps,
        token_map=token_map,
        vocab_size=int(language_config(ckpt.config)["vocab_size"]),
        required=model_eos_ids(ckpt.path, ckpt.config),
        default_lang=default_lang,
    )
    log.info(
        "exporting %s MTP layer %d (%d tensors) from %s",
        plan.family,
        plan.layer,
        len(plan.tensors),
        source,
    )
    total = sum(i.nbytes for i in plan.tensors.values())
    with (
        atomic_directory(out, overwrite=overwrite, protect=ckpt.path) as tmp,
        byte_progress(total, "writing draft", enabled=progress) as advance,
    ):
        files = write_draft(
            plan,
            reader,
            ckpt,
            out=tmp,
            dtype=DTYPES[dtype],
            max_shard_bytes=max_shard_bytes,
            on_bytes=advance,
        )
        manifest = files.manifest
        engines = reader.engines(plan.source_config, manifest.tensors.keys())
        if maps is not None:
            map_files, info = maps.ship(tmp)
            manifest = manifest.model_copy(
                update={
                    "files": dict(sorted({**manifest.files, **map_files}.items())),
                    "token_maps": info,
                    "format_version": mf.format_version_for(info),
                }
            )
            log.info(
                "shipped %d token maps (K=%d, default %s%s)",
                len(maps.paths),
                maps.size,
                maps.default_lang,
                f", union of {info.union.size} ids" if info.union else "",
            )
        (tmp / mf.MANIFEST_NAME).write_text(manifest.canonical_json())
        write_card(tmp, manifest, CardOptions(engines=engines), licence_from=ckpt.path)
    log.info("the draft loads in %s", ", ".join(f"{e} ({cls})" for e, cls in engines.items()))
    read = size = None
    if isinstance(ckpt.shards, HubShards):
        read = ckpt.shards.bytes_read
        size = ckpt.shards.total_bytes(ckpt.weight_map.values())
        log.info(
            "read %s of the checkpoint's %s over HTTP from %s@%s (%.2f%%)",
            human_bytes(read), human_bytes(size or 0), ckpt.repo_id,
            (ckpt.revision or "")[:12], 100 * read / max(size or 1, 1),
        )  # fmt: skip
    return ExportResult(
        Path(out).absolute(), manifest, files.bytes_written, time.perf_counter() - start,
        engines, read, size,
    )  # fmt: skip


def open_source(source: Path | str, revision: str | None = None) -> SourceCheckpoint:
    """A local checkpoint directory, or a Hub repo id ``ORG/NAME[@REV]`` (``revision``
    overrides nothing: giving both, they must agree).

    Raises:
        SourceError: see :meth:`SourceCheckpoint.open` and
            :func:`~..checkpoints.hub_source.open_hub_checkpoint`.
    """
    ref = parse_repo_ref(str(source))
    if ref is None:
        if revision is not None:
            raise SourceError(
                f"--revision applies to a Hub repo id; {source} is a local path: drop --revision"
            )
        return SourceCheckpoint.open(Path(source))
    repo_id, at = ref
    if revision is not None and at is not None and revision != at:
        raise SourceError(f"{source} names revision {at} and --revision says {revision}; give one")
    return open_hub_checkpoint(repo_id, revision or at)
