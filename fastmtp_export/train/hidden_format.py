"""Recorded trunk states on disk: ``manifest.json`` and ``hidden-NNNNN.safetensors`` shards.

``record-hidden`` (:mod:`.record_hidden`) writes a directory of this format from a
serving engine; ``train --hidden`` reads it (:mod:`.hidden_store`) instead of running
the trunk. Shard ``k`` holds the training samples ``k*S .. (k+1)*S - 1`` (``S`` the
manifest's ``shard_records``, sample indices in the order ``train`` reads the data),
each sample ``i`` as two tensors:

- ``"{i}.ids"``: int64 [T], the token ids the states belong to;
- ``"{i}.hidden"``: [T, H] in the manifest's ``dtype``, the trunk's final-normed last
  hidden state at every position (what every family's MTP layer consumes).

A shard is written whole to a temporary file, flushed and renamed; only then is it
added to the manifest (itself replaced atomically). The manifest therefore lists
complete shards only, with each one's size and sha256, and a killed recorder loses at
most the shards it was still filling.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._util.atomic import atomic_write, atomic_write_via
from .._util.hashing import sha256_bytes, sha256_file
from ..checkpoints.checkpoint import language_config
from ..errors import TrainError
from .filters import DataFilter

log = logging.getLogger(__name__)

FORMAT = "fastmtp-hidden-states"
VERSION = 1
MANIFEST_NAME = "manifest.json"
SEMANTICS = "final-normed last hidden state"
TOKENIZER_FILE = "tokenizer.json"
SHARD_PREFIX = "hidden-"
SHARD_SUFFIX = ".safetensors"
#: dtypes a recording may hold (the serving engine's: float32, bfloat16, float16)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RECORD_HINT = "fastmtp-export record-hidden SOURCE --data ... --server URL --out DIR"


@dataclass(frozen=True)
class SourceIdentity:
    """What ties recorded states to one model and tokenizer."""

    path: str
    config_sha256: str
    hidden_size: int
    vocab_size: int
    tokenizer_sha256: str | None  #: of ``tokenizer.json``; None when the model has none

    @classmethod
    def of(cls, source: Path) -> SourceIdentity:
        """Read ``source/config.json`` and hash it and ``source/tokenizer.json``.

        Raises:
            TrainError: no readable ``config.json``, or one without ``hidden_size``.
        """
        try:
            raw = (source / "config.json").read_bytes()
            config = json.loads(raw)
            lang = language_config(config)
            hidden, vocab = int(lang["hidden_size"]), int(lang.get("vocab_size", 0))
        except OSError as exc:
            raise TrainError(
                f"cannot read {source / 'config.json'} ({exc.strerror}); SOURCE must be the "
                "local model directory"
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TrainError(
                f"{source / 'config.json'} is not a model config with hidden_size; pass the "
                "model directory as SOURCE"
            ) from None
        tok = source / TOKENIZER_FILE
        return cls(
            str(source),
            sha256_bytes(raw),
            hidden,
            vocab,
            sha256_file(tok) if tok.is_file() else None,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "config_sha256": self.config_sha256,
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "tokenizer_sha256": self.tokenizer_sha256,
        }


def data_identity(files: Sequence[Path]) -> list[dict[str, str]]:
    """Each data file's path and sha256, in the order given."""
    return [{"path": str(f), "sha256": sha256_file(f)} for f in files]


def sample_options(max_length: int, keep: DataFilter | None) -> dict[str, Any]:
    """The options that decide which samples ``read_samples`` keeps and how they are cut."""
    keep = keep or DataFilter()
    return {
        "max_length": max_length,
        "drop_cut": keep.drop_cut,
        "max_repeat": keep.max_repeat,
        "ngram": keep.ngram,
    }


def shard_name(k: int) -> str:
    return f"{SHARD_PREFIX}{k:05d}{SHARD_SUFFIX}"


def shard_count(samples: int, per_shard: int) -> int:
    return -(-samples // per_shard)


def shard_range(k: int, per_shard: int, samples: int) -> range:
    """Sample indices of shard ``k``."""
    return range(k * per_shard, min((k + 1) * per_shard, samples))


def new_manifest(
    source: SourceIdentity,
    data: list[dict[str, str]],
    options: dict[str, Any],
    samples: int,
    dtype: str,
    shard_records: int,
    server: dict[str, Any],
) -> dict[str, Any]:
    """A manifest for a recording that has no complete shard yet."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "semantics": SEMANTICS,
        "source": source.as_json(),
        "data": {"files": data, "options": options, "samples": samples},
        "dtype": dtype,
        "shard_records": shard_records,
        "server": server,
        "shards": [],
    }


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of ``directory``, its structure checked.

    Raises:
        TrainError: no manifest, or one this version cannot read.
    """
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise TrainError(
            f"--hidden {directory} is not a directory; record the states first ({RECORD_HINT})"
        )
    if not path.is_file():
        raise TrainError(
            f"--hidden {directory} has no {MANIFEST_NAME}; it is not a recording of hidden "
            f"states, record them first ({RECORD_HINT})"
        )
    bad = f"{path} is not a valid hidden-state manifest"
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TrainError(f"{bad} ({exc}); record the states again ({RECORD_HINT})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TrainError(f"{bad} (format is not {FORMAT!r}); pass a record-hidden --out directory")
    if doc.get("version") != VERSION:
        raise TrainError(
            f"{path} is format version {doc.get('version')!r}, this fastmtp-export reads "
            f"{VERSION}; record the states again with this version"
        )
    try:
        _check_structure(doc)
    except KeyError as exc:
        raise TrainError(f"{bad} (no {exc}); record the states again") from None
    except (TypeError, ValueError) as exc:
        raise TrainError(f"{bad} ({exc or type(exc).__name__}); record the states again") from None
    return doc


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"bad {what}")


def _check_structure(doc: dict[str, Any]) -> None:
    src, data = doc["source"], doc["data"]
    _require(isinstance(src["config_sha256"], str), "source.config_sha256")
    _require(isinstance(src["hidden_size"], int), "source.hidden_size")
    _require(isinstance(data["samples"], int), "data.samples")
    _require(isinstance(data["files"], list), "data.files")
    _require(doc["dtype"] in DTYPES, f"dtype {doc['dtype']!r}")
    per = doc["shard_records"]
    _require(isinstance(per, int) and per > 0, "shard_records")
    _require(doc["semantics"] == SEMANTICS, f"semantics {doc['semantics']!r}")
    for entry in doc["shards"]:
        name = entry["file"]
        _require(isinstance(name, str) and name == Path(name).name, f"shard file {name!r}")
        _require(all(isinstance(i, int) for i in entry["records"]), "shard records")
        _require(isinstance(entry["bytes"], int), "shard bytes")
        _require(isinstance(entry["sha256"], str), "shard sha256")


def write_manifest(directory: Path, doc: dict[str, Any]) -> None:
    """Replace ``directory/manifest.json`` atomically (shards listed in index order)."""
    doc["shards"] = sorted(doc["shards"], key=lambda e: e["file"])
    atomic_write(directory / MANIFEST_NAME, (json.dumps(doc, indent=1) + "\n").encode())


def write_shard(
    directory: Path, k: int, records: Mapping[int, tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, Any]:
    """Write shard ``k`` (sample index -> (ids [T], hidden [T, H])) atomically.

    Returns its manifest entry: file, record indices, byte size and sha256.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for i in sorted(records):
        ids, hidden = records[i]
        tensors[f"{i}.ids"] = ids.to(torch.int64).contiguous()  # [T]
        tensors[f"{i}.hidden"] = hidden.contiguous()  # [T, H]
    name = shard_name(k)
    path = directory / name
    atomic_write_via(
        path,
        lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt", "semantics": SEMANTICS}),
    )
    entry = {
        "file": name,
        "records": sorted(records),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    return entry


def remove_partial(directory: Path) -> int:
    """Delete the temporary files a killed recorder left in ``directory``; how many."""
    n = 0
    for p in directory.glob(f".{SHARD_PREFIX}*"):
        p.unlink(missing_ok=True)
        n += 1
    for p in directory.glob(f".{MANIFEST_NAME}.*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def is_recording_file(name: str) -> bool:
    """Whether ``name`` is a file a recorder writes (so a directory holding only these
    may be resumed even without its manifest)."""
    return (
        name == MANIFEST_NAME
        or (name.startswith(SHARD_PREFIX) and name.endswith(SHARD_SUFFIX))
        or name.startswith((f".{SHARD_PREFIX}", f".{MANIFEST_NAME}."))
    )
