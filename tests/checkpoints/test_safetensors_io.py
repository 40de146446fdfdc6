"""The streaming writer and header parser against the safetensors format itself."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fastmtp_export.checkpoints.safetensors_io import (
    TensorSpec,
    file_range_chunks,
    ordered,
    read_header,
    tensor_bytes,
    write_safetensors,
)
from fastmtp_export.errors import CorruptShardError


def _spec(name: str, t: torch.Tensor, code: str) -> TensorSpec:
    return TensorSpec(name, code, tuple(t.shape), lambda: [tensor_bytes(t.contiguous())])


def test_golden_bytes_of_a_one_tensor_file(tmp_path: Path) -> None:
    # Expected bytes written out by hand from the format: u64 LE header length, JSON
    # header padded with spaces to 8-byte alignment, then the raw little-endian data.
    t = torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)
    out = write_safetensors(tmp_path / "a.safetensors", [_spec("test", t, "I32")], {"format": "pt"})
    header = (
        b'{"__metadata__":{"format":"pt"},'
        b'"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}'
    )
    header += b" " * (-(8 + len(header)) % 8)
    expected = struct.pack("<Q", len(header)) + header + struct.pack("<4i", 1, 2, 3, 4)
    assert out.path.read_bytes() == expected
    assert out.size == len(expected)


def test_writer_output_loads_in_safetensors_and_matches(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    tensors = {
        "b.weight": torch.randn(7, 3, generator=g).to(torch.bfloat16),
        "a.bias": torch.randn(5, generator=g),
        "c.half": torch.randn(2, 2, generator=g).to(torch.float16),
    }
    codes = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}
    specs = ordered(_spec(n, t, codes[t.dtype]) for n, t in tensors.items())
    assert [s.name for s in specs] == ["a.bias", "b.weight", "c.half"]  # widest dtype first
    path = tmp_path / "m.safetensors"
    write_safetensors(path, specs, {"format": "pt"})
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys()
    for name, t in tensors.items():
        assert torch.equal(loaded[name], t)
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == {"format": "pt"}


def test_header_parse_agrees_with_safetensors_writer(tmp_path: Path) -> None:
    path = tmp_path / "ref.safetensors"
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    save_file(
        {"x": t, "y": t[0].to(torch.bfloat16).contiguous()}, str(path), metadata={"format": "pt"}
    )
    header = read_header(path)
    assert header.metadata == {"format": "pt"}
    x = header.tensors["x"]
    assert (x.dtype, x.shape, x.nbytes) == ("F32", (3, 4), 48)
    raw = b"".join(bytes(c) for c in file_range_chunks(path, x.begin, x.nbytes))
    assert raw == t.numpy().tobytes()


def _valid(tmp_path: Path) -> Path:
    path = tmp_path / "model-00001-of-00002.safetensors"
    save_file({"w": torch.ones(64, 64)}, str(path), metadata={"format": "pt"})
    return path


def test_truncated_data_names_the_shard(tmp_path: Path) -> None:
    path = _valid(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptShardError, match=r"model-00001-of-00002\.safetensors is truncated"):
        read_header(path)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x01\x02", struct.pack("<Q", 10**12) + b"{}", struct.pack("<Q", 4) + b"nope"],
    ids=["empty", "short-length", "absurd-length", "bad-json"],
)
def test_garbage_headers_are_reported(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(payload)
    with pytest.raises(CorruptShardError, match=r"bad\.safetensors"):
        read_header(path)


def test_inconsistent_offsets_are_reported(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "off.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(CorruptShardError, match="spans 8 bytes but F32"):
        read_header(path)


CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}  # fmt: skip


@pytest.mark.parametrize("seed", range(20))
def test_writer_is_byte_identical_to_safetensors_save_file(tmp_path: Path, seed: int) -> None:
    """Random tensor sets (names, dtypes, shapes, metadata): our streaming writer's file
    equals the safetensors package's, byte for byte."""
    g = torch.Generator().manual_seed(seed)
    dtypes = list(CODES)
    tensors = {}
    for i in range(int(torch.randint(1, 9, (1,), generator=g))):
        dtype = dtypes[int(torch.randint(len(dtypes), (1,), generator=g))]
        shape = tuple(int(d) for d in torch.randint(1, 6, (int(torch.randint(0, 4, (1,),
                                                                              generator=g)),),
                                                    generator=g))  # fmt: skip
        values = torch.randn(shape, generator=g) * 4
        name = f"model.layers.{int(torch.randint(0, 30, (1,), generator=g))}.w{i}"
        tensors[name] = values.to(dtype)
    metadata = {"format": "pt"}  # one key: safetensors orders several keys arbitrarily
    save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata=metadata)
    specs = ordered(_spec(n, t, CODES[t.dtype]) for n, t in tensors.items())
    write_safetensors(tmp_path / "ours.safetensors", specs, metadata)
    ours = (tmp_path / "ours.safetensors").read_bytes()
    assert ours == (tmp_path / "theirs.safetensors").read_bytes()


def test_unknown_dtype_is_reported_not_skipped(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "Q3_X", "shape": [4], "data_offsets": [0, 3]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "q.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(CorruptShardError, match="dtype 'Q3_X', unknown to this version"):
        read_header(path)


def _raw_file(path: Path, header: Mapping[str, object], data: int) -> Path:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data)
    return path


def test_sub_byte_dtypes_are_size_checked(tmp_path: Path) -> None:
    # F4[6] takes 6 * 4 / 8 = 3 bytes; F4[5] ends mid-byte, which safetensors refuses
    for shape, end, error in (
        (6, 3, None), (6, 4, "spans 4 bytes but F4"), (5, 3, "whole number of bytes")
    ):  # fmt: skip
        header = {"w": {"dtype": "F4", "shape": [shape], "data_offsets": [0, end]}}
        path = _raw_file(tmp_path / f"f4-{shape}-{end}.safetensors", header, end)
        if error is None:
            assert read_header(path).tensors["w"].shape == (shape,)
        else:
            with pytest.raises(CorruptShardError, match=error):
                read_header(path)


def _entry(shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize(
    ("header", "data", "error"),
    [
        ({"w": _entry([-2, -3], 0, 24)}, 24, "malformed entry for 'w'"),
        ({"w": _entry([2], -8, 0)}, 8, "malformed entry for 'w'"),
        ({"a": _entry([2], 0, 8), "b": _entry([2], 4, 12)}, 12, "'b' starts at byte"),
        ({"a": _entry([2], 0, 8), "b": _entry([2], 12, 20)}, 20, "leaves a hole"),
        ({"a": _entry([2], 4, 12)}, 12, "expected"),
        ({"a": _entry([2], 0, 8)}, 12, "4 bytes after its last tensor"),
        ({"__metadata__": {"n": 1}, "a": _entry([2], 0, 8)}, 8, "__metadata__"),
    ],
    ids=["negative-dims", "negative-offset", "overlap", "hole", "late-start", "trailing",
         "metadata"],
)  # fmt: skip
def test_shapes_offsets_and_layout_are_strict(
    tmp_path: Path, header: dict[str, object], data: int, error: str
) -> None:
    """Each of these was read before (issue 25): negative dims multiply to a positive
    count, a negative offset points into the header, tensors overlapped or left holes."""
    path = _raw_file(tmp_path / "model.safetensors", header, data)
    with pytest.raises(CorruptShardError, match=error) as info:
        read_header(path)
    assert "model.safetensors" in str(info.value)
