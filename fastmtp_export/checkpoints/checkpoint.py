"""Lazy, shard-aware access to a Hugging Face safetensors checkpoint.

Only ``config.json`` and the index (or the single file's header) are read up front.
Tensor headers are parsed per shard on first use, and tensor data is read only for the
names an exporter asks for, so a 15.7 GB MiMo checkpoint costs one MTP head of I/O.
Shard bytes come through a :class:`ShardReader`: local files here, ranged HTTP for a
Hub repository (:mod:`.hub_source`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .._util.hashing import sha256_bytes
from ..errors import CorruptShardError, SourceError
from .safetensors_io import Header, TensorInfo, file_range_chunks, read_header

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class ShardReader(Protocol):
    """Where shard bytes come from: ``read`` for headers, ``chunks`` for tensor data."""

    def header(self, shard: str) -> Header:
        """The shard's parsed header (two small reads)."""
        ...

    def read(self, shard: str, begin: int, nbytes: int) -> bytes:
        """``nbytes`` bytes of ``shard`` from ``begin``, owned by the caller (a copy, never
        a view of a buffer that :meth:`chunks` reuses)."""
        ...

    def chunks(self, shard: str, begin: int, nbytes: int) -> Iterator[memoryview]:
        """The same bytes, in bounded chunks (tensor data); a chunk may alias a buffer
        reused for the next one, so consume each before asking for the next."""
        ...


def joined(chunks: Iterable[memoryview]) -> bytes:
    """The bytes of ``chunks``, each copied while it is current: a chunked reader may
    reuse one buffer, and joining its views afterwards would repeat the last chunk."""
    return b"".join([bytes(c) for c in chunks])


@dataclass(frozen=True)
class LocalShards:
    """Shards in a local directory."""

    root: Path

    def header(self, shard: str) -> Header:
        return read_header(self.root / shard)

    def read(self, shard: str, begin: int, nbytes: int) -> bytes:
        with (self.root / shard).open("rb") as fh:
            fh.seek(begin)
            data = fh.read(nbytes)
        if len(data) != nbytes:
            raise CorruptShardError(f"shard {shard} ended early while reading; re-download it")
        return data

    def chunks(self, shard: str, begin: int, nbytes: int) -> Iterator[memoryview]:
        return file_range_chunks(self.root / shard, begin, nbytes)


@dataclass
class SourceCheckpoint:
    """A checkpoint directory: its config, and which shard holds each tensor name."""

    path: Path
    config: dict[str, Any]
    config_sha256: str
    #: tensor name -> shard file name (relative to ``path``)
    weight_map: dict[str, str]
    #: the trainer whose checkpoint layout was read as the family's release layout
    #: (:mod:`.trainers`); ``None`` for a release-layout checkpoint.
    trainer: str | None = None
    #: tensors under their release names where the stored ones differ (a trainer's
    #: names, or one expert's rows of a fused tensor): name -> byte range in its shard.
    views: dict[str, TensorInfo] = field(default_factory=dict, repr=False)
    #: where shard bytes come from (default: files under ``path``).
    shards: ShardReader | None = field(default=None, repr=False)
    #: the Hub repository and resolved commit this checkpoint was read from.
    repo_id: str | None = None
    revision: str | None = None
    _headers: dict[str, Header] = field(default_factory=dict, repr=False)

    @property
    def reader(self) -> ShardReader:
        """Where shard bytes come from: :attr:`shards`, else the files under ``path``."""
        return self.shards if self.shards is not None else LocalShards(self.path)

    @classmethod
    def open(cls, path: Path) -> SourceCheckpoint:
        """Open ``path``; cheap (no tensor data is read).

        Raises:
            SourceError: missing directory, missing/invalid ``config.json``, no
                safetensors weights, or an index naming a shard that is not there.
        """
        if not path.exists():
            raise SourceError(f"source {path} does not exist; pass a local checkpoint directory")
        if not path.is_dir():
            raise SourceError(
                f"source {path} is a file; pass the checkpoint directory that holds config.json"
            )
        cfg_path = path / "config.json"
        try:
            raw = cfg_path.read_bytes()
        except FileNotFoundError:
            raise SourceError(
                f"source {path} has no config.json; pass a Hugging Face-format checkpoint directory"
            ) from None
        try:
            config = json.loads(raw)
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise SourceError(
                f"{cfg_path} is not valid JSON ({exc}); restore the original file"
            ) from exc
        weight_map = _weight_map(path)
        return cls(path, config, sha256_bytes(raw), weight_map)

    def header(self, shard: str) -> Header:
        """Parsed header of one shard, cached; validates the shard is not truncated."""
        if shard not in self._headers:
            self._headers[shard] = self.reader.header(shard)
        return self._headers[shard]

    def tensor(self, name: str) -> TensorInfo:
        """Header entry (dtype, shape, file offset) for one tensor name.

        Raises:
            SourceError: the index names the tensor but its shard does not contain it.
        """
        if name in self.views:
            return self.views[name]
        shard = self.weight_map[name]
        info = self.header(shard).tensors.get(name)
        if info is None:
            raise SourceError(
                f"{INDEX_NAME} says {name} is in {shard}, but that shard does not contain it; "
                "the index and shards are from different checkpoints"
            )
        return info

    @property
    def architecture(self) -> str:
        """``architectures[0]`` from the config, or ``"<none>"``."""
        archs = self.config.get("architectures") or ["<none>"]
        return str(archs[0])


def language_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's settings: ``text_config`` for multimodal releases (Qwen3.5),
    else the config itself; ``vocab_size``, ``hidden_size`` and ``eos_token_id`` live there."""
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) else config


def _weight_map(path: Path) -> dict[str, str]:
    index = path / INDEX_NAME
    if index.exists():
        try:
            doc = json.loads(index.read_bytes())
            weight_map = {str(k): str(v) for k, v in doc["weight_map"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SourceError(
                f"{index} is not a valid safetensors index ({exc}); restore the original file"
            ) from exc
        missing = sorted({s for s in weight_map.values() if not (path / s).is_file()})
        if missing:
            raise SourceError(
                f"{INDEX_NAME} points at missing shard(s) {', '.join(missing)} in {path}; "
                "download the complete checkpoint"
            )
        return weight_map
    single = path / SINGLE_NAME
    if single.is_file():
        return {name: SINGLE_NAME for name in read_header(single).tensors}
    raise SourceError(
        f"source {path} has neither {INDEX_NAME} nor {SINGLE_NAME}; "
        "export needs safetensors weights (convert .bin checkpoints with save_pretrained first)"
    )
