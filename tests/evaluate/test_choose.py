"""``eval --choose`` on the oracle, where every answer is known: a draft is right exactly
when its token is in the draft vocabulary, and the two languages are disjoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastmtp_export.cli import app

from ..conftest import assert_one_line_error
from .test_eval import Pair, _chain_prompts, _eval, oracle

__all__ = ["oracle"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("choose") / "p.jsonl"
    # no EOS within the 12 new tokens, nor the 3 drafts past them the last step verifies
    records = [{"input_ids": ids, "lang": lang} for lang, ids in _chain_prompts(12 + 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _choose(pair: Pair, prompts: Path, *args: str) -> dict[str, Any]:
    r = _eval(pair, prompts, "--choose", "--max-new-tokens", "12", "--json", "-q", *args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_disjoint_languages_at_2k_rows(oracle: Pair, prompts: Path) -> None:
    got = _choose(oracle, prompts, "--mix", "en=0.5,zh=0.5")
    o = got["options"]
    full = o["full"]["languages"]
    assert full["en"] > 3
    assert full["zh"] > 3
    # one static map fails the other language completely: no draft is ever accepted, so
    # 12 tokens take 11 verify steps (the prefill gives the first)
    none = pytest.approx(12 / 11)
    assert o["map:en"]["languages"] == {"en": full["en"], "zh": none}
    assert o["map:zh"]["languages"] == {"en": none, "zh": full["zh"]}
    # 2K rows hold both languages: the shipped union, the plugin alone and mixed = full
    for name in ("union:256", "plugin:256", "plugin:256@32"):
        assert o[name]["languages"] == full, name
    assert o["union:256"]["serve"].endswith("freq_union_256.pt")
    # a tie between the stock union and the plugin names the stock option
    assert got["best"] == "union:256"


def test_k_rows_the_plugin_keeps_each_language_and_the_union_halves_both(
    oracle: Pair, prompts: Path
) -> None:
    got = _choose(oracle, prompts, "--rows", "128", "--mix", "en=0.5,zh=0.5", "--concurrency", "1")
    o = got["options"]
    full = o["full"]["languages"]
    assert o["plugin:128"]["languages"] == full  # one language at a time: its own map
    assert o["plugin:128@1"]["languages"] == full  # alone in its batch: the same
    union = o["union:128 (built)"]["languages"]
    assert all(1.0 < union[x] < full[x] for x in ("en", "zh"))  # half of each language's ids
    assert got["best"] == "plugin:128"
    assert got["sets"] == ["en", "zh"]  # K_u = K: one language per set


def test_a_minority_language_drafts_off_map_in_a_crowded_batch(oracle: Pair, prompts: Path) -> None:
    got = _choose(oracle, prompts, "--rows", "128", "--mix", "en=0.9,zh=0.1")
    o = got["options"]
    crowd = o["plugin:128@32"]["languages"]
    assert crowd["en"] == o["full"]["languages"]["en"]  # the majority keeps its set
    assert crowd["zh"] < 1.5  # zh is almost never the majority of 32: off-map drafts
    # the expected tau weighs languages by the mix
    en, zh = (o["map:en"]["languages"][x] for x in ("en", "zh"))
    assert o["map:en"]["mix_tau"] < en
    assert o["map:en"]["mix_tau"] > zh


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--mix", "en=2,en=1"], "is not LANG=SHARE"),
        (["--mix", "en=0"], "is not LANG=SHARE"),
        (["--mix", "fr=1"], "--mix names fr but no prompt is in it"),
        (["--rows", "64"], "--rows 64 must lie in [K=128, V=256]"),
    ],
)
def test_bad_choose_options(oracle: Pair, prompts: Path, args: list[str], needle: str) -> None:
    assert_one_line_error(_eval(oracle, prompts, "--choose", *args), needle)


def test_choose_refuses_options_it_would_ignore(oracle: Pair, prompts: Path) -> None:
    r = _eval(oracle, prompts, "--choose", "--vocab", "en")
    assert r.exit_code != 0
    assert "drop --vocab and --write-manifest" in r.output


def test_mix_without_choose(oracle: Pair, prompts: Path) -> None:
    r = _eval(oracle, prompts, "--mix", "en=1")
    assert r.exit_code != 0
    assert "pass --choose too" in r.output


def test_choose_text_names_the_best(oracle: Pair, prompts: Path) -> None:
    r = CliRunner().invoke(
        app,
        ["eval", str(oracle.draft), "--base", str(oracle.target), "--tokenizer",
         str(oracle.tokenizer), "--prompts", str(prompts), "--choose", "--max-new-tokens", "8",
         "--rows", "128", "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "best at K_u=128: plugin:128 " in r.stdout
    assert r.stdout.splitlines()[0].split() == ["option", "rows", "en", "zh", "mix"]
