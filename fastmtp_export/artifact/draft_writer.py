"""Write a :class:`HeadPlan` as an SGLang-loadable draft directory.

Layout (docs/format.md)::

    config.json                      draft config (base architecture, num_nextn_predict_layers 1)
    model.safetensors                MTP tensors only, __metadata__ {"format": "pt"}
      or model-0000i-of-0000n.safetensors + model.safetensors.index.json when sharded
    freq_<lang>_<K>.pt               optional per-language hot-token maps (map_bundle)
    fastmtp.json                     manifest: hashes, provenance, SGLang flags, maps

Bytes are streamed tensor by tensor. When the dtype is kept, tensors are copied as raw
byte ranges (no torch import, bit-identical by construction); converting goes through
``safetensors.safe_open`` and torch, one tensor at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util.hashing import sha256_bytes
from .._version import __version__
from ..checkpoints.checkpoint import INDEX_NAME, ShardReader, SourceCheckpoint
from ..checkpoints.contract import SGLANG_CHAIN_FLAGS, require_contract
from ..checkpoints.readers import MTPReader
from ..checkpoints.readers.base import ConfigChanges, HeadPlan
from ..checkpoints.safetensors_io import (
    CODE_NAMES,
    DTYPE_CODES,
    TensorInfo,
    TensorSpec,
    WrittenFile,
    ordered,
    tensor_bytes,
    write_safetensors,
)
from ..errors import SourceError
from . import manifest as mf

#: Hugging Face's default shard limit; the MiMo head (0.42 GB bf16) fits one file.
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"5GB"``, ``"500MiB"``, ``"1000"`` -> bytes (decimal units, ``i`` for binary).

    Raises:
        ValueError: not a size.
    """
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size like 5GB, 500MiB or 1000000")
    unit = (m.group(2) or "B").upper()
    base = 1024 if "I" in unit else 1000
    power = "BKMGT".index(unit[0])
    value = int(float(m.group(1)) * base**power)
    if value <= 0:
        raise ValueError(f"{text!r} must be positive")
    return value


@dataclass(frozen=True)
class DraftFiles:
    """What :func:`write_draft` produced inside the (temporary) directory."""

    manifest: mf.Manifest
    bytes_written: int


def _converted(
    reader: ShardReader, shard: str, info: TensorInfo, code: str
) -> Callable[[], Iterator[memoryview]]:
    def chunks() -> Iterator[memoryview]:
        import torch

        src = getattr(torch, CODE_NAMES[info.dtype])
        raw = bytearray(reader.read(shard, info.begin, info.nbytes))  # one tensor at a time
        t = torch.frombuffer(raw, dtype=src).view(info.shape)  # info.shape, source dtype
        t = t.to(getattr(torch, CODE_NAMES[code])).contiguous()
        yield tensor_bytes(t)
        del t, raw

    return chunks


def _spec(
    draft_name: str, info: TensorInfo, reader: ShardReader, shard: str, code: str | None
) -> TensorSpec:
    if code is None or code == info.dtype:
        begin, nbytes = info.begin, info.nbytes
        return TensorSpec(
            draft_name, info.dtype, info.shape, lambda: reader.chunks(shard, begin, nbytes)
        )
    if info.dtype not in CODE_NAMES:
        raise SourceError(
            f"{info.name} is stored as {info.dtype}; --dtype converts BF16/F16/F32 heads "
            "only: export with --dtype keep"
        )
    return TensorSpec(draft_name, code, info.shape, _converted(reader, shard, info, code))


def _shards(specs: list[TensorSpec], max_bytes: int) -> list[list[TensorSpec]]:
    groups: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if groups[-1] and size + spec.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += spec.nbytes
    return groups


def _json_bytes(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _chain_flags(reader: MTPReader, plan: HeadPlan) -> list[str]:
    """K=3 chain flags; multi-layer EAGLE runs one MTP layer per step, so a family served
    that way drafts at most as many steps as it has layers."""
    steps = 3 if not reader.ALL_LAYERS else min(3, len(plan.available_layers))
    wanted = {"--speculative-num-steps": steps, "--speculative-num-draft-tokens": steps + 1}
    return [part for k, v in SGLANG_CHAIN_FLAGS for part in (k, str(wanted.get(k, v)))]


def write_draft(
    plan: HeadPlan,
    reader: MTPReader,
    source: SourceCheckpoint,
    *,
    out: Path,
    dtype: str | None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    on_bytes: Callable[[int], None] | None = None,
) -> DraftFiles:
    """Write the draft files for ``plan`` into the existing, empty directory ``out``.

    Returns the manifest without writing it: the caller adds what it ships beside the
    weights (token maps) and writes ``fastmtp.json`` last.

    Args:
        dtype: ``"bfloat16"``/``"float16"``/``"float32"`` to convert, ``None`` to keep.
        source: the checkpoint ``plan`` was made from (shard paths, config hash).
        on_bytes: progress callback, called with each chunk's byte count.

    Raises:
        ContractError: the tensor set or shapes differ from SGLang's loader contract.
    """
    code = DTYPE_CODES[dtype] if dtype else None
    specs = ordered(
        _spec(name, info, source.reader, source.weight_map[info.name], code)
        for name, info in plan.tensors.items()
    )
    draft_config, changes = reader.draft_config(plan.source_config, dtype)
    if plan.dropped:  # stale keys of the source config (a dequantized copy's)
        changes = ConfigChanges((*plan.dropped, *changes.removed), changes.set)
    shapes = {s.name: s.shape for s in specs}
    require_contract(reader.contract_for(draft_config, shapes.keys()), draft_config, shapes)

    groups = _shards(specs, max_shard_bytes)
    names = (
        ["model.safetensors"]
        if len(groups) == 1
        else [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    )
    written: list[WrittenFile] = [
        write_safetensors(out / fname, group, {"format": "pt"}, on_bytes)
        for fname, group in zip(names, groups, strict=True)
    ]
    files = {w.path.name: mf.FileEntry(size=w.size, sha256=w.sha256) for w in written}
    tensors = {
        s.name: mf.TensorEntry(dtype=s.dtype, shape=list(s.shape), file=fname)
        for fname, group in zip(names, groups, strict=True)
        for s in group
    }
    extra: dict[str, bytes] = {"config.json": _json_bytes(draft_config)}
    if len(groups) > 1:
        total = sum(s.nbytes for s in specs)
        extra[INDEX_NAME] = _json_bytes(
            {
                "metadata": {"total_size": total},
                "weight_map": {k: v.file for k, v in tensors.items()},
            }
        )
    for fname, data in extra.items():
        (out / fname).write_bytes(data)
        files[fname] = mf.FileEntry(size=len(data), sha256=sha256_bytes(data))

    codes = sorted({s.dtype for s in specs})
    numel = sum(s.numel for s in specs)
    manifest = mf.Manifest(
        format=mf.FORMAT_NAME,
        format_version=mf.format_version_for(None),  # export raises it if maps need it
        family=plan.family,
        dtype=CODE_NAMES.get(codes[0], codes[0]) if len(codes) == 1 else "mixed",
        num_parameters=numel,
        tensors=dict(sorted(tensors.items())),
        files=dict(sorted(files.items())),
        source=mf.public_source(
            mf.SourceInfo(
                path=str(source.path.resolve()),
                config_sha256=source.config_sha256,
                architecture=source.architecture,
                model_type=plan.source_config.get("model_type"),
                mtp_layer=plan.layer,
                available_mtp_layers=list(plan.available_layers),
                dtypes=sorted({i.dtype for i in plan.tensors.values()}),
                trainer=source.trainer,
                repo_id=source.repo_id,
                revision=source.revision,
            )
        ),  # fmt: skip
        config_changes=mf.ConfigChangesEntry(removed=list(changes.removed), set=dict(changes.set)),
        sglang=mf.SGLangInfo(
            draft_class=plan.contract.sglang_class,
            recommended_flags=_chain_flags(reader, plan),
            base_needs_trust_remote_code=reader.needs_remote_code(plan.source_config),
        ),
        tool=mf.ToolInfo(name="fastmtp-export", version=__version__),
    )
    return DraftFiles(manifest, sum(w.size for w in written))
