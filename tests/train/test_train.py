"""``fastmtp-export train`` on a tiny MiMo checkpoint with a real byte-level BPE tokenizer.

The real-model chain (SmolLM2: acceptance rises after training) is in
tests/real_model/test_chain.py; this file covers the recipe's mechanics.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner, Result

from fastmtp_export.checkpoints.synthetic import TINY, mimo_config, write_synthetic_mimo
from fastmtp_export.cli import app
from fastmtp_export.errors import TrainError
from fastmtp_export.evaluate.reference import MiMoMTPReference
from fastmtp_export.maps.synthetic_corpus import records
from fastmtp_export.train.data import load_chat_tokenizer, read_samples
from fastmtp_export.train.head import TrainableHead
from fastmtp_export.train.loss import step_losses, step_weights
from fastmtp_export.train.state import STATE_NAME
from fastmtp_export.train.trainer import TrainOptions, train

from ..conftest import (
    BPE_MODEL_VOCAB,
    assert_one_line_error,
    export_cli,
    source_tensors,
    tree_digest,
)
from . import run_ranks, train_killed_after

ROOT = Path(__file__).resolve().parents[2]
FAST = TrainOptions(epochs=2, batch=4, lr=3e-3, max_length=40, save_every=1, warmup=0.0)


@pytest.fixture
def source(tmp_path: Path, bpe_tokenizer: Path) -> Path:
    """A tiny MiMo checkpoint whose directory also holds its BPE tokenizer."""
    gen = json.loads((bpe_tokenizer / "generation_config.json").read_text())
    cfg = mimo_config({**TINY, "vocab_size": BPE_MODEL_VOCAB})
    cfg["eos_token_id"] = gen["eos_token_id"][0]
    src = write_synthetic_mimo(tmp_path / "src", cfg, seed=0, num_shards=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(bpe_tokenizer / name, src / name)
    return src


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """16 chat records: an English question, an answer in English or Russian."""
    rows = []
    for i, r in enumerate([*records("en", 8, seed=1), *records("ru", 8, seed=2)]):
        rows.append(
            {"messages": [{"role": "user", "content": f"question {i}"},
                          {"role": "assistant", "content": r["text"]}]}
        )  # fmt: skip
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _head(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def test_step_weights_are_the_papers() -> None:
    assert [round(w, 2) for w in step_weights(0.6, 3)] == [0.51, 0.31, 0.18]
    assert step_weights(0.6, 1) == [1.0]
    with pytest.raises(ValueError, match="beta"):
        step_weights(0.0, 3)


def test_trainable_head_computes_the_reference_forward(tiny_source: Path) -> None:
    """The fused-attention training forward equals the SGLang-exact reference."""
    weights = source_tensors(tiny_source, lambda _k: True)
    cfg = json.loads((tiny_source / "config.json").read_text())
    mtp = {k: v for k, v in weights.items() if "mtp_layers.0." in k}
    embed, lm_head = weights["model.embed_tokens.weight"], weights["lm_head.weight"]
    ref = MiMoMTPReference(mtp, cfg, embed, lm_head, dtype=torch.float32)
    head = TrainableHead(mtp, cfg, embed, lm_head)
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(12, TINY["hidden_size"], generator=gen)  # [T, H]
    ids = torch.randint(0, TINY["vocab_size"], (12,), generator=gen)  # [T]
    pos = torch.arange(12)
    want_logits, want_out = ref(hidden, ids, pos)
    got_out = head.step(hidden, ids, pos)
    torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head.logits(got_out), want_logits, rtol=1e-4, atol=1e-4)


def test_only_assistant_tokens_are_targets(source: Path, data: Path) -> None:
    tok = load_chat_tokenizer(source)
    samples, stats = read_samples([data], tok, max_length=10_000)
    assert stats.samples == 16
    assert stats.truncated == 0
    first = samples[0]
    answer = json.loads(data.read_text().splitlines()[0])["messages"][1]["content"]
    targets = [i for i, m in zip(first.ids, first.mask, strict=True) if m]
    # the trained tokens are the answer, its end-of-turn token and the template's newline
    assert tok.decode(targets) == answer + "<|im_end|>\n"
    assert not any(first.mask[: len(first.ids) - len(targets)])


def test_the_recursive_loss_uses_every_step(source: Path, data: Path) -> None:
    """Step k predicts token t+k+1 from step k-1's output: each step has its own gradient."""
    tok = load_chat_tokenizer(source)
    samples, _ = read_samples([data], tok, max_length=64)
    weights = source_tensors(source, lambda _k: True)
    cfg = json.loads((source / "config.json").read_text())
    mtp = {k: v for k, v in weights.items() if "mtp_layers.0." in k}
    head = TrainableHead(mtp, cfg, weights["model.embed_tokens.weight"], weights["lm_head.weight"])
    ids, mask = torch.tensor(samples[0].ids), torch.tensor(samples[0].mask)
    hidden = torch.randn(len(ids), TINY["hidden_size"])
    losses = step_losses(head, hidden, ids, mask, 3)
    assert losses.shape == (3,)
    assert bool((losses > 0).all())
    grads = []
    for k in range(3):
        head.zero_grad()
        losses[k].backward(retain_graph=True)
        grads.append(head.params["input_proj__weight"].grad.clone())
    assert all(g.abs().sum() > 0 for g in grads)
    assert not torch.equal(grads[0], grads[1])
    assert not torch.equal(grads[1], grads[2])


def test_train_learns_and_leaves_the_source_alone(source: Path, data: Path, tmp_path: Path) -> None:
    before = tree_digest(source)
    out = tmp_path / "trained"
    result = train(source, [data], out, FAST, show_progress=False)
    history = result.record["history"]
    assert len(history) == result.optimizer_steps == 8
    first, last = history[0]["loss"], history[-1]["loss"]
    assert all(b < a for a, b in zip(first, last, strict=True)), (first, last)
    assert tree_digest(source) == before
    trained = _head(out)
    original = source_tensors(source, lambda k: k.startswith("model.mtp_layers.0."))
    assert sorted(trained) == sorted(original)
    assert any(not torch.equal(trained[k], original[k]) for k in trained)
    assert (out / "config.json").read_bytes() == (source / "config.json").read_bytes()
    assert (out / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()
    assert not (out / STATE_NAME).exists()
    # the head checkpoint is an export source
    r = CliRunner().invoke(app, ["export", str(out), "--out", str(tmp_path / "art"), "-q"])
    assert r.exit_code == 0, r.output
    assert load_file(str(tmp_path / "art" / "model.safetensors")).keys() == trained.keys()


def test_a_resumed_run_equals_an_uninterrupted_one(
    source: Path, data: Path, tmp_path: Path
) -> None:
    whole = train(source, [data], tmp_path / "whole", FAST, show_progress=False)
    out = tmp_path / "resumed"
    train_killed_after(5, source, [data], out, FAST, show_progress=False)
    assert (out / STATE_NAME).exists()
    assert not (out / "model.safetensors").exists()
    with pytest.raises(TrainError, match="stopped run.*--resume"):
        train(source, [data], out, FAST, show_progress=False)
    with pytest.raises(TrainError, match="other options"):
        train(source, [data], out, TrainOptions(**{**FAST.__dict__, "lr": 1e-3}), resume=True)
    resumed = train(source, [data], out, FAST, resume=True, show_progress=False)
    assert resumed.resumed_from == 5
    a, b = _head(tmp_path / "whole"), _head(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.record["history"] == whole.record["history"]


_WORKER = """
import sys
from pathlib import Path
from fastmtp_export.train.trainer import TrainOptions, train
opts = TrainOptions(epochs=2, batch=4, lr=3e-3, max_length=40, save_every=100, warmup=0.0)
train(Path(sys.argv[1]), [Path(sys.argv[2])], Path(sys.argv[3]), opts, show_progress=False)
"""


@pytest.mark.slow
def test_two_gloo_processes_train_what_one_does(source: Path, data: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    train(source, [data], one, FAST, show_progress=False)
    two = tmp_path / "two"
    run_ranks(_WORKER, str(source), str(data), str(two))
    record = json.loads((two / "training.json").read_text())
    assert record["processes"] == 2
    a, b = _head(one), _head(two)
    init = source_tensors(source, lambda k: k.startswith("model.mtp_layers.0."))
    # the same update up to float summation order: the bf16 outputs agree exactly but for
    # one rounding step on the few elements whose float32 values straddle one
    differ = sum(int((a[k] != b[k]).sum()) for k in a)
    assert differ < 0.01 * sum(v.numel() for v in a.values())
    for k in a:
        assert not torch.equal(a[k], init[k]), k
        torch.testing.assert_close(b[k].float(), a[k].float(), rtol=2**-7, atol=1e-6)


def test_bad_train_input_is_one_line(source: Path, data: Path, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(app, ["train", str(source), "--data", str(data), *args])

    assert_one_line_error(run("--out", str(tmp_path / "o"), "--beta", "0"), "--beta")
    assert_one_line_error(run("--out", str(source / "x")), "overlaps the input")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    r = runner.invoke(app, ["train", str(source), "--data", str(bad), "--out", str(tmp_path / "o")])
    assert_one_line_error(r, f"{bad}:1", "no assistant turn")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": \n')
    r = runner.invoke(
        app, ["train", str(source), "--data", str(broken), "--out", str(tmp_path / "o")]
    )
    assert_one_line_error(r, f"{broken}:2", "not valid JSON")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert_one_line_error(run("--out", str(full)), "not empty")
    assert (full / "keep.txt").read_text() == "mine"


def test_train_can_write_the_artifact_directly(source: Path, data: Path, tmp_path: Path) -> None:
    """--export DRAFT [--token-maps MAPDIR] equals `train` then `export`, maps included."""
    runner = CliRunner()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records("en", 16, seed=3)))
    maps = tmp_path / "maps"
    r = runner.invoke(
        app, ["token-map", "build", str(corpus), "--tokenizer", str(source), "--out", str(maps),
              "--size", "64", "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    head, draft = tmp_path / "head", tmp_path / "draft"
    fast = ["--epochs", "1", "--batch", "4", "--lr", "3e-3", "--max-length", "40", "-q"]
    r = runner.invoke(
        app, ["train", str(source), "--data", str(data), "--out", str(head), "--export",
              str(draft), "--token-maps", str(maps), "--json", *fast],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["artifact"] == str(draft)
    separate = export_cli(head, tmp_path / "separate", "--token-maps", str(maps))
    for name in ("model.safetensors", "config.json", "freq_en_64.pt"):
        assert (draft / name).read_bytes() == (separate / name).read_bytes(), name
    r = runner.invoke(app, ["inspect", str(draft), "--json"])
    assert r.exit_code == 0, r.output
    assert list(json.loads(r.stdout)["token_maps"]["languages"]) == ["en"]


def test_export_options_are_checked_before_training(
    source: Path, data: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "head"

    def run(*args: str) -> Result:
        return runner.invoke(
            app, ["train", str(source), "--data", str(data), "--out", str(out), *args]
        )

    assert_one_line_error(run("--token-maps", str(tmp_path)), "--token-maps goes with --export")
    taken = tmp_path / "taken"
    taken.mkdir()
    assert_one_line_error(run("--export", str(taken)), f"{taken} exists", "--overwrite")
    assert_one_line_error(
        run("--export", str(tmp_path / "d"), "--token-maps", str(tmp_path)), "token_maps.json"
    )
    assert not out.exists()  # nothing trained, nothing written
