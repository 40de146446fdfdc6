"""bench/_multi_eval.py: the learning curve's shared-reference evaluation gives exactly
what ``fastmtp-export eval`` gives, head by head and K by K, from parallel processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastmtp_export.cli import app

from ..evaluate.test_eval import Pair, _chain_prompts, _write_prompts, noisy, oracle

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from _multi_eval import evaluate_parallel  # noqa: E402

__all__ = ["noisy", "oracle"]  # the fixtures, shared with tests/evaluate


def test_multi_eval_equals_the_eval_command(noisy: Pair, tmp_path: Path) -> None:
    prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(12))
    jobs = [(noisy.draft, 3), (noisy.draft, 5), (noisy.draft, 1)]
    got = evaluate_parallel(
        noisy.target, prompts, jobs, 12, 6, processes=2, tokenizer_dir=noisy.tokenizer
    )
    assert len(got) == 3
    for (_, k), doc in zip(jobs, got, strict=True):
        r = CliRunner().invoke(
            app,
            ["eval", str(noisy.draft), "--base", str(noisy.target), "--tokenizer",
             str(noisy.tokenizer), "--prompts", str(prompts), "--vocab", "full", "--k", str(k),
             "--max-new-tokens", "12", "--json", "-q"],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        want = json.loads(r.stdout)["modes"]["full"]["all"]
        assert len(doc["histogram"]) == k + 1
        assert doc["histogram"] == want["histogram"]
        assert doc["accept_length"] == pytest.approx(want["accept_length"])
        assert doc["position_acceptance"] == pytest.approx(want["position_acceptance"])
        assert doc["lossless"]
    # the noisy pair accepts some drafts, not all: the comparison can tell heads apart
    assert 0 < got[0]["position_acceptance"][0] < 1
