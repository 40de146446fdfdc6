"""``train --drop-cut --max-repeat``: which distilled answers are left out, counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fastmtp_export.cli import app
from fastmtp_export.errors import TrainError
from fastmtp_export.train.data import load_chat_tokenizer, read_samples
from fastmtp_export.train.filters import DataFilter, repeat_share
from fastmtp_export.train.source import Source

from ..conftest import assert_one_line_error
from . import test_train

#: the tiny MiMo source with its BPE tokenizer (test_train's fixture)
source = test_train.source

FINE = "The river runs past the old mill and into the lake below the town."
LOOP = "I am here. " * 20


def _chat(answer: str, finish: str) -> dict[str, object]:
    return {
        "messages": [{"role": "user", "content": "Say something."},
                     {"role": "assistant", "content": answer}],
        "finish_reason": finish,
    }  # fmt: skip


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Four records: two whole answers, one cut at the length limit, one loop."""
    rows = [_chat(FINE, "stop"), _chat(FINE + " And then", "length"), _chat(LOOP, "stop"),
            _chat(FINE.upper(), "stop")]  # fmt: skip
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_repeat_share_counts_ngrams_seen_before() -> None:
    # (1,2,3,4) (2,3,4,1) (3,4,1,2) (4,1,2,3) (1,2,3,4): the fifth was seen, 1 of 5
    assert repeat_share([1, 2, 3, 4, 1, 2, 3, 4], 4) == pytest.approx(1 / 5)
    assert repeat_share([7] * 10, 4) == pytest.approx(6 / 7)  # 7 grams, all but the first seen
    assert repeat_share(list(range(50)), 4) == 0.0
    assert repeat_share([1, 2, 3], 4) == 0.0  # no 4-gram at all
    assert repeat_share([1, 2, 1, 2], 2) == pytest.approx(1 / 3)


def test_the_default_keeps_everything(source: Path, mixed: Path) -> None:
    samples, stats = read_samples([mixed], load_chat_tokenizer(source), max_length=10_000)
    assert (stats.records, stats.samples, stats.cut, stats.repetitive) == (4, 4, 0, 0)
    assert len(samples) == 4


def test_each_filter_drops_its_records_and_counts_them(source: Path, mixed: Path) -> None:
    tok = load_chat_tokenizer(source)
    kept_all, _ = read_samples([mixed], tok, max_length=10_000)
    whole = {s.ids for s in kept_all}

    cut_only, stats = read_samples([mixed], tok, max_length=10_000, keep=DataFilter(drop_cut=True))
    assert (stats.samples, stats.cut, stats.repetitive) == (3, 1, 0)
    loop_only, stats = read_samples(
        [mixed], tok, max_length=10_000, keep=DataFilter(max_repeat=0.5)
    )
    assert (stats.samples, stats.cut, stats.repetitive) == (3, 0, 1)
    both, stats = read_samples(
        [mixed], tok, max_length=10_000, keep=DataFilter(drop_cut=True, max_repeat=0.5)
    )
    assert (stats.samples, stats.cut, stats.repetitive) == (2, 1, 1)
    # the kept samples are the untouched ones, in file order
    assert [s.ids for s in both] == [kept_all[0].ids, kept_all[3].ids]
    assert {s.ids for s in cut_only} | {s.ids for s in loop_only} == whole


def test_the_repetition_filter_reads_the_answer_not_the_prompt(
    source: Path, tmp_path: Path
) -> None:
    rec = _chat(FINE, "stop")
    rec["messages"][0]["content"] = LOOP  # type: ignore[index]
    path = tmp_path / "loop-prompt.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    tok = load_chat_tokenizer(source)
    samples, stats = read_samples([path], tok, max_length=10_000, keep=DataFilter(max_repeat=0.5))
    assert (stats.samples, stats.repetitive) == (1, 0)
    assert repeat_share(list(samples[0].ids), 4) > 0.5  # the whole sequence does loop


def test_a_filter_that_leaves_nothing_says_so(source: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    path.write_text(json.dumps(_chat(FINE, "length")) + "\n")
    with pytest.raises(TrainError, match="1 dropped by the filters.*--drop-cut"):
        read_samples(
            [path], load_chat_tokenizer(source), max_length=100, keep=DataFilter(drop_cut=True)
        )


def test_train_records_the_counts(source: Path, mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "head"
    r: Result = CliRunner().invoke(
        app,
        ["train", str(source), "--data", str(mixed), "--out", str(out), "--drop-cut",
         "--max-repeat", "0.5", "--epochs", "1", "--batch", "2", "--max-length", "48", "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads((out / "training.json").read_text())["data"]
    assert (data["records"], data["samples"], data["cut"], data["repetitive"]) == (4, 2, 1, 1)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan"])
def test_a_bad_max_repeat_is_one_line_before_loading(
    source: Path, mixed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    def no_loading(*_a: object, **_k: object) -> None:
        raise AssertionError("the trunk was loaded")

    monkeypatch.setattr(Source, "load_target", no_loading)
    out = tmp_path / "o"
    r: Result = CliRunner().invoke(
        app, ["train", str(source), "--data", str(mixed), "--out", str(out), "--max-repeat", value]
    )
    assert_one_line_error(r, "--max-repeat must be in [0, 1]")
    assert not out.exists()
