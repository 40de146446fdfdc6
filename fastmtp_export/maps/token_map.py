"""Per-language hot-token maps in FR-Spec format: ranking, writing, validating.

A map is ``torch.save(list_of_int_ids)``: hot index ``i`` drafts target id ``map[i]``.
SGLang reads it with ``torch.load(path, weights_only=True)`` and validates nothing, so
this module is where a bad map is caught: duplicate ids waste draft slots, an id
``>= vocab_size`` crashes the draft ``lm_head`` gather, and a map without EOS can never
draft the end of an answer.

Conventions (shared with speculators and FR-Spec):

- rank by ``(-count, token_id)``, so equal counts break ties by id: deterministic;
- ids the generation needs (EOS, chat terminators) are always in the map;
- every language's map has the same size K (the SGLang plugin swaps maps inside
  fixed-shape CUDA-graph buffers); a language with fewer than K distinct tokens is
  padded with the next most frequent tokens over all languages (``fallback``).
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._util.atomic import atomic_write
from ..errors import TokenMapError

if TYPE_CHECKING:
    import torch
    from numpy.typing import NDArray

#: file name of one map at the artifact root (SGLang resolves Hub maps only there).
MAP_NAME = "freq_{lang}_{size}.pt"


def ranked_ids(counts: Iterable[int] | NDArray[np.int64] | torch.Tensor) -> list[int]:
    """Ids with a non-zero count, by (count descending, id ascending).

    Args:
        counts: ``counts[token_id]`` (a list, array or 1-D CPU tensor of length vocab).
    """
    c = np.asarray(list(counts) if not hasattr(counts, "__array__") else counts, dtype=np.int64)
    seen = np.flatnonzero(c > 0)  # [distinct], ascending ids
    order = np.lexsort((seen, -c[seen]))  # primary key last: -count, then id
    return [int(i) for i in seen[order]]


def select_hot_ids(
    ranked: Sequence[int],
    size: int,
    *,
    required: Sequence[int] = (),
    fallback: Sequence[int] = (),
    vocab_size: int,
) -> list[int]:
    """The K=``size`` hot ids of one language, ranked order kept.

    ``required`` ids missing from the top of ``ranked`` replace its lowest entries
    (appended at the end, in the given order). A shortfall is filled from
    ``fallback`` (the all-language ranking), then from the lowest unused ids.

    Raises:
        TokenMapError: ``size`` exceeds the vocabulary, or an id is out of range.
    """
    if not 0 < size <= vocab_size:
        raise TokenMapError(f"map size {size} must be between 1 and the vocab size {vocab_size}")
    bad = sorted({i for i in (*ranked, *required, *fallback) if not 0 <= i < vocab_size})
    if bad:
        raise TokenMapError(f"token ids {bad[:5]} are outside the vocabulary (size {vocab_size})")
    must = list(dict.fromkeys(required))
    if len(must) > size:
        raise TokenMapError(f"{len(must)} required ids do not fit in a map of size {size}")
    must_set = set(must)
    # head excludes the required ids, so head + must has no duplicates
    head = [i for i in dict.fromkeys(ranked) if i not in must_set][: size - len(must)]
    chosen = head + must
    taken = set(chosen)
    for source in (fallback, range(vocab_size)):
        for i in source:
            if len(chosen) >= size:
                break
            if i not in taken:
                chosen.append(i)
                taken.add(i)
    # keep rank order for the frequent part: required ids that ranked high stay in place
    rank = {t: r for r, t in enumerate(dict.fromkeys(ranked))}
    top = sorted((i for i in chosen if i in rank), key=rank.__getitem__)
    rest = [i for i in chosen if i not in rank]
    return top + rest


#: records of torch.save's zip layout (torch >= 1.6), in torch's order
_ZIP_RECORDS = (".format_version", b"1"), (".storage_alignment", b"64"), ("byteorder", b"little")


def token_map_bytes(ids: Sequence[int]) -> bytes:
    """The bytes of ``torch.save(list_of_ids)``'s zip layout, written with the stdlib.

    ``torch.save`` of a list stores no tensor data: ``archive/data.pkl`` is exactly
    ``pickle.dumps(ids, protocol=2)`` beside a few version records. Writing it here
    keeps torch (2 s and ~500 MB RSS to import) out of ``token-map build``; the tests
    load every written map with ``torch.load(weights_only=True)`` as SGLang does.
    Fixed timestamps make the bytes a pure function of ``ids``.
    """
    buf = io.BytesIO()
    records = [("data.pkl", pickle.dumps([int(i) for i in ids], protocol=2)), *_ZIP_RECORDS]
    records.append(("version", b"3\n"))
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in records:
            zf.writestr(zipfile.ZipInfo(f"archive/{name}", date_time=(1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


class _NotPlainError(Exception):
    """The pickle references a global or a tensor storage: let torch judge it."""


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers and scalars: never resolves a global."""

    def find_class(self, module: str, name: str) -> Any:
        raise _NotPlainError

    def persistent_load(self, pid: Any) -> Any:
        raise _NotPlainError


#: records a torch zip of a plain list may hold besides data.pkl, with the only values
#: torch.save writes (serialization_id: any); another layout goes to torch itself
_KNOWN_RECORDS = dict(_ZIP_RECORDS) | {"version": b"3\n"}
_SERIALIZATION_ID = ".data/serialization_id"


def _read_plain(path: Path) -> object | None:
    """The object in a torch zip file when it is plain data (a list) in exactly the layout
    ``torch.save`` writes, else ``None`` (then ``torch.load`` decides, so nothing passes
    here that torch, and so stock SGLang, would refuse)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            prefix = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else None
            if prefix is None or not all(n.startswith(prefix) for n in names):
                return None
            records = {n[len(prefix) :]: n for n in names}
            if (
                set(records) - {"data.pkl", *_KNOWN_RECORDS, _SERIALIZATION_ID}
                or any(
                    records.get(k) is None or zf.read(records[k]) != v
                    for k, v in _KNOWN_RECORDS.items()
                )
                or "data.pkl" not in records
            ):
                return None
            data = zf.read(records["data.pkl"])
        return _PlainUnpickler(io.BytesIO(data)).load()
    except Exception:  # anything unusual: torch.load decides and words the error
        return None


def save_token_map(path: Path, ids: Sequence[int]) -> None:
    """Write ``ids`` as an FR-Spec ``.pt`` list, atomically."""
    atomic_write(path, token_map_bytes(ids))


def load_token_map(
    path: Path, *, vocab_size: int, required: Sequence[int] = (), size: int | None = None
) -> list[int]:
    """Load a map the way SGLang does and check it is safe to serve.

    A plain list in torch's zip layout is read without importing torch (a restricted
    unpickler that resolves no globals); anything else (tensors, legacy files, foreign
    pickles) goes through ``torch.load(weights_only=True)``, SGLang's own loader.

    Raises:
        TokenMapError: unreadable, not a flat list of ints, duplicate or out-of-range
            ids, a required id missing, or the wrong size. The message names the file.
    """
    raw = _read_plain(path)
    if raw is None:
        raw = _torch_load(path)
    problems = _problems(raw, vocab_size, required, size)
    if problems:
        raise TokenMapError(f"token map {path.name} {'; '.join(problems)}; rebuild it")
    assert isinstance(raw, list)
    return raw


def _torch_load(path: Path) -> object:
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols
            warnings.simplefilter("ignore")
            raw = torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        raise TokenMapError(
            f"{path.name} cannot be loaded with torch.load(weights_only=True): it holds "
            "Python objects, not token ids (never unpickled); write it as "
            "torch.save(list_of_int_ids)"
        ) from None
    except Exception as exc:  # torch raises several unrelated types for bad files
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise TokenMapError(
            f"{path.name} cannot be loaded with torch.load(weights_only=True) ({reason}); "
            "write it as torch.save(list_of_int_ids)"
        ) from exc
    if isinstance(raw, torch.Tensor) and raw.dim() == 1 and not raw.is_floating_point():
        return raw.tolist()
    return raw


def _problems(raw: object, vocab_size: int, required: Sequence[int], size: int | None) -> list[str]:
    if not isinstance(raw, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in raw
    ):
        return ["is not a flat list of int token ids"]
    problems = []
    if size is not None and len(raw) != size:
        problems.append(f"has {len(raw)} ids, expected {size}")
    if len(set(raw)) != len(raw):
        problems.append(f"has {len(raw) - len(set(raw))} duplicate ids")
    out_of_range = sorted({i for i in raw if not 0 <= i < vocab_size})
    if out_of_range:
        problems.append(f"has ids outside the vocabulary of {vocab_size}: {out_of_range[:5]}")
    present = set(raw)
    missing = [i for i in required if i not in present]
    if missing:
        problems.append(f"lacks required ids {missing} (EOS / chat terminators)")
    return problems
