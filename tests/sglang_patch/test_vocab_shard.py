"""The bank at TP > 1, with SGLang's all-gather simulated: every rank holds one vocabulary
shard of the head, scores only its block of draft slots, and the gathered logits must be
the full head's logits of the active slots, in slot order, on every rank alike."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sglang_patch.bank import DraftVocabBank
from sglang_patch.hooks.startup import vocab_shard
from sglang_patch.shard import VocabShard, block_width, local_rows, shard_slots

V, H = 1000, 16


def _ranks(size: int, vocab: int = V) -> list[VocabShard]:
    rows = -(-vocab // size // 8) * 8  # ceil(V / size) rounded up to 8, as SGLang pads
    return [VocabShard(r, size, rows, vocab) for r in range(size)]


def _padded(head: torch.Tensor, shard: VocabShard) -> torch.Tensor:
    """This rank's [P, H] shard of ``head`` [V, H], padding rows zero as SGLang's."""
    full = torch.zeros(shard.rows * shard.size, head.shape[1])  # [size * P, H]
    full[: head.shape[0]] = head
    return full[shard.start : shard.start + shard.rows].clone()


def _maps(seed: int) -> dict[str, list[int]]:
    """Three languages: `en` low ids (mostly rank 0, as BPE merges rank English), `zh`
    high ids, `ru` spread; 96 ids each, overlapping a little."""
    rng = random.Random(seed)
    return {
        "en": rng.sample(range(0, 400), 96),
        "zh": rng.sample(range(600, 1000), 96),
        "ru": rng.sample(range(0, 1000), 96),
    }


@pytest.mark.parametrize("size", [2, 3, 4])
def test_gathered_logits_are_the_full_heads_at_the_active_slots(size: int) -> None:
    gen = torch.Generator().manual_seed(size)
    head = torch.randn(V, H, generator=gen)  # [V, H]
    hidden = torch.randn(5, H, generator=gen)  # [B, H]
    maps = _maps(size)
    shards = _ranks(size)
    banks = [DraftVocabBank(maps, _padded(head, s), "en", shard=s) for s in shards]
    ptrs = [(b.active_ids.data_ptr(), b.active_head.data_ptr()) for b in banks]
    widths = {b.slots for b in banks}
    assert len(widths) == 1  # the all-gather needs one width on every rank
    for langs in [{"en"}, {"zh"}, {"en", "zh"}, {"ru"}, {"en", "ru"}, {"en"}]:
        for b in banks:
            b.switch(frozenset(langs))
        ids = banks[0].active_ids
        for b in banks[1:]:
            assert torch.equal(b.active_ids, ids)  # hot_token_id is the same everywhere
        gathered = torch.cat([hidden @ b.active_head.T for b in banks], dim=1)  # [B, N]
        torch.testing.assert_close(gathered, (hidden @ head.T)[:, ids])
        # every id of every language in the set has a slot; the other slots hold other
        # languages' ids (a set's spare room, as at TP 1) or the first row of a rank
        # holding none of them, so the draft's argmax over the slots is the full head's
        # argmax over exactly those ids
        wanted = set().union(*(maps[lang] for lang in langs))
        fillers = set(ids.tolist()) - wanted
        assert fillers <= {s.start for s in shards} | set().union(*maps.values())
        assert wanted <= set(ids.tolist())
        candidates = sorted(wanted | fillers)
        best = ids[gathered.argmax(dim=1)]
        full = (hidden @ head.T)[:, candidates]
        assert torch.equal(best, torch.tensor(candidates)[full.argmax(dim=1)])
        # slots <-> full ids round-trip through the inverse, as the draft hooks need
        assert torch.equal(banks[0].to_full(banks[0].to_slots(ids)), ids)
    assert ptrs == [(b.active_ids.data_ptr(), b.active_head.data_ptr()) for b in banks]


def test_tp1_layout_is_unchanged_by_the_shard_path() -> None:
    """One rank holding every row lays the slots out exactly as the full-head bank."""
    head = torch.randn(V, H, generator=torch.Generator().manual_seed(0))
    maps = _maps(0)
    full = DraftVocabBank(maps, head, "en")
    (one,) = _ranks(1)
    sharded = DraftVocabBank(maps, _padded(head, one), "en", shard=one)
    for langs in [{"en"}, {"en", "zh"}]:
        full.switch(frozenset(langs))
        sharded.switch(frozenset(langs))
        assert set(full.active_ids.tolist()) == set(sharded.active_ids.tolist())
        torch.testing.assert_close(
            full.active_head[full.to_slots(full.active_ids)],
            sharded.active_head[sharded.to_slots(full.active_ids)],
        )


def test_width_is_the_largest_share_and_blocks_pad_with_their_own_ids() -> None:
    shards = _ranks(2, vocab=100)  # 56 rows per rank: ids 0-55 on rank 0, 56-99 on rank 1
    ids = [1, 2, 3, 60]
    assert block_width([ids, [70, 71]], shards[0]) == 3
    slots = shard_slots(ids, shards[0], 3)
    assert slots == [1, 2, 3, 60, 60, 60]
    assert local_rows(slots, shards[0], 3) == [1, 2, 3]
    assert local_rows(slots, shards[1], 3) == [4, 4, 4]  # 60 - 56
    # a rank with none of the set's ids fills its block with its own first row
    assert shard_slots([1, 2], shards[0], 2) == [1, 2, 56, 56]


def test_bad_shards_and_ids() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        VocabShard(0, 2, 40, 100)
    with pytest.raises(ValueError, match="holds no token"):
        VocabShard(0, 3, 64, 100)  # rank 2 would start at 128 > V
    (rank0, _rank1) = _ranks(2, vocab=100)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        shard_slots([100], rank0, 1)
    with pytest.raises(ValueError, match="more than the width"):
        shard_slots([1, 2], rank0, 1)


def _worker(
    head_rows: int, *, tp: int = 2, dp_lm_head: bool = False, added: int = 0, gathers: bool = True
) -> Any:
    """The attributes of an EagleDraftWorker that vocab_shard reads (SGLang's names)."""
    vocab = 1000
    rows = -(-vocab // tp // 64) * 64
    idx = SimpleNamespace(padded_org_vocab_start_index=rows, padded_org_vocab_end_index=2 * rows)
    head = SimpleNamespace(
        weight=torch.empty(head_rows, 4), tp_size=tp, use_attn_tp_group=dp_lm_head,
        num_embeddings=vocab + added, org_vocab_size=vocab, shard_indices=idx,
    )  # fmt: skip
    runner = SimpleNamespace(model=SimpleNamespace(lm_head=head), model_config=SimpleNamespace(
        vocab_size=vocab))  # fmt: skip
    draft = SimpleNamespace(
        model=SimpleNamespace(logits_processor=SimpleNamespace(
            do_tensor_parallel_all_gather_dp_attn=False, do_tensor_parallel_all_gather=gathers))
    )  # fmt: skip
    return SimpleNamespace(target_worker=SimpleNamespace(model_runner=runner), draft_runner=draft)


def test_vocab_shard_reads_sglangs_layout_and_refuses_what_it_cannot_cover() -> None:
    assert vocab_shard(_worker(1000, tp=1, gathers=False)) is None  # TP 1: the TP 1 bank
    with pytest.raises(RuntimeError, match="holds the whole lm_head"):
        vocab_shard(_worker(1000, tp=1))  # a replicated head whose draft logits are gathered
    assert vocab_shard(_worker(512)) == VocabShard(rank=1, size=2, rows=512, vocab=1000)
    with pytest.raises(RuntimeError, match=r"DP attention \(--enable-dp-attention"):
        vocab_shard(_worker(512, dp_lm_head=True))
    with pytest.raises(RuntimeError, match="8 added vocabulary rows"):
        vocab_shard(_worker(512, added=8))
    for bad in (_worker(512, dp_lm_head=True), _worker(512, added=8), _worker(1000, tp=1)):
        with pytest.raises(RuntimeError) as err:
            vocab_shard(bad)
        assert "\n" not in str(err.value)
        assert "FASTMTP_SGLANG_PATCH=0" in str(err.value)
