"""MTP-D self-distillation (``--kd-weight``): the KL term, its restriction, its chunks,
and what it leaves alone (the plain loss, the frozen trunk, resuming, bad options)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file
from typer.testing import CliRunner, Result

from fastmtp_export.cli import app
from fastmtp_export.errors import TrainError
from fastmtp_export.train.data import Sample, load_chat_tokenizer, read_samples
from fastmtp_export.train.dist import Dist
from fastmtp_export.train.head import TrainableHead
from fastmtp_export.train.kd import FORWARD, REVERSE, KDConfig, kl_sum
from fastmtp_export.train.loss import losses
from fastmtp_export.train.source import Source
from fastmtp_export.train.state import STATE_NAME
from fastmtp_export.train.step import Trunk, train_step
from fastmtp_export.train.trainer import TrainOptions, train

from ..conftest import BPE_MODEL_VOCAB, assert_one_line_error, source_tensors
from . import test_train, train_killed_after
from .test_train import FAST

#: the tiny MiMo source with its BPE tokenizer, and 16 chat records (test_train's fixtures)
source, data = test_train.source, test_train.data

V, H = 40, 8


def _case(rows: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """student logits [rows, V], teacher hidden [rows, H], lm_head [V, H]."""
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(rows, V, generator=gen) * 3
    hidden = torch.randn(rows, H, generator=gen)
    lm_head = torch.randn(V, H, generator=gen)
    return student, hidden, lm_head


def _reference(
    student: torch.Tensor, hidden: torch.Tensor, lm_head: torch.Tensor, n: int, direction: str
) -> float:
    """Row by row, in float64: restrict both to the teacher's n largest, renormalise, KL."""
    total = 0.0
    for row in range(student.shape[0]):
        teacher = (lm_head.double() @ hidden[row].double()).tolist()  # [V]
        ids = sorted(range(V), key=lambda i: -teacher[i])[:n]
        t = torch.tensor([teacher[i] for i in ids], dtype=torch.float64)
        s = student[row].double()[ids]
        p_t, p_s = t.exp() / t.exp().sum(), s.exp() / s.exp().sum()
        if direction == FORWARD:
            total += float((p_t * (p_t.log() - p_s.log())).sum())
        else:
            total += float((p_s * (p_s.log() - p_t.log())).sum())
    return total


@pytest.mark.parametrize("direction", [REVERSE, FORWARD])
@pytest.mark.parametrize("n", [V, 7, 1])
def test_the_kl_term_is_the_direct_computation(direction: str, n: int) -> None:
    student, hidden, lm_head = _case()
    got = kl_sum(student, hidden, lm_head, KDConfig(1.0, n, direction))
    want = _reference(student, hidden, lm_head, n, direction)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-6)
    if n == 1:
        assert float(got) == pytest.approx(0.0, abs=1e-6)  # one token: both distributions agree


def test_the_two_directions_differ_and_top_n_of_v_is_unrestricted() -> None:
    student, hidden, lm_head = _case()
    full_s = F.log_softmax(student.double(), -1)  # [N, V]
    full_t = F.log_softmax(hidden.double() @ lm_head.double().T, -1)  # [N, V]
    forward = float((full_t.exp() * (full_t - full_s)).sum())
    reverse = float((full_s.exp() * (full_s - full_t)).sum())
    assert abs(forward - reverse) > 0.1 * forward
    got_f = kl_sum(student, hidden, lm_head, KDConfig(1.0, V, FORWARD))
    got_r = kl_sum(student, hidden, lm_head, KDConfig(1.0, V, REVERSE))
    assert float(got_f) == pytest.approx(forward, rel=1e-5)
    assert float(got_r) == pytest.approx(reverse, rel=1e-5)


@pytest.mark.parametrize("direction", [REVERSE, FORWARD])
def test_chunks_equal_one_pass_and_only_the_student_gets_a_gradient(direction: str) -> None:
    student, hidden, lm_head = _case(rows=11)
    grads = []
    values = []
    for chunk in (1, 4, 11, 100):
        s = student.clone().requires_grad_(True)
        h, w = hidden.clone().requires_grad_(True), lm_head.clone().requires_grad_(True)
        out = kl_sum(s, h, w, KDConfig(1.0, 9, direction, chunk_rows=chunk))
        out.backward()
        assert h.grad is None
        assert w.grad is None
        assert s.grad is not None
        assert bool((s.grad != 0).any())
        values.append(out.detach())
        grads.append(s.grad)
    for v, g in zip(values[1:], grads[1:], strict=True):
        torch.testing.assert_close(v, values[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(g, grads[0], rtol=1e-6, atol=1e-7)
    # the gradient lives on the teacher's top 9 ids of each row only
    top = (hidden @ lm_head.T).topk(9, dim=-1).indices  # [N, 9]
    outside = torch.ones_like(student, dtype=torch.bool).scatter_(1, top, False)
    assert bool((grads[0][outside] == 0).all())


def _today_step_losses(
    head: TrainableHead, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, steps: int
) -> torch.Tensor:
    """``loss.step_losses`` as it was before the KL term and batching (commit e4e55be)."""
    t = ids.shape[0]
    positions = torch.arange(t, device=ids.device)
    h = hidden.float()
    sums = []
    for k in range(1, steps + 1):
        next_ids = torch.roll(ids, -k)
        next_ids[t - k :] = 0
        h = head.step(h, next_ids, positions)
        n = max(t - k - 1, 0)
        keep = mask[k + 1 :]
        if n == 0 or not bool(keep.any()):
            sums.append(h.sum() * 0.0)
            continue
        logits = head.logits(h[:n][keep])
        sums.append(F.cross_entropy(logits, ids[k + 1 :][keep], reduction="sum"))
    return torch.stack(sums)


def _head_and_samples(source: Path, data: Path) -> tuple[TrainableHead, list[Sample]]:
    weights = source_tensors(source, lambda _k: True)
    cfg = json.loads((source / "config.json").read_text())
    mtp = {k: v for k, v in weights.items() if "mtp_layers.0." in k}
    head = TrainableHead(mtp, cfg, weights["model.embed_tokens.weight"], weights["lm_head.weight"])
    samples, _ = read_samples([data], load_chat_tokenizer(source), max_length=48)
    return head, samples


def test_weight_zero_is_todays_loss_bit_for_bit(source: Path, data: Path) -> None:
    head, samples = _head_and_samples(source, data)
    assert TrainOptions(kd_weight=0.0, kd_top_n=5).kd() is None
    for sample in samples[:4]:
        ids, mask = torch.tensor(sample.ids), torch.tensor(sample.mask)
        hidden = torch.randn(len(ids), head.embed.shape[1])  # [T, H]
        got, kl = losses(head, hidden, ids, mask, 3, TrainOptions().kd())
        assert kl is None
        assert torch.equal(got, _today_step_losses(head, hidden, ids, mask, 3))
        with_kl, kl = losses(head, hidden, ids, mask, 3, KDConfig(1.0, 50))
        assert kl is not None
        assert bool((kl > 0).all())
        assert torch.equal(with_kl, got)  # the KL is a separate term; CE is untouched


def test_the_teacher_of_step_k_is_the_main_head_at_t_plus_k(source: Path, data: Path) -> None:
    """Step k at position t predicts x_{t+k+1}; so does lm_head(trunk state at t+k)."""
    head, samples = _head_and_samples(source, data)
    ids, mask = torch.tensor(samples[0].ids), torch.tensor(samples[0].mask)
    t = len(ids)
    hidden = torch.randn(t, head.embed.shape[1])  # [T, H]
    _ce, kl = losses(head, hidden, ids, mask, 2, KDConfig(1.0, 30, FORWARD))
    assert kl is not None
    h = hidden
    for k in (1, 2):
        shifted = torch.cat([ids[k:], torch.zeros(k, dtype=torch.int64)])  # x_{t+k}
        h = head.step(h, shifted, torch.arange(t))
        rows = [i for i in range(t - k - 1) if bool(mask[i + k + 1])]
        student = head.logits(h[rows]).detach()  # [N, V]
        want = _reference_vocab(student, hidden[[i + k for i in rows]], head.lm_head, 30)
        assert float(kl[k - 1]) == pytest.approx(want, rel=1e-4)


def _reference_vocab(
    student: torch.Tensor, teacher_hidden: torch.Tensor, lm_head: torch.Tensor, n: int
) -> float:
    """Forward KL over the teacher's top n, in float64 (any vocabulary size)."""
    t_all = teacher_hidden.double() @ lm_head.double().T  # [N, V]
    top = t_all.topk(n, dim=-1)
    t = F.log_softmax(top.values, -1)
    s = F.log_softmax(student.double().gather(-1, top.indices), -1)
    return float((t.exp() * (t - s)).sum())


def test_the_kl_term_trains_only_the_head(source: Path, data: Path) -> None:
    """Gradients reach the MTP layer only: not the trunk, its embedding or lm_head."""
    src = Source.open(source)
    model = src.load_target(torch.device("cpu"), torch.float32)
    head = TrainableHead(
        src.head_weights(), src.ckpt.config,
        model.get_input_embeddings().weight, model.get_output_embeddings().weight,
    )  # fmt: skip
    samples, _ = read_samples([data], load_chat_tokenizer(source), max_length=48)

    weights = torch.tensor([0.5, 0.3, 0.2])  # [K]
    kd = KDConfig(1.0, 64)
    for p in head.parameters():
        p.grad = None
    train_step(
        [0, 1, 2], samples, 3, 4096, Trunk(model, torch.device("cpu"), cache=False),
        head, weights, kd, Dist(torch.device("cpu")), torch.device("cpu"),
    )  # fmt: skip
    assert all(p.grad is None for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters())
    assert head.embed.grad is None
    assert head.lm_head.grad is None
    assert not head.embed.requires_grad
    assert not head.lm_head.requires_grad
    grads = {k: p.grad for k, p in head.params.items()}
    assert all(g is not None and bool((g != 0).any()) for g in grads.values()), [
        k for k, g in grads.items() if g is None or not bool((g != 0).any())
    ]


KD = TrainOptions(
    **{**FAST.__dict__, "kd_weight": 0.5, "kd_top_n": 300, "micro_batch_tokens": 150,
       "max_length": 72}
)  # fmt: skip


@pytest.mark.parametrize("cache_gb", [4.0, 0.0])
def test_a_resumed_kl_run_equals_an_uninterrupted_one(
    source: Path, data: Path, tmp_path: Path, cache_gb: float
) -> None:
    """KL on, 2 sequences of 70-72 tokens per forward, and the trunk's states cached
    (2 epochs) or recomputed on each micro-batch: the kill is in the second epoch."""
    opts = TrainOptions(**{**KD.__dict__, "cache_gb": cache_gb})
    whole = train(source, [data], tmp_path / "whole", opts, show_progress=False)
    record = json.loads((tmp_path / "whole" / "training.json").read_text())
    assert record["options"]["kd_weight"] == 0.5
    assert record["options"]["kd_top_n"] == 300
    assert record["options"]["kd_direction"] == REVERSE
    assert all(len(h["kl"]) == 3 and min(h["kl"]) > 0 for h in record["history"])
    plain_opts = TrainOptions(**{**opts.__dict__, "kd_weight": 0.0})
    plain = train(source, [data], tmp_path / "plain", plain_opts, show_progress=False)
    assert "kl" not in plain.record["history"][0]
    # the same first step (the KL is its own term), then the KL's gradient shows
    assert plain.record["history"][0]["loss"] == whole.record["history"][0]["loss"]
    assert plain.record["history"][1]["loss"] != whole.record["history"][1]["loss"]
    out = tmp_path / "resumed"
    train_killed_after(5, source, [data], out, opts, show_progress=False)
    assert (out / STATE_NAME).exists()
    for change in ({"kd_weight": 1.0}, {"kd_top_n": 200}, {"kd_direction": FORWARD}):
        with pytest.raises(TrainError, match="other options"):
            train(source, [data], out, TrainOptions(**{**opts.__dict__, **change}), resume=True)
    resumed = train(source, [data], out, opts, resume=True, show_progress=False)
    assert resumed.resumed_from == 5
    a, b = (
        load_file(str(tmp_path / "whole" / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.record["history"] == whole.record["history"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--kd-weight", "-1"], "--kd-weight"),
        (["--kd-weight", "nan"], "--kd-weight"),
        (["--kd-top-n", "0"], "--kd-top-n"),
        (["--kd-weight", "1", "--kd-top-n", str(BPE_MODEL_VOCAB + 1)], f"({BPE_MODEL_VOCAB} "),
        (["--kd-direction", "sideways"], "--kd-direction must be one of reverse, forward"),
        (["--micro-batch-tokens", "-1"], "--micro-batch-tokens"),
        (["--cache-gb", "-0.5"], "--cache-gb"),
    ],
)
def test_a_bad_new_option_is_one_line_before_loading(
    source: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    args: list[str], needle: str,
) -> None:  # fmt: skip
    def no_loading(*_a: object, **_k: object) -> None:
        raise AssertionError("the trunk was loaded")

    monkeypatch.setattr(Source, "load_target", no_loading)
    out = tmp_path / "o"
    r: Result = CliRunner().invoke(
        app, ["train", str(source), "--data", str(data), "--out", str(out), *args]
    )
    assert_one_line_error(r, needle)
    assert not out.exists()
