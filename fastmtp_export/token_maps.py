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

import os
import pickle
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import current_umask
from .errors import TokenMapError

if TYPE_CHECKING:
    import torch

#: file name of one map at the artifact root (SGLang resolves Hub maps only there).
MAP_NAME = "freq_{lang}_{size}.pt"


def ranked_ids(counts: Iterable[int] | torch.Tensor) -> list[int]:
    """Ids with a non-zero count, by (count descending, id ascending).

    Args:
        counts: ``counts[token_id]`` (a list, array or 1-D tensor of length vocab).
    """
    seen = [(int(c), i) for i, c in enumerate(counts) if int(c) > 0]
    seen.sort(key=lambda ci: (-ci[0], ci[1]))
    return [i for _c, i in seen]


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


def save_token_map(path: Path, ids: Sequence[int]) -> None:
    """Write ``ids`` as an FR-Spec ``.pt`` list atomically (temp file + rename)."""
    import torch

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save([int(i) for i in ids], fh)
        Path(tmp).chmod(0o666 & ~current_umask())  # mkstemp makes 0600
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_token_map(
    path: Path, *, vocab_size: int, required: Sequence[int] = (), size: int | None = None
) -> list[int]:
    """Load a map the way SGLang does and check it is safe to serve.

    Raises:
        TokenMapError: unreadable, not a flat list of ints, duplicate or out-of-range
            ids, a required id missing, or the wrong size. The message names the file.
    """
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
        raw = raw.tolist()
    if not isinstance(raw, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in raw
    ):
        raise TokenMapError(f"{path.name} is not a flat list of int token ids")
    problems = []
    if size is not None and len(raw) != size:
        problems.append(f"has {len(raw)} ids, expected {size}")
    if len(set(raw)) != len(raw):
        problems.append(f"has {len(raw) - len(set(raw))} duplicate ids")
    out_of_range = sorted({i for i in raw if not 0 <= i < vocab_size})
    if out_of_range:
        problems.append(f"has ids outside the vocabulary of {vocab_size}: {out_of_range[:5]}")
    missing = [i for i in required if i not in set(raw)]
    if missing:
        problems.append(f"lacks required ids {missing} (EOS / chat terminators)")
    if problems:
        raise TokenMapError(f"token map {path.name} {'; '.join(problems)}; rebuild it")
    return raw
