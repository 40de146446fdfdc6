"""``fastmtp-export train`` on every family served with maps: the FastMTP recipe over the
family's reference head, with a real byte-level BPE tokenizer.

Each release is a family oracle (tests/heads/family_oracle.py) with a random MTP
layer, so there is something to learn; the recipe's mechanics (loss weights, resume,
two processes) are tested on MiMo in tests/train/test_train.py and shared by every head.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fastmtp_export.checkpoints.checkpoint import SourceCheckpoint, language_config
from fastmtp_export.checkpoints.readers import resolve_reader
from fastmtp_export.cli import app
from fastmtp_export.maps.synthetic_corpus import records
from fastmtp_export.train.trainer import TrainOptions, train

from ..checkpoints.families import CASES, FamilyCase
from ..conftest import BPE_MODEL_VOCAB, assert_one_line_error, tree_digest
from .family_oracle import write_family_oracle

FAST = TrainOptions(epochs=2, batch=4, lr=3e-3, max_length=40, save_every=100, warmup=0.0)
#: one case per family (and Qwen3.5's dense and MoE layers, and its fused experts)
TRAIN_CASES = [
    c for c in CASES
    if c.id in ("deepseek_v3", "glm4_moe", "qwen3_next", "qwen3_5-dense", "qwen3_5-moe-fused",
                "longcat_flash")
]  # fmt: skip


def _with_vocab(config: dict[str, Any], vocab: int) -> dict[str, Any]:
    cfg = json.loads(json.dumps(config))
    language_config(cfg)["vocab_size"] = vocab
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 chat records: a question, an answer in English or Russian."""
    rows = [
        {"messages": [{"role": "user", "content": f"question {i}"},
                      {"role": "assistant", "content": r["text"]}]}
        for i, r in enumerate([*records("en", 8, seed=1), *records("ru", 8, seed=2)])
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("family-train") / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _source(root: Path, case: FamilyCase, bpe_tokenizer: Path) -> Path:
    src = write_family_oracle(
        root / "src", case.family, _with_vocab(case.config, BPE_MODEL_VOCAB), copy=False
    )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bpe_tokenizer / name, src / name)
    return src


@pytest.mark.parametrize("case", TRAIN_CASES, ids=lambda c: c.id)
def test_train_learns_every_family_and_writes_an_export_source(
    case: FamilyCase, data: Path, bpe_tokenizer: Path, tmp_path: Path
) -> None:
    src = _source(tmp_path, case, bpe_tokenizer)
    before = tree_digest(src)
    out = tmp_path / "trained"
    result = train(src, [data], out, FAST, show_progress=False)
    history = result.record["history"]
    first, last = history[0]["loss"], history[-1]["loss"]
    assert all(b < a for a, b in zip(first, last, strict=True)), (first, last)
    assert tree_digest(src) == before
    # the head checkpoint holds the source's MTP tensors, under the source's names
    trained = load_file(str(out / "model.safetensors"))
    ckpt = SourceCheckpoint.open(src)
    plan = resolve_reader(ckpt).plan(ckpt, None)
    names = {info.name for info in plan.tensors.values()}
    original = {k: v for k, v in load_file(str(src / "model.safetensors")).items() if k in names}
    assert sorted(trained) == sorted(original)
    assert all(trained[k].dtype == original[k].dtype for k in trained)
    assert any(not torch.equal(trained[k], original[k]) for k in trained)
    assert (out / "config.json").read_bytes() == (src / "config.json").read_bytes()
    # ... and is an export source
    r = CliRunner().invoke(app, ["export", str(out), "--out", str(tmp_path / "art"), "-q"])
    assert r.exit_code == 0, r.output


def test_train_refuses_a_family_without_a_reference_head(data: Path, tmp_path: Path) -> None:
    from fastmtp_export.checkpoints.synthetic import write_synthetic

    from ..checkpoints.families import STEP3P5

    src = write_synthetic(tmp_path / "src", "step3p5", STEP3P5, num_mtp_layers=3)
    r = CliRunner().invoke(
        app, ["train", str(src), "--data", str(data), "--out", str(tmp_path / "out")]
    )
    assert_one_line_error(r, "no PyTorch reference of the step3p5 head")
    assert not (tmp_path / "out").exists()
