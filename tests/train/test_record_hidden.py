"""``fastmtp-export record-hidden`` against tests/train/fake_sglang.py: resuming, and a
one-line refusal of every server that cannot give SOURCE's prompt states.

tests/real_model/test_record_hidden.py runs it against real SGLang (SmolLM2, GLM-4.5).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from fastmtp_export.cli import app
from fastmtp_export.train.data import load_chat_tokenizer, read_samples
from fastmtp_export.train.hidden_format import MANIFEST_NAME, shard_name
from fastmtp_export.train.hidden_store import open_recorded

from ..conftest import assert_one_line_error
from .fake_sglang import FakeSGLang, fake_sglang, trunk_model, write_data, write_source


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("record")
    source = write_source(root / "src", bpe_tokenizer)
    data = write_data(root / "data.jsonl")
    samples, _ = read_samples([data], load_chat_tokenizer(source), max_length=2048)
    return {"source": source, "data": data, "model": trunk_model(source), "samples": samples}


@pytest.fixture
def server(world: dict[str, Any]) -> Iterator[FakeSGLang]:
    with fake_sglang(world["source"], world["model"]) as s:
        yield s


def _run(world: dict[str, Any], url: str, out: Path, *extra: str) -> Result:
    args = ["record-hidden", str(world["source"]), "--data", str(world["data"]),
            "--server", url, "--out", str(out), "--shard-records", "5", "--retries", "2",
            "-q", *extra]  # fmt: skip
    return CliRunner().invoke(app, args)


def _shards(out: Path) -> list[str]:
    return [e["file"] for e in json.loads((out / MANIFEST_NAME).read_text())["shards"]]


def _asked(server: FakeSGLang, world: dict[str, Any]) -> list[tuple[int, ...]]:
    """The prompts whose states were asked for to be stored (the check's probe first,
    the shortest sample, then the samples of the shards still missing)."""
    probe = min(world["samples"], key=lambda s: len(s.ids)).ids
    assert server.calls[0] == probe
    return sorted(server.calls[1:])


def test_a_failed_sample_leaves_its_shard_for_the_next_run(
    world: dict[str, Any], server: FakeSGLang, tmp_path: Path
) -> None:
    out = tmp_path / "rec"
    server.fail = {world["samples"][6].ids}  # shard 1 holds samples 5..9
    r = _run(world, server.url, out)
    assert_one_line_error(r, "1 of 16 sequences failed", "sample 6", "re-run the same command")
    assert _shards(out) == [shard_name(k) for k in (0, 2, 3)]
    assert not (out / shard_name(1)).exists()
    server.fail, server.calls = set(), []
    r = _run(world, server.url, out, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert (summary["already_done"], summary["recorded"], summary["failed"]) == (11, 5, 0)
    assert _asked(server, world) == sorted(world["samples"][i].ids for i in range(5, 10))
    assert _shards(out) == [shard_name(k) for k in range(4)]
    open_recorded(out, world["source"], world["samples"], [world["data"]])
    server.calls = []
    r = _run(world, server.url, out, "--json")  # complete: nothing to ask
    assert r.exit_code == 0
    assert json.loads(r.stdout)["recorded"] == 0
    assert _asked(server, world) == []


def test_what_a_killed_run_leaves_is_cleaned_up_and_recorded_again(
    world: dict[str, Any], server: FakeSGLang, tmp_path: Path
) -> None:
    out = tmp_path / "rec"
    assert _run(world, server.url, out).exit_code == 0
    (out / f".{shard_name(1)}.k2f9a").write_bytes(b"half a shard")  # a kill mid-write
    (out / f".{MANIFEST_NAME}.x1y2").write_bytes(b"{")
    shard = out / shard_name(2)
    shard.write_bytes(shard.read_bytes()[:1000])  # damaged after it was listed
    server.calls = []
    assert _run(world, server.url, out).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST_NAME, *(shard_name(k) for k in range(4))]
    )
    assert _asked(server, world) == sorted(world["samples"][i].ids for i in range(10, 15))
    open_recorded(out, world["source"], world["samples"], [world["data"]])


def test_an_out_of_something_else_is_refused(
    world: dict[str, Any], server: FakeSGLang, tmp_path: Path
) -> None:
    out = tmp_path / "rec"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_one_line_error(_run(world, server.url, out), "notes.txt", "empty or new directory")
    assert (out / "notes.txt").read_text() == "mine"
    out = tmp_path / "rec2"
    assert _run(world, server.url, out).exit_code == 0
    before = _shards(out)
    assert_one_line_error(
        _run(world, server.url, out, "--max-length", "30"), "sample options", "another --out"
    )
    assert_one_line_error(
        _run(world, server.url, out, "--shard-records", "4"), "--shard-records", "another --out"
    )
    assert _shards(out) == before


def _refuse(world: dict[str, Any], server: FakeSGLang, tmp_path: Path, *needles: str) -> None:
    out = tmp_path / "rec"
    assert_one_line_error(_run(world, server.url, out), *needles)
    assert not (out / MANIFEST_NAME).exists()


def test_a_server_without_hidden_states_is_one_line(
    world: dict[str, Any], server: FakeSGLang, tmp_path: Path
) -> None:
    assert server.info is not None
    server.info["enable_return_hidden_states"] = False
    server.info["return_hidden_states_mode"] = None
    flag = "--enable-return-hidden-states"
    _refuse(world, server, tmp_path, "does not return hidden states", flag)
    server.info, server.enabled = None, False  # no /server_info: SGLang's 400 tells
    _refuse(world, server, tmp_path, "refuses return_hidden_states", flag)


def test_a_radix_cache_is_one_line(
    world: dict[str, Any], server: FakeSGLang, tmp_path: Path
) -> None:
    assert server.info is not None
    server.info["disable_radix_cache"] = False
    _refuse(world, server, tmp_path, "radix cache", "--disable-radix-cache")
    server.info, server.cached = None, 3  # seen in a reply: rows of cached tokens missing
    _refuse(world, server, tmp_path, "radix cache", "--disable-radix-cache")


def test_chunked_prefill_is_one_line(
    world: dict[str, Any], server: FakeSGLang, tmp_path: Path
) -> None:
    assert server.info is not None
    server.info["chunked_prefill_size"] = 16
    _refuse(world, server, tmp_path, "chunks of 16 tokens", "--chunked-prefill-size -1")


def test_another_model_is_one_line(
    world: dict[str, Any], server: FakeSGLang, tmp_path: Path
) -> None:
    server.extra_width = 8
    _refuse(world, server, tmp_path, "width 72", "hidden_size is 64", "another model")
    server.extra_width = 0
    server.vocab += 64
    _refuse(world, server, tmp_path, "vocabulary of more than 2048", "SOURCE's has 2048")
    server.vocab -= 128
    _refuse(world, server, tmp_path, "vocabulary of 1984 tokens")
    server.vocab += 64
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"hidden_size": 64}')
    server.model_info["model_path"] = str(other)
    _refuse(world, server, tmp_path, f"serves {other}", "config.json differs")
    server.model_info["model_path"] = "org/remote-model"
    server.model_info["architectures"] = ["LlamaForCausalLM"]
    _refuse(world, server, tmp_path, "LlamaForCausalLM", "point --server")


def test_an_unreachable_server_is_one_line(world: dict[str, Any], tmp_path: Path) -> None:
    r = _run(world, "http://127.0.0.1:9", tmp_path / "rec")
    assert_one_line_error(r, "cannot reach an SGLang server", "--enable-return-hidden-states")
