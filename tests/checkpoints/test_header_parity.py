"""Our safetensors header reader accepts exactly the files the safetensors library accepts.

Every case is a whole file (length prefix, header, data) written to disk, then opened by
``safetensors.safe_open`` and by :func:`read_header`: both accept it (with the same
tensors, dtypes, shapes and metadata) or both refuse it, ours with one
:class:`CorruptShardError` line naming the shard. The cases are generated from a valid
file: each field of each entry replaced by every kind of bad value, the offsets shifted,
swapped, overlapping, leaving holes or stopping short of the end, ``__metadata__``
varied, the JSON text edited (encoding, escapes, duplicates, nesting, trailing bytes),
and seeded random byte edits of the header.

Where we are deliberately stricter than the library the case is listed in
``STRICTER`` with the reason, and the test pins that the library accepts it and we
refuse it.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from fastmtp_export.checkpoints.safetensors_io import read_header
from fastmtp_export.errors import CorruptShardError

NAME = "model-00001-of-00002.safetensors"

#: a valid layout: F32[2, 3] (24 bytes), a zero-size BF16[0, 4], I8[5], F4[4] (2 bytes)
BASE: dict[str, Any] = {
    "__metadata__": {"format": "pt"},
    "a.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
    "b.empty": {"dtype": "BF16", "shape": [0, 4], "data_offsets": [24, 24]},
    "c.bias": {"dtype": "I8", "shape": [5], "data_offsets": [24, 29]},
    "d.packed": {"dtype": "F4", "shape": [4], "data_offsets": [29, 31]},
}
DATA = 31

#: the library takes these, we refuse them on purpose
STRICTER = {
    # serde's derived Deserialize also reads a struct from a positional array; the
    # format says an object, no writer emits an array, and it would hide typos
    "entry as array",
    # serde reads a unit enum variant from a one-key map too; the format says a string
    "dtype as map",
    # dtypes the library knows that this version cannot convert or export; refusing
    # them at the header names the dtype instead of failing later
    "dtype C64",
    "dtype F8_E4M3FNUZ",
    "dtype F8_E5M2FNUZ",
}


def _file(header: bytes, data: int = DATA, length: int | None = None) -> bytes:
    """Length prefix (the header's own length unless ``length``), header, ``data`` zeros."""
    prefix = struct.pack("<Q", len(header) if length is None else length)
    return prefix + header + b"\0" * data


def _doc(doc: dict[str, Any], data: int = DATA) -> bytes:
    return _file(json.dumps(doc).encode(), data)


def _with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(BASE))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _without(name: str, field: str) -> dict[str, Any]:
    doc = json.loads(json.dumps(BASE))
    del doc[name][field]
    return doc


BAD_USIZE: dict[str, Any] = {
    "negative": -1,
    "float": 2.0,
    "bool": True,
    "string": "2",
    "null": None,
    "2**64": 2**64,
    "list": [1],
}


def _cases() -> Iterator[tuple[str, bytes]]:
    yield "valid", _doc(BASE)
    yield "valid, header padded with spaces", _file(json.dumps(BASE).encode() + b"    ")
    yield "valid, no metadata", _doc({k: v for k, v in BASE.items() if k != "__metadata__"})
    yield "valid, null metadata", _doc(_with(("__metadata__",), None))
    yield "valid, empty metadata", _doc(_with(("__metadata__",), {}))
    yield "valid, no tensors", _file(b"{}", 0)
    yield "valid, entries in any order", _doc(dict(reversed(list(BASE.items()))))
    # the length prefix and the file's size
    yield "empty file", b""
    yield "7 bytes", b"\x02\0\0\0\0\0\0"
    yield "header past the end", _file(json.dumps(BASE).encode(), 0, length=10**6)
    yield "header over 100 MB", _file(b"{}", 0, length=100_000_001)
    yield "header length 0", _file(b"", 0)
    yield "one byte of data missing", _doc(BASE, DATA - 1)
    yield "one byte after the data", _doc(BASE, DATA + 1)
    yield "no data", _doc(BASE, 0)
    yield "data but no tensors", _file(b"{}", 1)
    # every field of every entry
    for name in ("a.weight", "b.empty", "c.bias"):
        for field in ("dtype", "shape", "data_offsets"):
            yield f"{name} without {field}", _doc(_without(name, field))
        for what, bad in BAD_USIZE.items():
            yield f"{name} dim {what}", _doc(_with((name, "shape", 0), bad))
            yield f"{name} begin {what}", _doc(_with((name, "data_offsets", 0), bad))
            yield f"{name} end {what}", _doc(_with((name, "data_offsets", 1), bad))
        yield f"{name} shape a number", _doc(_with((name, "shape"), 6))
        yield f"{name} offsets of 3", _doc(_with((name, "data_offsets"), [0, 24, 24]))
        yield f"{name} offsets of 1", _doc(_with((name, "data_offsets"), [0]))
        yield f"{name} offsets a map", _doc(_with((name, "data_offsets"), {"0": 0}))
        yield f"{name} dtype lower case", _doc(_with((name, "dtype"), "f32"))
        yield f"{name} dtype unknown", _doc(_with((name, "dtype"), "Q4_K"))
        yield f"{name} dtype a number", _doc(_with((name, "dtype"), 4))
        yield f"{name} an unknown field", _doc(_with((name, "extra"), {"x": [-1, 2.5, None]}))
        yield f"{name} a string", _doc(_with((name,), "F32"))
        yield f"{name} null", _doc(_with((name,), None))
    yield "entry as array", _doc(_with(("a.weight",), ["F32", [2, 3], [0, 24]]))
    yield "entry as array of 4", _doc(_with(("a.weight",), ["F32", [2, 3], [0, 24], 1]))
    yield "dtype as map", _doc(_with(("a.weight", "dtype"), {"F32": None}))
    for dtype, size in (("C64", 48), ("F8_E4M3FNUZ", 6), ("F8_E5M2FNUZ", 6), ("F64", 48)):
        doc = _with(("a.weight",), {"dtype": dtype, "shape": [2, 3], "data_offsets": [0, size]})
        for name in ("b.empty", "c.bias", "d.packed"):
            doc[name]["data_offsets"] = [o + size - 24 for o in doc[name]["data_offsets"]]
        yield f"dtype {dtype}", _doc(doc, DATA + size - 24)
    # sizes: a wrong shape, a sub-byte tensor that ends mid-byte, overflowing products
    yield "two negative dims", _doc(_with(("a.weight", "shape"), [-2, -3]))
    yield "shape one too big", _doc(_with(("a.weight", "shape"), [2, 4]))
    yield "shape one too small", _doc(_with(("a.weight", "shape"), [2, 2]))
    yield "scalar shape", _doc(_with(("c.bias", "shape"), []))
    yield "F4 of 3 elements", _doc(_with(("d.packed", "shape"), [3]))
    yield "F4 of 5 elements", _doc(_with(("d.packed", "shape"), [5]))
    f6 = {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [29, 32]}
    yield "F6_E2M3 of 4 elements", _doc(_with(("d.packed",), f6), 32)
    f6 = {"dtype": "F6_E3M2", "shape": [3], "data_offsets": [29, 31]}
    yield "F6_E3M2 of 3 elements", _doc(_with(("d.packed",), f6))
    yield "element count over 2**64", _doc(_with(("b.empty", "shape"), [2**32, 2**32]))
    yield "over 2**64 before a zero dim", _doc(_with(("b.empty", "shape"), [2**40, 2**40, 0]))
    yield "bits over 2**64", _doc(_with(("b.empty",), {"dtype": "F64", "shape": [2**61],
                                                       "data_offsets": [24, 24]}))  # fmt: skip
    yield "bytes at 2**64 - 1", _doc(_with(("b.empty", "data_offsets"), [2**64 - 1, 2**64 - 1]))
    # the layout: every tensor in order, from byte 0 to the end, no hole or overlap
    yield "offsets swapped", _doc(_with(("a.weight", "data_offsets"), [24, 0]))
    yield "starts at 1", _doc(
        {**BASE, **{n: {**BASE[n], "data_offsets": [o + 1 for o in BASE[n]["data_offsets"]]}
                    for n in ("a.weight", "b.empty", "c.bias", "d.packed")}}, DATA + 1
    )  # fmt: skip
    yield "overlap", _doc(_with(("c.bias", "data_offsets"), [23, 28]), DATA)
    yield "hole", _doc(_with(("c.bias", "data_offsets"), [25, 30]), DATA)
    yield "two at one offset", _doc(_with(("c.bias", "data_offsets"), [0, 5]))
    yield "zero size inside another", _doc(_with(("b.empty", "data_offsets"), [8, 8]))
    yield "zero size at the end", _doc(_with(("b.empty", "data_offsets"), [31, 31]))
    yield "zero size past the end", _doc(_with(("b.empty", "data_offsets"), [32, 32]))
    yield "negative offset (the header)", _doc(_with(("a.weight", "data_offsets"), [-8, 16]))
    # __metadata__
    for what, bad in {"an int value": {"a": 1}, "a null value": {"a": None}, "a list": [],
                      "a string": "pt", "a nested map": {"a": {"b": "c"}},
                      "a tensor entry": BASE["a.weight"]}.items():  # fmt: skip
        yield f"metadata {what}", _doc(_with(("__metadata__",), bad))
    # the JSON text
    text = json.dumps(BASE)
    body = text[1:-1]

    def edit(old: str, new: str) -> bytes:
        assert old in text, old
        return _file(text.replace(old, new).encode())

    def ignored(value: str) -> bytes:
        """``c.bias`` with a field the library skips, holding ``value``."""
        return edit('"dtype": "I8"', f'"x": {value}, "dtype": "I8"')

    yield "not UTF-8", _file(text.replace("a.weight", "a.w\xe9ight").encode("latin-1"))
    yield "UTF-16", _file(text.encode("utf-16-le"))
    yield "a BOM", _file(b"\xef\xbb\xbf" + text.encode())
    yield "leading whitespace", _file(b" \n\t\r" + text.encode())
    yield "trailing NUL padding", _file(text.encode() + b"\0")
    yield "trailing garbage", _file(text.encode() + b"x")
    yield "two objects", _file(text.encode() + b"{}")
    yield "an array", _file(b"[]", 0)
    yield "a string", _file(b'"{}"', 0)
    yield "null", _file(b"null", 0)
    yield "a non-ASCII name", edit("c.bias", "c.\u00e9")
    yield "an escaped name", edit('"c.bias"', '"c.\\u0062ias"')
    yield "an escaped __metadata__", edit("__metadata__", "__meta\\u0064ata__")
    yield "a surrogate pair", edit('"pt"', '"\\ud83d\\ude00"')
    yield "a lone surrogate in metadata", edit('"pt"', '"\\ud800"')
    yield "a lone surrogate in a name", edit('"c.bias"', '"\\udc00"')
    yield "a lone surrogate, ignored field", ignored('"\\ud800"')
    yield "a raw control character", edit("c.bias", "c.\x01bias")
    yield "NaN in an ignored field", ignored("NaN")
    yield "-0 in an ignored field", ignored("-0")
    yield "1e400 in an ignored field", ignored("1e400")
    yield "400 digits in an ignored field", ignored("9" * 400)
    yield "20 digits in an ignored field", ignored("9" * 20)
    yield "-0 as a dim", edit('"shape": [5]', '"shape": [-0]')
    yield "5.0 as a dim", edit('"shape": [5]', '"shape": [5.0]')
    yield "5e0 as a dim", edit('"shape": [5]', '"shape": [5e0]')
    yield "05 as a dim", edit('"shape": [5]', '"shape": [05]')
    yield "2**64-1 as a dim", edit('"shape": [5]', f'"shape": [{2**64 - 1}]')
    again = json.dumps(BASE["c.bias"])
    yield "a name twice (last wins)", _file(f'{{{body}, "c.bias": {again}}}'.encode())
    short = '{"dtype": "I8", "shape": [4], "data_offsets": [24, 28]}'
    yield "a name twice (first right)", _file(f'{{{body}, "c.bias": {short}}}'.encode())
    yield "dtype twice", edit('"dtype": "I8"', '"dtype": "I8", "dtype": "I8"')
    yield "shape twice", edit('"shape": [5]', '"shape": [5], "shape": [5]')
    yield "an ignored field twice", ignored('1, "x": 2')
    yield "__metadata__ twice", _file(('{"__metadata__": {"a": "b"}, ' + body + "}").encode())
    yield "a metadata key twice", edit('"format": "pt"', '"f": "1", "f": "2"')
    for depth in (124, 125, 126, 127, 1000, 5000):
        nested = "[" * depth + "]" * depth
        yield (
            f"{depth} arrays in an ignored field",
            _file(text.replace('"dtype": "I8"', f'"x": {nested}, "dtype": "I8"').encode()),
        )
    # seeded random edits of the header text: one byte replaced, dropped or doubled
    rng = random.Random(25)
    raw = text.encode()
    alphabet = b'{}[]",:0123456789-.eE tnrufalsNI\\\x00\x7f\xff'
    for i in range(400):
        at = rng.randrange(len(raw))
        kind = i % 3
        if kind == 0:
            edited = raw[:at] + bytes([rng.choice(alphabet)]) + raw[at + 1 :]
        elif kind == 1:
            edited = raw[:at] + raw[at + 1 :]
        else:
            edited = raw[:at] + raw[at : at + 1] * 2 + raw[at + 1 :]
        yield f"random edit {i}", _file(edited)


CASES = dict(_cases())


def _theirs(path: Path) -> dict[str, Any] | None:
    """What the library reads from ``path``, or ``None`` when it refuses it."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {
                "metadata": fh.metadata() or {},
                "tensors": {
                    k: (fh.get_slice(k).get_dtype(), tuple(fh.get_slice(k).get_shape()))
                    for k in fh.keys()  # noqa: SIM118 (a safe_open handle)
                },
            }
    except Exception:  # any refusal counts; ours must be one typed line
        return None


def _ours(path: Path) -> dict[str, Any] | None:
    try:
        header = read_header(path)
    except CorruptShardError as exc:
        msg = str(exc)
        assert "\n" not in msg, msg
        assert path.name in msg, msg
        return None
    return {
        "metadata": header.metadata,
        "tensors": {k: (t.dtype, t.shape) for k, t in header.tensors.items()},
    }


def test_the_cases_cover_both_outcomes(tmp_path: Path) -> None:
    """The generated set holds each named rule and many files of both outcomes."""
    path = tmp_path / NAME
    accepted = 0
    for data in CASES.values():
        path.write_bytes(data)
        accepted += _theirs(path) is not None
    assert accepted > 100
    assert len(CASES) - accepted > 400
    assert set(CASES) >= STRICTER


@pytest.mark.parametrize("case", CASES)
def test_header_reader_agrees_with_the_safetensors_library(tmp_path: Path, case: str) -> None:
    path = tmp_path / NAME
    path.write_bytes(CASES[case])
    theirs, ours = _theirs(path), _ours(path)
    if case in STRICTER:
        assert theirs is not None
        assert ours is None
        return
    assert ours == theirs
