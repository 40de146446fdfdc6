"""Safetensors headers read as the safetensors library reads them (serde_json's rules).

Python's ``json`` is looser than the library's parser: it takes NaN, lone UTF-16
surrogate escapes, integers of any size, repeated keys and any nesting depth, and it
guesses UTF-16 from the bytes. A header the library refuses would then be read here,
and the export would ship tensors SGLang or transformers would never load. These
helpers close each gap; ``safetensors_io.parse_header`` then checks sizes and layout.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

#: one past the largest value of the format's unsigned 64-bit integers
USIZE_END = 1 << 64
#: deepest nesting of arrays and objects the safetensors library parses (serde_json's
#: limit: 128 levels, the 128th refused)
_MAX_JSON_DEPTH = 127
#: the fields of a tensor entry; each may appear once (unknown fields are ignored)
_ENTRY_FIELDS = frozenset({"dtype", "shape", "data_offsets"})
#: a UTF-16 surrogate: in a decoded string, only a lone ``\udXXX`` escape makes one
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonObject(dict[str, Any]):
    """A JSON object that remembers its repeated keys (the last value wins, as in serde)."""

    repeated: frozenset[str] = frozenset()


def _json_object(pairs: list[tuple[str, Any]]) -> JsonObject:
    obj = JsonObject(pairs)
    if len(obj) < len(pairs):
        counts = Counter(k for k, _ in pairs)
        obj.repeated = frozenset(k for k, n in counts.items() if n > 1)
    return obj


class _NotUsize(float):
    """A JSON integer that is not an unsigned 64-bit one (negative, ``-0``, or too big)."""


def _json_int(text: str) -> int | float:
    """JSON integers as serde_json reads them: the usize range stays ``int``."""
    digits = text.removeprefix("-")
    if text.startswith("-") or len(digits) > 20 or int(digits) >= USIZE_END:
        return _NotUsize(_json_float(text))
    return int(digits)


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _json_constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON")


def header_json(raw: bytes) -> JsonObject:
    """The header as the safetensors library reads it: strict UTF-8, standard JSON.

    Raises:
        ValueError: not UTF-8, not JSON, not an object, a lone surrogate escape, or
            nested deeper than the library parses.
    """
    try:
        doc = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_json_object,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(doc, JsonObject):
        raise ValueError("header is not a JSON object")
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {_MAX_JSON_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            for text in (key, item):
                if isinstance(text, str) and _SURROGATE.search(text):
                    raise ValueError("a string holds a lone UTF-16 surrogate escape")
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
    if "__metadata__" in doc.repeated:
        raise ValueError("__metadata__ appears twice")
    return doc


def header_metadata(doc: JsonObject) -> dict[str, str] | None:
    """Pop ``__metadata__`` (absent or ``null``: empty); ``None`` if not a str->str map."""
    metadata = doc.pop("__metadata__", None)
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return None
    return dict(metadata)


def _is_usize(value: Any) -> bool:
    return type(value) is int and 0 <= value < USIZE_END


def tensor_entry(entry: Any) -> tuple[str, tuple[int, ...], tuple[int, int]] | None:
    """``(dtype, shape, (begin, end))`` of a well-formed tensor entry, else ``None``."""
    if not isinstance(entry, JsonObject) or entry.repeated & _ENTRY_FIELDS:
        return None
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or not isinstance(shape, list):
        return None
    if not isinstance(offsets, list) or len(offsets) != 2:
        return None
    if not all(_is_usize(v) for v in (*shape, *offsets)):
        return None
    return dtype, tuple(shape), (offsets[0], offsets[1])
