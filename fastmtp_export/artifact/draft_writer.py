"""Write a :class:`HeadPlan` as an SGLang-loadable draft directory.

Layout (docs/format.md)::

    config.json                      draft config (base architecture, num_nextn_predict_layers 1)
    model.safetensors                MTP tensors only, __metadata__ {"format": "pt"}
      or model-0000i-of-0000n.safetensors + model.safetensors.index.json when sharded
    freq_<lang>_<K>.pt               optional per-language hot-token maps (map_bundle)
    fastmtp.json                     manifest: hashes, provenance, SGLang flags, maps

Bytes are streamed tensor by tensor. When the dtype is kept, tensors are copied as raw
byte ranges (no torch import, bit-identical by construction); converting goes through
torch, one tensor at a time. A block-FP8 head (DeepSeek-V3's release) is dequantized
one row block at a time (:mod:`..checkpoints.fp8`), or, with the dtype kept, copied
with its ``*_scale_inv`` tensors and its ``quantization_config``.
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
from ..checkpoints.contract import SGLANG_CHAIN_FLAGS, fp8_problems, require_contract
from ..checkpoints.fp8 import dequantized_chunks, scale_name
from ..checkpoints.readers import READERS, MTPReader
from ..checkpoints.readers.base import ConfigChanges, HeadPlan, without_keys
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


def _dequantized(
    source: SourceCheckpoint, draft_name: str, plan: HeadPlan, code: str
) -> TensorSpec:
    """An fp8 weight of a block-FP8 head, dequantized to ``code`` as it is written."""
    assert plan.quant is not None
    info, scale = plan.tensors[draft_name], plan.quant.scales[draft_name]
    reader, block = source.reader, plan.quant.scheme.block

    def chunks() -> Iterator[memoryview]:
        scale_bytes = reader.read(source.weight_map[scale.name], scale.begin, scale.nbytes)
        data = reader.chunks(source.weight_map[info.name], info.begin, info.nbytes)
        yield from dequantized_chunks(info, data, scale, scale_bytes, block, code)

    return TensorSpec(draft_name, code, info.shape, chunks)


def _head_specs(plan: HeadPlan, source: SourceCheckpoint, code: str | None) -> list[TensorSpec]:
    """Every tensor of the draft: converted to ``code``, or kept (with the fp8 scales)."""
    quant = plan.quant
    specs = [
        _dequantized(source, name, plan, code)
        if quant is not None and code is not None and name in quant.scales
        else _spec(name, info, source.reader, source.weight_map[info.name], code)
        for name, info in plan.tensors.items()
    ]
    if quant is not None and code is None:  # the fp8 weights travel with their scales
        specs += [
            _spec(scale_name(name), s, source.reader, source.weight_map[s.name], None)
            for name, s in quant.scales.items()
        ]
    return ordered(specs)


def _check_keep_fp8(plan: HeadPlan, source: SourceCheckpoint, draft_config: dict[str, Any]) -> None:
    """``--dtype keep`` of a block-FP8 head: SGLang must build those layers in FP8.

    Raises:
        SourceError: the family's SGLang class is not checked with FP8 weights, or would
            refuse or misread these (names the fix: ``--dtype bf16``).
    """
    assert plan.quant is not None
    scheme, contract = plan.quant.scheme, plan.contract
    fix = "pass --dtype bf16 to dequantize the head"
    if not contract.fp8_weights:
        checked = sorted(f for f, r in READERS.items() if any(c.fp8_weights for c in r.contracts()))
        raise SourceError(
            f"--dtype keep cannot ship the FP8 head of {source.path}: it copies block-FP8 "
            f"heads only for the families whose SGLang class is checked with FP8 weights "
            f"({', '.join(checked)}), not {plan.family}; {fix}"
        )
    problems = fp8_problems(contract, draft_config, plan.quant.scales.keys(), scheme.block)
    if not scheme.dynamic:
        problems.insert(0, f"activation_scheme is {scheme.config.get('activation_scheme')!r}")
    if problems:
        shown = problems[:3] + ([f"{len(problems) - 3} more"] if len(problems) > 3 else [])
        raise SourceError(
            f"--dtype keep cannot ship the FP8 head of {source.path} as SGLang's "
            f"{contract.sglang_class} loads it ({'; '.join(shown)}); {fix}"
        )


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
        SourceError: ``dtype`` is kept for a block-FP8 head SGLang cannot load as it is.
    """
    code = DTYPE_CODES[dtype] if dtype else None
    specs = _head_specs(plan, source, code)
    quant, config, dropped = plan.quant, plan.source_config, plan.dropped
    if quant is not None and code is not None:  # dequantized: the FP8 config is stale
        config, dropped = without_keys(config, (quant.scheme.key,)), (quant.scheme.key,)
    draft_config, changes = reader.draft_config(config, dtype)
    if dropped:  # stale keys of the source config (a dequantized copy's, or ours)
        changes = ConfigChanges((*dropped, *changes.removed), changes.set)
    fp8 = tuple(quant.scales) if quant is not None and code is None else ()
    if fp8:
        _check_keep_fp8(plan, source, draft_config)
    shapes = {s.name: s.shape for s in specs}
    contract = reader.contract_for(draft_config, shapes.keys())
    block = quant.scheme.block if quant is not None else (128, 128)
    require_contract(contract, draft_config, shapes, fp8=fp8, block=block)

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
