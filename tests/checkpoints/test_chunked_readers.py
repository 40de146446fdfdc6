"""Every shard reader returns the file's bytes, whatever the ranges and chunk size.

The readers stream in chunks of ``CHUNK_BYTES`` and may reuse one buffer, so a
``read`` that joined views after the fact returned copies of the last chunk for any
range longer than a chunk (issue 25). Random ranges with a random small chunk size,
through every reader: local files, a Hub shard complete in the cache, and HTTP ranges
from the local Hub; results are compared after all reads, so aliasing across calls
shows too.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastmtp_export.checkpoints import safetensors_io
from fastmtp_export.checkpoints.checkpoint import LocalShards, ShardReader, joined
from fastmtp_export.checkpoints.hub_source import HubShards

from ..hub.fake_hub import FakeHub

SHARD = "model-00001-of-00001.safetensors"
SIZE = 40_000


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(25).randbytes(SIZE)


@pytest.fixture
def folder(tmp_path: Path, data: bytes) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / SHARD).write_bytes(data)
    return tmp_path / "src"


@pytest.fixture
def hub(data: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeHub, str]]:
    from huggingface_hub import constants

    with FakeHub() as h:
        sha = h.add_model("bob/ranges", {SHARD: data})
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            h.url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        yield h, sha


def _ranges(rng: random.Random) -> list[tuple[int, int]]:
    """Random ranges, plus the edge cases: empty, whole file, the last byte."""
    out = [(0, 0), (0, SIZE), (SIZE - 1, 1), (SIZE, 0)]
    for _ in range(12):
        begin = rng.randrange(SIZE)
        out.append((begin, rng.randrange(SIZE - begin + 1)))
    return out


def _check(reader: ShardReader, data: bytes, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(
        safetensors_io, "CHUNK_BYTES", rng.choice([1, 7, 512, rng.randrange(2, 5000)])
    )
    ranges = _ranges(rng)
    reads = [reader.read(SHARD, b, n) for b, n in ranges]
    streamed = [joined(reader.chunks(SHARD, b, n)) for b, n in ranges]
    for (b, n), got, chunks in zip(ranges, reads, streamed, strict=True):
        assert got == data[b : b + n], (b, n, safetensors_io.CHUNK_BYTES)
        assert chunks == data[b : b + n], (b, n, safetensors_io.CHUNK_BYTES)


@pytest.mark.parametrize("seed", range(6))
def test_local_shards_read_what_slicing_gives(
    folder: Path, data: bytes, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _check(LocalShards(folder), data, seed, monkeypatch)


@pytest.mark.parametrize("seed", range(6))
def test_a_shard_complete_in_the_cache_reads_what_slicing_gives(
    folder: Path, data: bytes, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = HubShards("bob/ranges", "0" * 40, {SHARD: SIZE}, folder)
    _check(shards, data, seed, monkeypatch)
    assert shards.bytes_read == 0  # all from disk


@pytest.mark.parametrize("seed", range(3))
def test_http_ranges_read_what_slicing_gives(
    hub: tuple[FakeHub, str], tmp_path: Path, data: bytes, seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fake, sha = hub
    shards = HubShards("bob/ranges", sha, {SHARD: SIZE}, tmp_path)  # nothing cached
    _check(shards, data, seed, monkeypatch)
    assert shards.bytes_read > 0
    assert fake.served
