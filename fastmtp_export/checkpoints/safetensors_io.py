"""Torch-free safetensors header parsing and a streaming, hashing writer.

Why not ``safetensors.torch.save_file``: it serialises the whole state dict in memory
before writing. The exporter instead writes one tensor at a time (peak memory is one
tensor, not the head) and hashes the bytes as they go out, so the manifest's sha256
values cost no second read. The format is the published one: an 8-byte little-endian
header length, a JSON header (space-padded to 8 bytes) with ``dtype``, ``shape`` and
``data_offsets`` per tensor plus ``__metadata__``, then one hole-free byte buffer, laid
out exactly as the safetensors package lays it out: for the same tensors and a
one-key metadata the files are byte-identical (tested on random tensor sets).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import CorruptShardError
from .header_json import USIZE_END, header_json, header_metadata, tensor_entry

if TYPE_CHECKING:
    import torch

#: bytes per element for every safetensors dtype string we may meet.
DTYPE_SIZES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "F8_E8M0": 1,
}
#: sub-byte dtypes (bits per element; a tensor's bytes round up), read but never written
DTYPE_BITS: dict[str, int] = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


def span_bytes(dtype: str, numel: int) -> int | None:
    """Bytes a ``dtype`` tensor of ``numel`` elements occupies; ``None`` for an unknown dtype."""
    if dtype in DTYPE_SIZES:
        return numel * DTYPE_SIZES[dtype]
    if dtype in DTYPE_BITS:
        return -(-numel * DTYPE_BITS[dtype] // 8)
    return None


#: user-facing dtype names (``--dtype``, config ``torch_dtype``) <-> safetensors codes.
DTYPE_CODES: dict[str, str] = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
CODE_NAMES: dict[str, str] = {v: k for k, v in DTYPE_CODES.items()}

#: a header bigger than this is not a real safetensors file (the format caps it at 100 MB).
MAX_HEADER_BYTES = 100_000_000

#: read granularity: large enough for throughput, small enough for bounded memory.
CHUNK_BYTES = 16 << 20
#: write/hash granularity: 1 MiB writes are ~10x faster than 16 MiB ones here
#: (cache-resident), and they let hashing overlap writing (docs/performance.md).
WRITE_SLICE = 1 << 20


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives inside a safetensors file, read from its header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  #: absolute file offset of the first data byte
    nbytes: int


@dataclass(frozen=True)
class Header:
    """A parsed safetensors header: tensors by name plus the ``__metadata__`` dict."""

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    file_size: int


def read_header(path: Path) -> Header:
    """Parse and sanity-check a local shard's header without touching tensor data.

    Raises:
        CorruptShardError: truncated file, absurd header length, bad JSON, or data
            offsets pointing past the end of the file. The message names the file.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:

            def read(begin: int, nbytes: int) -> bytes:
                fh.seek(begin)
                return fh.read(nbytes)

            return parse_header(path, size, read)
    except OSError as exc:
        raise CorruptShardError(f"cannot read shard {path.name}: {exc.strerror}") from exc


def parse_header(path: Path, size: int, read: Callable[[int, int], bytes]) -> Header:
    """Parse a shard's header through ``read(begin, nbytes)`` (a file, or ranged HTTP),
    knowing the shard is ``size`` bytes; two reads, the data is never touched.

    Accepts exactly the files the safetensors library accepts (tested against it), so a
    shard SGLang or transformers would refuse is refused here, before any byte is read
    into a draft: strict UTF-8 JSON, non-negative integer shapes and offsets, the
    tensors tiling the data buffer from its first byte to the end of the file with no
    hole or overlap. Two documented exceptions, both stricter: a tensor entry must be a
    JSON object with a string dtype this version can read.

    Raises:
        CorruptShardError: as :func:`read_header`; also a malformed entry, ``__metadata__``
            that is not a string-to-string map, or tensors that overlap, leave holes, or
            stop short of the end of the file.
    """
    fix = "re-download or re-save this shard"
    raw_len = read(0, 8)
    if len(raw_len) < 8:
        raise CorruptShardError(f"shard {path.name} is truncated ({size} bytes); {fix}")
    (header_len,) = struct.unpack("<Q", raw_len)
    if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        raise CorruptShardError(
            f"shard {path.name} has a header length of {header_len} bytes but the "
            f"file holds {size} bytes: it is truncated or not safetensors; {fix}"
        )
    raw = read(8, header_len)
    try:
        doc = header_json(raw)
    except ValueError as exc:
        raise CorruptShardError(
            f"shard {path.name} has an unreadable header ({exc}); {fix}"
        ) from exc
    data_start = 8 + header_len
    metadata = header_metadata(doc)
    if metadata is None:
        raise CorruptShardError(
            f"shard {path.name} has a __metadata__ that is not one map of strings to strings; {fix}"
        )
    tensors: dict[str, TensorInfo] = {}
    for name, entry in doc.items():
        parsed = tensor_entry(entry)
        if parsed is None:
            raise CorruptShardError(
                f"shard {path.name} has a malformed entry for {name!r} (not an object with "
                f"a string dtype, a shape of non-negative ints and two data_offsets); {fix}"
            )
        dtype, shape, (begin, end) = parsed
        numel, overflow = 1, False
        for d in shape:  # the library multiplies in order, in 64 bits, and stops on overflow
            numel *= d
            overflow = overflow or numel >= USIZE_END
        expected = span_bytes(dtype, numel)
        if expected is None:
            raise CorruptShardError(
                f"shard {path.name}: tensor {name!r} has dtype {dtype!r}, unknown to this "
                "version of fastmtp-export; upgrade it, or re-save the checkpoint"
            )
        bits = numel * DTYPE_BITS.get(dtype, 8 * DTYPE_SIZES.get(dtype, 1))
        if overflow or bits >= USIZE_END or bits % 8:
            raise CorruptShardError(
                f"shard {path.name}: tensor {name!r} ({dtype}{list(shape)}) does not fill "
                f"a whole number of bytes below 2**64; {fix}"
            )
        if end < begin or end - begin != expected:
            raise CorruptShardError(
                f"shard {path.name}: tensor {name!r} spans {end - begin} bytes but "
                f"{dtype}{list(shape)} needs {expected}; {fix}"
            )
        if data_start + end > size:
            raise CorruptShardError(
                f"shard {path.name} is truncated: tensor {name!r} ends at byte "
                f"{data_start + end} but the file has {size} bytes; {fix}"
            )
        tensors[name] = TensorInfo(name, dtype, shape, data_start + begin, end - begin)
    _check_tiling(path, tensors, data_start, size, fix)
    return Header(path, tensors, metadata, size)


def _check_tiling(
    path: Path, tensors: dict[str, TensorInfo], data_start: int, size: int, fix: str
) -> None:
    """The tensors, ordered by offsets, cover the data buffer exactly: from its first
    byte to the end of the file, no hole, no overlap (the library's own rule)."""
    reached = data_start
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.begin + t.nbytes)):
        if info.begin != reached:
            what = "overlaps the tensor before it" if info.begin < reached else "leaves a hole"
            raise CorruptShardError(
                f"shard {path.name}: tensor {info.name!r} starts at byte {info.begin}, "
                f"expected {reached} ({what}); {fix}"
            )
        reached += info.nbytes
    if reached != size:
        raise CorruptShardError(
            f"shard {path.name} has {size - reached} bytes after its last tensor (ends at "
            f"byte {reached}, the file has {size}); {fix}"
        )


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: its name, dtype code, shape and a chunk producer.

    ``chunks`` is called once, when the writer reaches this tensor, and must yield
    exactly ``nbytes`` bytes (any buffer-protocol objects) in order.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    chunks: Callable[[], Iterable[memoryview | bytes]]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_SIZES[self.dtype]


@dataclass(frozen=True)
class WrittenFile:
    """What the writer produced: path, size in bytes and sha256 hex digest."""

    path: Path
    size: int
    sha256: str


#: the safetensors package's dtype order (its Rust ``Dtype`` enum, narrowest first)
_DTYPE_RANK = {
    code: i
    for i, code in enumerate(
        ("BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
         "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64")
    )
}  # fmt: skip


def ordered(specs: Iterable[TensorSpec]) -> list[TensorSpec]:
    """The layout ``safetensors.torch.save_file`` writes: dtypes in its enum order, widest
    first (so data stays aligned), then names; files come out byte-identical to it."""
    return sorted(specs, key=lambda s: (-_DTYPE_RANK[s.dtype], s.name))


def build_header(specs: list[TensorSpec], metadata: dict[str, str]) -> bytes:
    """Header bytes (length prefix included) for ``specs`` laid out in the given order."""
    doc: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for spec in specs:
        doc[spec.name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)  # pad so the data buffer starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(
    path: Path,
    specs: list[TensorSpec],
    metadata: dict[str, str],
    on_bytes: Callable[[int], None] | None = None,
) -> WrittenFile:
    """Stream ``specs`` (already ordered) into ``path``, hashing on the fly.

    Each producer chunk is written in :data:`WRITE_SLICE` pieces while a worker thread
    hashes the previous piece (``hashlib`` releases the GIL), so sha256 costs little
    extra wall time; the producer is advanced only once its chunk is fully hashed,
    which lets producers reuse one buffer.

    Raises:
        ValueError: a producer yielded more or fewer bytes than its shape needs (a bug,
            not a user error).
        OSError: from the file system (e.g. ``ENOSPC``); callers own the cleanup.
    """
    digest = hashlib.sha256()
    header = build_header(specs, metadata)
    digest.update(header)
    size = len(header)
    with path.open("wb", buffering=0) as fh, ThreadPoolExecutor(1, "sha256") as hasher:
        fh.write(header)
        for spec in specs:
            written = 0
            for chunk in spec.chunks():
                view = memoryview(chunk).cast("B")
                pending = []
                for start in range(0, len(view), WRITE_SLICE):
                    piece = view[start : start + WRITE_SLICE]
                    _write_all(fh, piece)
                    pending.append(hasher.submit(digest.update, piece))
                    if on_bytes is not None:
                        on_bytes(len(piece))
                for fut in pending:  # the chunk's buffer may be reused after this
                    fut.result()
                written += len(view)
            if written != spec.nbytes:
                raise ValueError(f"{spec.name}: wrote {written} bytes, expected {spec.nbytes}")
            size += written
    return WrittenFile(path, size, digest.hexdigest())


def _write_all(fh: BinaryIO, view: memoryview) -> None:
    """Unbuffered ``write`` may be partial; loop until every byte is out."""
    while view:
        n = fh.write(view)
        view = view[n:]


def file_range_chunks(path: Path, begin: int, nbytes: int) -> Iterator[memoryview]:
    """Yield ``nbytes`` raw bytes of ``path`` starting at ``begin``, in bounded chunks.

    Reuses one buffer, so a consumer must finish with each chunk before the next.
    """
    buf = bytearray(min(CHUNK_BYTES, max(nbytes, 1)))
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        fh.seek(begin)
        left = nbytes
        while left:
            n = fh.readinto(view[: min(left, len(buf))])
            if not n:
                raise CorruptShardError(
                    f"shard {path.name} ended early while reading; re-download it"
                )
            yield view[:n]
            left -= n


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """Zero-copy byte view of a contiguous CPU tensor (works for bf16, needs no numpy).

    The view aliases ``t``'s storage: keep ``t`` alive while the view is in use.
    """
    if not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError("tensor_bytes needs a contiguous CPU tensor")
    nbytes = t.numel() * t.element_size()
    return memoryview((ctypes.c_ubyte * nbytes).from_address(t.data_ptr())).cast("B")
