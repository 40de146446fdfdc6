"""``train --hidden DIR``: the trunk's states read from a recording, checked before training.

:func:`open_recorded` refuses, in one line naming cause and fix, a recording that
cannot stand in for the trunk on this run's samples: states of another model or
tokenizer, a damaged shard, a sample recorded with other ids, a sample not recorded
yet. :class:`RecordedTrunk` then serves the states with :class:`.step.Trunk`'s
interface, reading each sequence lazily from its shard.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._util.hashing import sha256_file
from ..errors import TrainError
from .data import Sample
from .filters import DataFilter
from .hidden_format import (
    DTYPES,
    RECORD_HINT,
    SourceIdentity,
    data_identity,
    read_manifest,
    sample_options,
)

log = logging.getLogger(__name__)

#: shards kept open at once (each an mmap of its file)
OPEN_SHARDS = 8


class RecordedTrunk:
    """Recorded final-normed hidden states with :class:`.step.Trunk`'s interface.

    ``one(index, ids)`` -> [T, H] and ``batch(indices, ids, lengths)`` -> [B, T, H]
    (right-padded, pad rows zeros), on ``device`` in ``dtype``; each call reads only
    the sequences it returns.
    """

    def __init__(
        self,
        directory: Path,
        where: dict[int, str],
        hidden_size: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.directory, self.where, self.hidden_size = directory, where, hidden_size
        self.device, self.dtype = device, dtype
        self._open: OrderedDict[str, Any] = OrderedDict()

    def _shard(self, name: str) -> Any:
        from safetensors import safe_open

        fh = self._open.pop(name, None)
        if fh is None:
            fh = safe_open(str(self.directory / name), framework="pt")
            if len(self._open) >= OPEN_SHARDS:
                self._open.popitem(last=False)
        self._open[name] = fh
        return fh

    def read(self, index: int) -> torch.Tensor:
        """The recorded states of sample ``index``, [T, H] as stored (on the CPU)."""
        try:
            name = self.where[index]
        except KeyError:
            raise TrainError(
                f"{self.directory} holds no states for sample {index}; resume the recording "
                f"({RECORD_HINT})"
            ) from None
        hidden: torch.Tensor = self._shard(name).get_tensor(f"{index}.hidden")
        return hidden

    def one(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        """States of one sequence, ids [T] -> [T, H]."""
        hidden = self.read(index)  # [T, H]
        if hidden.shape[0] != ids.shape[-1]:
            raise TrainError(
                f"sample {index} has {ids.shape[-1]} tokens but {self.directory} recorded "
                f"{hidden.shape[0]}; the recording is of other data, record it again"
            )
        return hidden.to(device=self.device, dtype=self.dtype)

    def batch(self, indices: list[int], ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """States of right-padded sequences, ids [B, T] -> [B, T, H]; pad rows are zeros."""
        out = torch.zeros(
            (*ids.shape, self.hidden_size), dtype=self.dtype, device=self.device
        )  # [B, T, H]
        for b, (i, n) in enumerate(zip(indices, lengths, strict=True)):
            out[b, :n] = self.one(i, ids[b, :n])
        return out


def open_recorded(
    hidden_dir: Path,
    source_dir: Path,
    samples: Sequence[Sample],
    data_files: Sequence[Path],
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    max_length: int | None = None,
    keep: DataFilter | None = None,
    verify: bool = True,
) -> RecordedTrunk:
    """The recording in ``hidden_dir``, checked against this run before any training.

    Args:
        hidden_dir: a ``record-hidden --out`` directory.
        source_dir: the model being trained (its ``config.json`` and ``tokenizer.json``).
        samples: this run's samples, in training order (``read_samples``).
        data_files: the ``--data`` files they were read from (named in messages).
        device, dtype: where and in which dtype the states are returned [CPU, as
            recorded].
        max_length, keep: the options the samples were read with (named in messages).
        verify: hash every shard (sha256) as well as checking its size and header.

    Raises:
        TrainError: one line naming the cause and the fix: no or invalid manifest, states
            of another model or tokenizer, a truncated or corrupted shard, a shard whose
            hidden size is not the model's, a sample with other ids than recorded, a
            sample with no record.
    """
    doc = read_manifest(hidden_dir)
    ident = SourceIdentity.of(source_dir)
    _check_source(hidden_dir, doc["source"], ident, source_dir)
    where = _check_shards(hidden_dir, doc, ident.hidden_size, verify)
    _check_samples(hidden_dir, doc, where, samples, data_files, max_length, keep)
    stored = DTYPES[doc["dtype"]]
    log.info(
        "trunk states from %s: %d of its %d recorded sequences, %s, %s",
        hidden_dir, len(samples), len(where), doc["dtype"], doc["semantics"],
    )  # fmt: skip
    return RecordedTrunk(
        hidden_dir, where, ident.hidden_size, device or torch.device("cpu"), dtype or stored
    )


def _check_source(
    hidden_dir: Path, recorded: dict[str, Any], ident: SourceIdentity, source_dir: Path
) -> None:
    fix = (
        f"record them from {source_dir}'s server into a new directory, or pass the model "
        "they came from"
    )
    if recorded["hidden_size"] != ident.hidden_size:
        raise TrainError(
            f"{hidden_dir} holds states of another model (hidden size {recorded['hidden_size']}, "
            f"{source_dir}'s is {ident.hidden_size}; recorded from {recorded.get('path')}); {fix}"
        )
    if recorded["config_sha256"] != ident.config_sha256:
        raise TrainError(
            f"{hidden_dir} holds states of another model (config.json sha256 "
            f"{recorded['config_sha256'][:12]}, {source_dir}'s is {ident.config_sha256[:12]}; "
            f"recorded from {recorded.get('path')}); {fix}"
        )
    if recorded.get("tokenizer_sha256") != ident.tokenizer_sha256:
        raise TrainError(
            f"{hidden_dir} was recorded with another tokenizer (tokenizer.json sha256 "
            f"{str(recorded.get('tokenizer_sha256'))[:12]}, {source_dir}'s is "
            f"{str(ident.tokenizer_sha256)[:12]}); record the states again with {source_dir}'s "
            "tokenizer"
        )


def _check_shards(
    hidden_dir: Path, doc: dict[str, Any], hidden_size: int, verify: bool
) -> dict[int, str]:
    """Sample index -> shard file, after checking every listed shard is whole."""
    from safetensors import SafetensorError, safe_open

    where: dict[int, str] = {}
    for entry in doc["shards"]:
        name = entry["file"]
        path = hidden_dir / name
        fix = f"delete {path} and re-run the same record-hidden command to record it again"
        size = path.stat().st_size if path.is_file() else None
        if size is None:
            raise TrainError(
                f"{hidden_dir}: shard {name} is missing; re-run the same record-hidden command "
                "to record it again"
            )
        if size != entry["bytes"]:
            raise TrainError(
                f"{hidden_dir}: shard {name} is truncated or corrupted ({size:,} bytes, the "
                f"manifest says {entry['bytes']:,}); {fix}"
            )
        try:
            with safe_open(str(path), framework="pt") as fh:
                names = set(fh.keys())
                shapes = {n: fh.get_slice(n).get_shape() for n in names if n.endswith(".hidden")}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise TrainError(
                f"{hidden_dir}: shard {name} has an unreadable header ({exc}); {fix}"
            ) from None
        for i in entry["records"]:
            shape = shapes.get(f"{i}.hidden")
            if shape is None or f"{i}.ids" not in names:
                raise TrainError(
                    f"{hidden_dir}: shard {name} lacks sample {i}, which the manifest lists; {fix}"
                )
            if len(shape) != 2 or shape[1] != hidden_size:
                raise TrainError(
                    f"{hidden_dir}: shard {name} holds states of shape {list(shape)} for sample "
                    f"{i}, the model's hidden size is {hidden_size}; record the states again "
                    "from the model being trained"
                )
            where[i] = name
        if verify and sha256_file(path) != entry["sha256"]:
            raise TrainError(
                f"{hidden_dir}: shard {name} is corrupted (its sha256 differs from the "
                f"manifest's); {fix}"
            )
    return where


def _check_samples(
    hidden_dir: Path,
    doc: dict[str, Any],
    where: dict[int, str],
    samples: Sequence[Sample],
    data_files: Sequence[Path],
    max_length: int | None,
    keep: DataFilter | None,
) -> None:
    """Every sample has a record with exactly its ids."""
    from safetensors import safe_open

    by_shard: dict[str, list[int]] = {}
    missing = [i for i in range(len(samples)) if i not in where]
    for i in range(len(samples)):
        if i in where:
            by_shard.setdefault(where[i], []).append(i)
    for name, indices in sorted(by_shard.items()):
        with safe_open(str(hidden_dir / name), framework="pt") as fh:
            for i in indices:
                ids = fh.get_tensor(f"{i}.ids")  # [T]
                if ids.tolist() != list(samples[i].ids):
                    why = _data_differs(doc, data_files, max_length, keep)
                    raise TrainError(
                        f"sample {i} has other token ids than {hidden_dir} recorded for it "
                        f"({len(samples[i].ids)} tokens now, {ids.numel()} recorded): {why}; "
                        "pass the data and options it was recorded with, or record the states "
                        "again"
                    )
    if missing:
        total = doc["data"]["samples"]
        raise TrainError(
            f"{hidden_dir} holds no states for {len(missing)} of the {len(samples)} samples "
            f"(first: sample {missing[0]}; {len(where)} of {total} recorded): the recording is "
            f"incomplete; resume it by re-running the same record-hidden command ({RECORD_HINT})"
        )
    if len(where) > len(samples):
        extra = len(where) - len(samples)
        log.info("%s holds %d more recorded sequences than this run uses", hidden_dir, extra)


def _data_differs(
    doc: dict[str, Any],
    data_files: Sequence[Path],
    max_length: int | None,
    keep: DataFilter | None,
) -> str:
    """Which of the data, the options and the tokenization differ from the recording's."""
    recorded = doc["data"]
    now = [f["sha256"] for f in data_identity(data_files)]
    if now != [f.get("sha256") for f in recorded["files"]]:
        paths = ", ".join(str(f.get("path")) for f in recorded["files"])
        return f"--data differs from the recorded data ({paths})"
    if max_length is not None:
        opts = sample_options(max_length, keep)
        diff = [
            f"{k} {opts[k]} (recorded: {recorded['options'].get(k)})"
            for k in opts
            if recorded["options"].get(k) != opts[k]
        ]
        if diff:
            return "the data options differ: " + ", ".join(diff)
    return "the tokenization differs (another tokenizer or chat template)"
