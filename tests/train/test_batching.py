"""Throughput mechanics of ``train``: several sequences per forward (right-padded micro-
batches) and the frozen trunk's states kept across epochs. Both must compute what one
sequence at a time computes (up to float rounding), and the cache exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastmtp_export.train.data import Sample, load_chat_tokenizer, read_samples
from fastmtp_export.train.dist import Dist
from fastmtp_export.train.head import TrainableHead
from fastmtp_export.train.kd import KDConfig
from fastmtp_export.train.loss import losses
from fastmtp_export.train.source import Source
from fastmtp_export.train.step import Trunk, cache_fits, micro_batches, train_step
from fastmtp_export.train.trainer import TrainOptions, train

from . import test_train
from .test_train import FAST

#: the tiny MiMo source with its BPE tokenizer, and 16 chat records (test_train's fixtures)
source, data = test_train.source, test_train.data

CPU = torch.device("cpu")


def test_micro_batches_bound_padded_tokens() -> None:
    lengths = {3: 10, 1: 30, 4: 20, 0: 30}
    assert micro_batches([3, 1, 4, 0], lengths, 60) == [[1, 0], [4, 3]]
    assert micro_batches([3, 1, 4, 0], lengths, 0) == [[3], [1], [4], [0]]  # given order
    assert micro_batches([3, 1, 4, 0], lengths, 10) == [[1], [0], [4], [3]]
    assert micro_batches([3, 1, 4, 0], lengths, 1000) == [[1, 0, 4, 3]]


def test_cache_fits_counts_tokens_times_hidden_times_bytes() -> None:
    samples = [Sample((1,) * 10, (True,) * 10), Sample((1,) * 20, (True,) * 20)]
    need = 30 * 4 * 4  # tokens x H x float32 bytes
    assert cache_fits(samples, 4, torch.float32, need / 2**30)
    assert not cache_fits(samples, 4, torch.float32, (need - 1) / 2**30)
    assert cache_fits(samples, 4, torch.bfloat16, (need // 2) / 2**30)


def _setup(source: Path, data: Path) -> tuple[object, TrainableHead, list[Sample]]:
    src = Source.open(source)
    model = src.load_target(CPU, torch.float32)
    head = TrainableHead(
        src.head_weights(), src.ckpt.config,
        model.get_input_embeddings().weight, model.get_output_embeddings().weight,
    )  # fmt: skip
    samples, _ = read_samples([data], load_chat_tokenizer(source), max_length=10_000)
    cut = [72, 30, 55, 41, 64, 25, 70, 33]  # varied lengths, so micro-batches hold pads
    return (
        model,
        head,
        [Sample(s.ids[: cut[i % 8]], s.mask[: cut[i % 8]]) for i, s in enumerate(samples)],
    )


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to float32 summation order, relative to the tensor's scale."""
    assert bool(want.abs().max() > 0)
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())


def _grads(head: TrainableHead) -> dict[str, torch.Tensor]:
    out = {}
    for k, p in head.params.items():
        assert p.grad is not None
        out[k] = p.grad.clone()
        p.grad = None
    return out


@pytest.mark.parametrize("kd", [None, KDConfig(0.7, 100)])
def test_a_padded_batch_computes_what_one_sequence_at_a_time_does(
    source: Path, data: Path, kd: KDConfig | None
) -> None:
    """The loss function alone: sums and gradients of 5 sequences, together and apart."""
    _model, head, samples = _setup(source, data)
    chosen = samples[:5]
    gen = torch.Generator().manual_seed(0)
    hiddens = [torch.randn(len(s.ids), head.embed.shape[1], generator=gen) for s in chosen]
    lengths = [len(s.ids) for s in chosen]
    assert len(set(lengths)) > 1  # padding is exercised
    apart_ce, apart_kl = torch.zeros(3), torch.zeros(3)
    for s, h in zip(chosen, hiddens, strict=True):
        ce, kl = losses(head, h, torch.tensor(s.ids), torch.tensor(s.mask), 3, kd)
        (ce.sum() + (0 if kl is None else kl.sum())).backward()
        apart_ce += ce.detach()
        apart_kl += 0 if kl is None else kl.detach()
    apart = _grads(head)
    width = max(lengths)
    ids = torch.zeros(5, width, dtype=torch.int64)  # [B, T]
    mask = torch.zeros(5, width, dtype=torch.bool)  # [B, T]
    hidden = torch.full((5, width, head.embed.shape[1]), 7.0)  # [B, T, H]: junk in the pads
    for b, (s, h) in enumerate(zip(chosen, hiddens, strict=True)):
        ids[b, : len(s.ids)], mask[b, : len(s.ids)] = torch.tensor(s.ids), torch.tensor(s.mask)
        hidden[b, : len(s.ids)] = h
    ce, kl = losses(head, hidden, ids, mask, 3, kd)
    (ce.sum() + (0 if kl is None else kl.sum())).backward()
    together = _grads(head)
    torch.testing.assert_close(ce.detach(), apart_ce, rtol=1e-5, atol=1e-4)
    if kd is not None:
        assert kl is not None
        torch.testing.assert_close(kl.detach(), apart_kl, rtol=1e-5, atol=1e-5)
    for k in apart:
        _close(together[k], apart[k])


@pytest.mark.parametrize("cache", [False, True])
def test_a_batched_step_equals_one_sequence_at_a_time(
    source: Path, data: Path, cache: bool
) -> None:
    """The whole step through the real tiny trunk: micro-batches of 1, 3 or all sequences."""
    model, head, samples = _setup(source, data)
    weights = torch.tensor([0.5, 0.3, 0.2])  # [K]
    mine = [5, 0, 11, 3, 8, 14]
    results = []
    for budget in (0, 3 * 72, 10_000):
        trunk = Trunk(model, CPU, cache=cache)
        ce, _ = train_step(mine, samples, 3, budget, trunk, head, weights, None, Dist(CPU), CPU)
        results.append((ce, _grads(head)))
    for ce, grads in results[1:]:
        torch.testing.assert_close(ce, results[0][0], rtol=1e-5, atol=1e-5)
        for k in grads:
            _close(grads[k], results[0][1][k])


def test_cached_states_equal_recomputed_ones(source: Path, data: Path) -> None:
    model, _head, samples = _setup(source, data)
    cached = Trunk(model, CPU, cache=True)
    plain = Trunk(model, CPU, cache=False)
    ids = [torch.tensor(s.ids) for s in samples[:4]]
    first = [cached.one(i, x) for i, x in enumerate(ids)]
    assert cached.cache is not None
    assert sorted(cached.cache) == [0, 1, 2, 3]
    real = model.model  # type: ignore[attr-defined]
    model.model = None  # type: ignore[attr-defined]  # a second trunk pass would fail now
    try:
        again = [cached.one(i, x) for i, x in enumerate(ids)]
        lengths = [len(x) for x in ids]
        padded = torch.zeros(4, max(lengths), dtype=torch.int64)  # [B, T]
        for b, x in enumerate(ids):
            padded[b, : len(x)] = x
        batch = cached.batch([0, 1, 2, 3], padded, lengths)  # [B, T, H]
    finally:
        model.model = real  # type: ignore[attr-defined]
    for i, x in enumerate(ids):
        fresh = plain.one(i, x)
        assert torch.equal(first[i], fresh)
        assert torch.equal(again[i], fresh)
        assert torch.equal(batch[i, : len(x)], fresh)
        assert not bool(batch[i, len(x) :].any())


def test_the_trunk_runs_once_per_sequence_over_two_epochs(
    source: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[int] = []
    real_one = Trunk.one

    def counting(self: Trunk, index: int, ids: torch.Tensor) -> torch.Tensor:
        if self.cache is None or index not in self.cache:
            computed.append(index)
        return real_one(self, index, ids)

    monkeypatch.setattr(Trunk, "one", counting)
    train(source, [data], tmp_path / "a", FAST, show_progress=False)
    assert sorted(computed) == list(range(16))  # 16 sequences, 2 epochs, one trunk pass each
    computed.clear()
    no_cache = TrainOptions(**{**FAST.__dict__, "cache_gb": 0.0, "micro_batch_tokens": 0})
    train(source, [data], tmp_path / "b", no_cache, show_progress=False)
    assert sorted(computed) == sorted(list(range(16)) * 2)  # recomputed every epoch
