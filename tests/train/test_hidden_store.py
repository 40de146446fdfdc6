"""The recorded-states format: a round trip through ``record-hidden`` and ``RecordedTrunk``,
and every refusal of :func:`open_recorded`, each one line naming cause and fix.

The recording comes from ``record-hidden`` against tests/train/fake_sglang.py, whose
states are the tiny model's transformers trunk; tests/real_model/test_record_hidden.py
records from real SGLang.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from fastmtp_export._util.hashing import sha256_file
from fastmtp_export.errors import TrainError
from fastmtp_export.train.data import Sample, load_chat_tokenizer, read_samples
from fastmtp_export.train.hidden_format import (
    MANIFEST_NAME,
    SEMANTICS,
    shard_name,
    write_manifest,
    write_shard,
)
from fastmtp_export.train.hidden_store import RecordedTrunk, open_recorded
from fastmtp_export.train.record_hidden import RecordOptions, record_hidden
from fastmtp_export.train.step import Trunk
from fastmtp_export.train.trainer import TrainOptions, train

from .fake_sglang import fake_sglang, trunk_model, write_data, write_source

PER_SHARD = 5  #: 16 samples: shards of 5, 5, 5 and 1


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Path) -> dict[str, Any]:
    """A tiny source, 16 chat samples and their recording (float32)."""
    root = tmp_path_factory.mktemp("hidden")
    source = write_source(root / "src", bpe_tokenizer)
    data = write_data(root / "data.jsonl")
    model = trunk_model(source)
    with fake_sglang(source, model) as server:
        record_hidden(
            source, [data], server.url, root / "rec", RecordOptions(shard_records=PER_SHARD),
            show_progress=False,
        )  # fmt: skip
    samples, _ = read_samples([data], load_chat_tokenizer(source), max_length=2048)
    return {"root": root, "source": source, "data": data, "model": model, "rec": root / "rec",
            "samples": samples}  # fmt: skip


def _copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


def _open(world: dict[str, Any], **kw: Any) -> RecordedTrunk:
    args: dict[str, Any] = {
        "hidden_dir": world["rec"], "source_dir": world["source"],
        "samples": world["samples"], "data_files": [world["data"]],
    }  # fmt: skip
    args.update(kw)
    return open_recorded(
        args.pop("hidden_dir"), args.pop("source_dir"), args.pop("samples"),
        args.pop("data_files"), **args,
    )  # fmt: skip


def _refused(call: Callable[[], object], *needles: str) -> str:
    with pytest.raises(TrainError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    assert ";" in message, f"no fix named: {message}"
    for needle in needles:
        assert needle in message, message
    return message


def _manifest(rec: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((rec / MANIFEST_NAME).read_text())
    return doc


def test_the_recording_round_trips_to_the_trunks_states(world: dict[str, Any]) -> None:
    samples: list[Sample] = world["samples"]
    rec = _open(world)
    ref = Trunk(world["model"], torch.device("cpu"), cache=True)  # one sequence at a time
    for i, s in enumerate(samples):
        ids = torch.tensor(s.ids)
        assert torch.equal(rec.one(i, ids), ref.one(i, ids)), i
    group = [3, 0, 7]
    lengths = [len(samples[i].ids) for i in group]
    ids = torch.zeros(3, max(lengths), dtype=torch.int64)  # [B, T]
    for b, i in enumerate(group):
        ids[b, : lengths[b]] = torch.tensor(samples[i].ids)
    got = rec.batch(group, ids, lengths)  # [B, T, H]
    assert torch.equal(got, ref.batch(group, ids, lengths))
    for b, n in enumerate(lengths):
        assert not got[b, n:].any()  # pad rows are zeros
    half = _open(world, dtype=torch.bfloat16)
    assert half.one(0, torch.tensor(samples[0].ids)).dtype == torch.bfloat16


def test_the_manifest_names_model_data_options_and_complete_shards(world: dict[str, Any]) -> None:
    doc = _manifest(world["rec"])
    src = world["source"]
    assert doc["semantics"] == SEMANTICS == "final-normed last hidden state"
    assert doc["source"]["config_sha256"] == sha256_file(src / "config.json")
    assert doc["source"]["tokenizer_sha256"] == sha256_file(src / "tokenizer.json")
    assert (doc["source"]["hidden_size"], doc["source"]["vocab_size"]) == (64, 2048)
    assert doc["data"]["files"] == [
        {"path": str(world["data"]), "sha256": sha256_file(world["data"])}
    ]
    assert doc["data"]["options"]["max_length"] == 2048
    assert doc["data"]["samples"] == 16
    assert doc["dtype"] == "float32"
    assert [e["records"] for e in doc["shards"]] == [
        [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15],
    ]  # fmt: skip
    for e in doc["shards"]:
        path = world["rec"] / e["file"]
        assert (e["bytes"], e["sha256"]) == (path.stat().st_size, sha256_file(path))
        tensors = load_file(str(path))
        names = [f"{i}.{k}" for i in e["records"] for k in ("ids", "hidden")]
        assert sorted(tensors) == sorted(names)
        for i in e["records"]:
            assert tensors[f"{i}.ids"].tolist() == list(world["samples"][i].ids)
            assert tensors[f"{i}.hidden"].shape == (len(world["samples"][i].ids), 64)


def test_no_or_an_invalid_manifest_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    empty = tmp_path / "empty"
    _refused(lambda: _open(world, hidden_dir=empty), "no manifest.json", "record-hidden")
    _refused(lambda: _open(world, hidden_dir=tmp_path / "nowhere"), "not a directory")
    rec = _copy(world["rec"], tmp_path / "rec")
    (rec / MANIFEST_NAME).write_text("{")
    _refused(lambda: _open(world, hidden_dir=rec), "not a valid hidden-state manifest")
    (rec / MANIFEST_NAME).write_text(json.dumps({"format": "something-else"}))
    _refused(lambda: _open(world, hidden_dir=rec), "not a valid hidden-state manifest")


def test_states_of_another_model_are_refused(world: dict[str, Any], tmp_path: Path) -> None:
    src = _copy(world["source"], tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "rope_theta": 1.0}))
    _refused(lambda: _open(world, source_dir=src), "another model", "config.json sha256")
    (src / "config.json").write_text(json.dumps({**cfg, "hidden_size": 96}))
    _refused(lambda: _open(world, source_dir=src), "another model", "hidden size 64", "is 96")


def test_another_tokenizer_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    src = _copy(world["source"], tmp_path / "src")
    with (src / "tokenizer.json").open("a") as fh:
        fh.write("\n")
    _refused(lambda: _open(world, source_dir=src), "another tokenizer", "record the states again")


def test_a_changed_data_line_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    lines = world["data"].read_text().splitlines(keepends=True)
    rec = json.loads(lines[2])
    rec["messages"][-1]["content"] += " and one more clause"
    lines[2] = json.dumps(rec) + "\n"
    data.write_text("".join(lines))
    samples, _ = read_samples([data], load_chat_tokenizer(world["source"]), max_length=2048)
    _refused(
        lambda: _open(world, samples=samples, data_files=[data]),
        "sample 2 has other token ids", "--data differs",
    )  # fmt: skip


def test_another_max_length_is_refused(world: dict[str, Any]) -> None:
    samples, _ = read_samples([world["data"]], load_chat_tokenizer(world["source"]), max_length=20)
    _refused(
        lambda: _open(world, samples=samples, max_length=20),
        "other token ids", "max_length 20 (recorded: 2048)",
    )  # fmt: skip


def test_a_sample_with_no_record_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    rec = _copy(world["rec"], tmp_path / "rec")
    doc = _manifest(rec)
    doc["shards"] = [e for e in doc["shards"] if e["file"] != shard_name(1)]
    write_manifest(rec, doc)
    _refused(
        lambda: _open(world, hidden_dir=rec),
        "no states for 5 of the 16 samples", "first: sample 5", "incomplete", "re-running the same",
    )  # fmt: skip


def test_a_truncated_or_missing_shard_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    rec = _copy(world["rec"], tmp_path / "rec")
    path = rec / shard_name(2)
    path.write_bytes(path.read_bytes()[:-100])
    _refused(lambda: _open(world, hidden_dir=rec), shard_name(2), "truncated", "delete")
    path.unlink()
    _refused(lambda: _open(world, hidden_dir=rec), shard_name(2), "missing", "re-run")


def test_a_flipped_byte_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    rec = _copy(world["rec"], tmp_path / "rec")
    path = rec / shard_name(0)
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0x10  # in the last tensor's data: same size, same header
    path.write_bytes(bytes(raw))
    _refused(lambda: _open(world, hidden_dir=rec), shard_name(0), "sha256", "record it again")
    _open(world, hidden_dir=rec, verify=False)  # size and header alone cannot see it
    raw[3] ^= 0x40  # the header's length: unreadable
    path.write_bytes(bytes(raw))
    _refused(lambda: _open(world, hidden_dir=rec, verify=False), shard_name(0), "unreadable header")


def test_a_shard_of_another_hidden_size_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    rec = _copy(world["rec"], tmp_path / "rec")
    doc = _manifest(rec)
    wide = {
        i: (torch.tensor(s.ids), torch.zeros(len(s.ids), 65))
        for i, s in enumerate(world["samples"])
        if i == 15
    }
    entry = write_shard(rec, 3, wide)
    doc["shards"] = [e for e in doc["shards"] if e["file"] != entry["file"]] + [entry]
    write_manifest(rec, doc)
    _refused(lambda: _open(world, hidden_dir=rec), "shape [", ", 65]", "hidden size is 64")


def test_training_from_recorded_states_equals_training_from_the_trunk(
    world: dict[str, Any], tmp_path: Path
) -> None:
    opts = TrainOptions(epochs=2, batch=4, lr=3e-3, save_every=100, warmup=0.0)
    plain = train(world["source"], [world["data"]], tmp_path / "plain", opts, show_progress=False)
    recorded = train(
        world["source"], [world["data"]], tmp_path / "recorded",
        dataclasses.replace(opts, hidden=world["rec"]),
        show_progress=False,
    )  # fmt: skip
    assert recorded.record["history"] == plain.record["history"]
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "recorded" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
