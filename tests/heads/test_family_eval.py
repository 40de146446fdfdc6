"""``eval`` on every family served with maps, on the family oracle (tests/heads/family_oracle.py).

The oracle's target follows a known token chain and its copy draft proposes that
chain, so the expected results are known without the code under test: every draft is
accepted (4 tokens per K=3 verify) with the full vocabulary or the prompt's own map,
none with the other language's map (one token per verify), and the output is the
chain.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from fastmtp_export.artifact import manifest as mf
from fastmtp_export.checkpoints.oracle import (
    EN,
    EOS,
    ZH,
    chain_permutation,
    greedy_chain,
    write_char_tokenizer,
)
from fastmtp_export.cli import app
from fastmtp_export.evaluate.reference import artifact_head
from fastmtp_export.evaluate.speculate import Draft, Target, greedy, speculate
from fastmtp_export.evaluate.target import check_pair, load_target_model
from fastmtp_export.heads.registry import HEADS
from fastmtp_export.maps.token_map import save_token_map

from ..checkpoints.families import CASES, QWEN3_NEXT, FamilyCase
from ..conftest import assert_one_line_error, export_cli
from .family_oracle import write_family_oracle

#: one case per family and variant the heads distinguish (GLM with and without q/k
#: norms, Qwen3.5 dense and MoE); the tied and fused-expert Qwen3.5 cases add nothing here
EVAL_CASES = [c for c in CASES if c.family in HEADS and c.id not in ("qwen3_5-dense-tied",)]
NEW = 12


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family-eval")
    (root / "tok").mkdir()
    write_char_tokenizer(root / "tok")
    save_token_map(root / "en.pt", EN)
    save_token_map(root / "zh.pt", [*ZH, EOS])
    perm, rng = chain_permutation(0), random.Random(5)
    prompts: list[dict[str, Any]] = []
    for lang, ids in (("en", EN[1:]), ("zh", ZH)):
        while sum(p["lang"] == lang for p in prompts) < 2:
            p = rng.sample(ids, 4)
            if EOS not in greedy_chain(p[-1], NEW, perm):
                prompts.append({"input_ids": p, "lang": lang})
    (root / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    return {"root": root, "tok": root / "tok", "prompts": root / "prompts.jsonl"}


def _release(shared: dict[str, Path], case: FamilyCase) -> tuple[Path, Path]:
    root = shared["root"] / case.id
    src = write_family_oracle(root / "src", case.family, case.config)
    maps = ["--token-map", f"en={shared['root'] / 'en.pt'}",
            "--token-map", f"zh={shared['root'] / 'zh.pt'}"]  # fmt: skip
    return src, export_cli(src, root / "draft", *maps, "--default-lang", "en")


def _eval(shared: dict[str, Path], src: Path, draft: Path, *args: str) -> Any:
    r = CliRunner().invoke(
        app,
        ["eval", str(draft), "--base", str(src), "--tokenizer", str(shared["tok"]),
         "--prompts", str(shared["prompts"]), "--max-new-tokens", str(NEW), "--json", *args],
    )  # fmt: skip
    assert r.exit_code == 0, r.output[-2000:]
    return json.loads(r.stdout)


@pytest.mark.parametrize("case", EVAL_CASES, ids=lambda c: c.id)
def test_eval_measures_the_known_acceptance(case: FamilyCase, shared: dict[str, Path]) -> None:
    src, draft = _release(shared, case)
    doc = _eval(shared, src, draft, "--vocab", "full", "--vocab", "en", "--vocab", "zh")
    assert doc["lossless"], doc["mismatches"]
    modes = doc["modes"]
    assert modes["full"]["all"]["accept_length"] == 4.0
    assert modes["full"]["all"]["histogram"] == [0, 0, 0, modes["full"]["all"]["verify_steps"]]
    # each map holds its own language's chain and none of the other's: every verify
    # after the prefill's token yields one token, NEW / (NEW - 1) per verify
    foreign = pytest.approx(NEW / (NEW - 1))
    assert modes["en"]["languages"]["en"]["accept_length"] == 4.0
    assert modes["en"]["languages"]["zh"]["accept_length"] == foreign
    assert modes["zh"]["languages"]["zh"]["accept_length"] == 4.0
    assert modes["zh"]["languages"]["en"]["accept_length"] == foreign


@pytest.mark.parametrize(
    "case", [c for c in EVAL_CASES if c.id in ("deepseek_v3", "glm4_moe")], ids=lambda c: c.id
)
def test_eval_reads_the_vllm_layout_of_a_nextn_draft(
    case: FamilyCase, shared: dict[str, Path]
) -> None:
    """``export --for vllm`` keeps the release's layer number; eval drafts with it the
    same (every draft accepted), not with an unloaded layer."""
    src = write_family_oracle(shared["root"] / f"{case.id}-vllm" / "src", case.family, case.config)
    draft = export_cli(src, src.parent / "draft", "--for", "vllm")
    assert json.loads((draft / "config.json").read_text())["num_hidden_layers"] != 1
    doc = _eval(shared, src, draft, "--vocab", "full")
    assert doc["lossless"], doc["mismatches"]
    assert doc["modes"]["full"]["all"]["accept_length"] == 4.0


def test_speculation_on_a_recurrent_target_rolls_back_rejections(
    shared: dict[str, Path],
) -> None:
    """Qwen3-Next's linear-attention state cannot be cropped: with a blurred copy draft,
    verifies accept all, some or none of the drafts, and the output must still be the
    target's own greedy output."""
    root = shared["root"] / "qwen3_next-noisy"
    src = write_family_oracle(root / "src", "qwen3_next", QWEN3_NEXT, draft_noise=0.2)
    draft = export_cli(src, root / "draft")
    manifest = mf.load(draft)
    info = check_pair(src, draft, manifest)
    model = load_target_model(src, info.config, "qwen3_next", torch.device("cpu"), torch.float32)
    target = Target(model)
    assert target.recurrent
    head = Draft(artifact_head(model, draft, torch.float32, "qwen3_next"))
    accepted: list[int] = []
    for seed in range(3):
        prompt = random.Random(seed).sample(range(1, 250), 6)
        plain = greedy(target, prompt, 16, eos=set())
        spec = speculate(target, head, prompt, 16, eos=set())
        assert spec.output == plain.output
        accepted += spec.accepted
    assert {0, 3} <= set(accepted), accepted  # all-rejected and all-accepted verifies
    assert {1, 2} & set(accepted), accepted  # and partial ones, re-run from the snapshot


def test_eval_refuses_a_family_without_a_reference_head(tmp_path: Path) -> None:
    from fastmtp_export.checkpoints.synthetic import write_synthetic

    from ..checkpoints.families import MIMO_V2

    src = write_synthetic(tmp_path / "src", "mimo_v2", MIMO_V2, num_mtp_layers=3)
    draft = export_cli(src, tmp_path / "draft")
    (tmp_path / "p.jsonl").write_text('{"input_ids": [1, 2, 3]}\n')
    r = CliRunner().invoke(
        app, ["eval", str(draft), "--base", str(src), "--prompts", str(tmp_path / "p.jsonl")]
    )
    assert_one_line_error(r, "no PyTorch reference of the mimo_v2 head", "glm4_moe")
