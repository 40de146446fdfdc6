"""Seams 2 and 3: the bank at start-up, and reduced draft vocabularies at TP > 1.

2. ``EagleDraftWorker.init_token_map`` (AROUND): when the draft artifact carries
   language maps and no ``--speculative-token-map`` was given, load the default
   language's map as SGLang would load a static one. With a static
   ``--speculative-token-map`` at TP > 1, lay its ids out per rank (:mod:`..shard`) so
   that SGLang's own slicing takes this rank's rows (stock 0.5.23 indexes the rank's
   vocabulary shard with global ids and stops with an ``IndexError``).
3. ``EagleDraftWorker.init_lm_head`` (AFTER): build the :class:`~..bank.DraftVocabBank`
   over the target's ``lm_head`` (this rank's shard at TP > 1) and rebind the draft's
   ``hot_token_id`` and head weight to the bank's pointer-stable buffers (before any
   CUDA-graph capture); for a static map at TP > 1, set ``hot_token_id`` to the
   per-rank slot layout.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from fastmtp_export.errors import FastMTPError

from ..bank import DraftVocabBank
from ..draft_source import resolve_draft
from ..settings import ENABLE_ENV, artifact_maps, draft_rows
from ..shard import VocabShard, block_width, local_rows, shard_slots
from .guard import refuse_partial_hooks
from .report import Counts
from .targets import BANK_ATTR

log = logging.getLogger("sglang_patch")


def init_token_map_around(original: Any, worker: Any) -> Any:
    """Load the artifact's default-language map where SGLang would load a static one."""
    from sglang.srt.runtime_context import get_spec

    spec = get_spec()
    if worker.speculative_algorithm.is_eagle3():
        return original(worker)
    draft = getattr(spec, "speculative_draft_model_path", None)
    try:  # the guard already said why when this fails
        draft_dir = resolve_draft(draft, getattr(spec, "speculative_draft_model_revision", None))
    except FastMTPError:
        draft_dir = None
    found = artifact_maps(draft_dir) if draft_dir is not None else None
    if found is not None:
        refuse_partial_hooks()  # the guard's own seam may be the one that moved
    if getattr(spec, "speculative_token_map", None) is not None:
        if found is not None:
            log.warning(
                "fastmtp: --speculative-token-map is set; using it as one static map "
                "(the artifact's per-language maps are not used)"
            )
        result = original(worker)
        _shard_static_map(worker)
        return result
    if found is None:
        return original(worker)  # the guard said why
    if getattr(spec, "speculative_use_rejection_sampling", False):
        log.warning(
            "fastmtp: rejection sampling (--speculative-use-rejection-sampling, on by default "
            "on ROCm) needs the full draft vocabulary in SGLang 0.5.23; plugin idle, drafting "
            "over the full vocabulary"
        )
        return original(worker)
    if worker.topk != 1:
        log.warning("fastmtp: per-language maps need --speculative-eagle-topk 1; plugin idle")
        return original(worker)
    worker._fastmtp_shard = vocab_shard(worker)
    worker._fastmtp_maps = found
    # init_lm_head slices the target head with this before the bank rebinds the draft to
    # its own buffer: one row instead of K keeps that transient copy out of the start-up
    # peak (256 MiB at MiMo-7B shapes); row 0 is on every rank's shard
    worker.hot_token_id = torch.zeros(1, dtype=torch.int64)
    return None


def vocab_shard(worker: Any) -> VocabShard | None:
    """This rank's part of the target's vocabulary-parallel ``lm_head``; ``None`` when the
    rank holds every row (TP 1, or a replicated head).

    Raises:
        RuntimeError: a layout the per-rank slots do not cover (DP attention's lm_head,
            added vocabulary rows), with the reason and the way out.
    """
    runner = worker.target_worker.model_runner
    head = runner.model.lm_head
    vocab = int(runner.model_config.vocab_size)
    draft_logits = getattr(worker.draft_runner.model, "logits_processor", None)
    if int(head.weight.shape[0]) == vocab or getattr(head, "tp_size", 1) == 1:
        if getattr(draft_logits, "do_tensor_parallel_all_gather", False):
            raise RuntimeError(
                "fastmtp: this rank holds the whole lm_head (replicated, e.g. "
                "SGLANG_ENABLE_EMBED_REPLICATION) while SGLang all-gathers the draft logits "
                "across TP ranks; a reduced draft vocabulary cannot be laid out for that: "
                f"unset the replication or set {ENABLE_ENV}=0"
            )
        return None
    if getattr(head, "use_attn_tp_group", False) or getattr(
        draft_logits, "do_tensor_parallel_all_gather_dp_attn", False
    ):
        raise RuntimeError(
            "fastmtp: reduced draft vocabularies are not supported with DP attention "
            "(--enable-dp-attention / --enable-dp-lm-head) in SGLang 0.5.23: the draft "
            "logits are gathered across the attention-DP group; drop those flags or set "
            f"{ENABLE_ENV}=0 and serve without a draft map"
        )
    if int(head.num_embeddings) != int(head.org_vocab_size):
        raise RuntimeError(
            f"fastmtp: the target lm_head has {head.num_embeddings - head.org_vocab_size} "
            "added vocabulary rows (LoRA extra vocabulary), which the per-rank draft slots "
            f"do not cover; serve without them or set {ENABLE_ENV}=0"
        )
    idx = head.shard_indices
    rows = int(idx.padded_org_vocab_end_index - idx.padded_org_vocab_start_index)
    return VocabShard(int(idx.padded_org_vocab_start_index) // rows, int(head.tp_size), rows, vocab)


def _shard_static_map(worker: Any) -> None:
    """A static ``--speculative-token-map`` at TP > 1: hand ``init_lm_head`` this rank's
    rows; :func:`init_lm_head_after` then sets the per-rank slot layout."""
    hot = getattr(worker, "hot_token_id", None)
    if hot is None:
        return
    shard = vocab_shard(worker)
    if shard is None:
        return
    ids = [int(t) for t in hot.tolist()]
    width = block_width([ids], shard)
    slots = shard_slots(ids, shard, width)
    worker._fastmtp_static_slots = torch.tensor(slots, dtype=torch.int64)  # [size * W]
    worker.hot_token_id = torch.tensor(local_rows(slots, shard, width), dtype=torch.int64)  # [W]
    log.info(
        "fastmtp: static token map at TP %d: %d ids laid out as %d slots (%d per rank; "
        "rank %d holds %d of them)",
        shard.size,
        len(set(ids)),
        len(slots),
        width,
        shard.rank,
        sum(1 for t in set(ids) if shard.owner(t) == shard.rank),
    )


def refuse_head_not_kept(worker: Any) -> None:
    """Refuse a draft class that does not draft with the head SGLang hands it.

    Stock ``init_lm_head`` gave ``set_embed_and_head`` the target head sliced to our
    one-row placeholder map; the bank then rebinds ``model.lm_head.weight``. A class that
    keeps its own head (Step-3.5's no-op ``set_embed_and_head``, a tied Qwen3.5 draft
    whose head is its embedding) would draft over other rows while SGLang maps its
    indices through the reduced ids: wrong tokens, so stop instead.
    """
    model = worker.draft_runner.model
    weight = getattr(getattr(model, "lm_head", None), "weight", None)
    rows = None if weight is None else int(weight.shape[0])
    if rows != int(worker.hot_token_id.numel()):
        raise RuntimeError(
            f"fastmtp: SGLang's draft class {type(model).__name__} does not draft with the "
            f"reduced head SGLang hands it (its lm_head has {rows} rows, the map "
            f"{worker.hot_token_id.numel()}), so per-language maps cannot be served for it; "
            f"re-export the draft with fastmtp-export (it unties tied Qwen3.5 heads), or set "
            f"{ENABLE_ENV}=0 to draft over the full vocabulary"
        )


def init_lm_head_after(result: Any, worker: Any) -> Any:
    """Build the bank over the target's head (this rank's shard at TP > 1); bind the
    draft to its active buffers."""
    static = getattr(worker, "_fastmtp_static_slots", None)
    if static is not None:
        worker.hot_token_id = static.to(worker.hot_token_id.device)
        return result
    found = getattr(worker, "_fastmtp_maps", None)
    if found is None:
        return result
    refuse_head_not_kept(worker)
    shard: VocabShard | None = getattr(worker, "_fastmtp_shard", None)
    _embed, head = worker._resolve_shared_embed_and_head()  # [V, H] or this rank's [P, H]
    vocab = int(head.shape[0]) if shard is None else shard.vocab
    rows = draft_rows(found.size, len(found.maps), vocab)  # raises on a bad FASTMTP_DRAFT_ROWS
    with torch.no_grad():
        bank = DraftVocabBank(
            found.maps, head.data, found.default, rows, shard=shard,
            rankings=found.rankings, shares=found.shares,
        )  # fmt: skip
    worker.hot_token_id = bank.active_ids
    worker.draft_runner.model.lm_head.weight.data = bank.active_head
    setattr(worker, BANK_ATTR, bank)
    worker._fastmtp_counts = Counts()
    where = (
        ""
        if shard is None
        else (
            f"; TP rank {shard.rank}/{shard.size}: {bank.slots} draft slots, "
            f"{bank.active_head.shape[0]} head rows here"
        )
    )
    log.info(
        "fastmtp: per-language draft vocabulary active: languages %s, K=%d, draft rows "
        "K_u=%d (FASTMTP_DRAFT_ROWS), up to %d languages per batch, rows filled from %s, "
        "sets chosen by %s, default %s, bank %.1f MiB on %s%s",
        ",".join(bank.langs),
        bank.size,
        bank.rows,
        bank.max_langs,
        "rankings" if found.rankings else "repeats",
        "coverage" if bank.coverage is not None else "request counts",
        found.default,
        bank.nbytes / 2**20,
        head.device,
        where,
    )
    return result
