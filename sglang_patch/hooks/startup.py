"""Seams 2 and 3: the bank at start-up.

2. ``EagleDraftWorker.init_token_map`` (AROUND): when the draft artifact carries
   language maps and no ``--speculative-token-map`` was given, load the default
   language's map as SGLang would load a static one.
3. ``EagleDraftWorker.init_lm_head`` (AFTER): build the :class:`~..bank.DraftVocabBank`
   over the target's full ``lm_head`` and rebind the draft's ``hot_token_id`` and head
   weight to the bank's pointer-stable K_u-row buffers (before any CUDA-graph capture).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..bank import DraftVocabBank
from ..settings import ENABLE_ENV, artifact_maps, draft_rows
from .guard import refuse_partial_hooks
from .report import Counts
from .targets import BANK_ATTR

log = logging.getLogger("sglang_patch")


def init_token_map_around(original: Any, worker: Any) -> Any:
    """Load the artifact's default-language map where SGLang would load a static one."""
    from sglang.srt.runtime_context import get_spec

    spec = get_spec()
    draft_dir = getattr(spec, "speculative_draft_model_path", None)
    if worker.speculative_algorithm.is_eagle3() or not draft_dir:
        return original(worker)
    found = artifact_maps(Path(draft_dir)) if Path(draft_dir).is_dir() else None
    if found is None:
        return original(worker)  # the guard said why
    refuse_partial_hooks()  # the guard's own seam may be the one that moved
    if getattr(spec, "speculative_token_map", None) is not None:
        log.warning(
            "fastmtp: --speculative-token-map is set; using it as one static map "
            "(the artifact's per-language maps are not used)"
        )
        return original(worker)
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
    _refuse_sharded_head(worker)
    worker._fastmtp_maps = found
    # init_lm_head slices the target head with this before the bank rebinds the draft to
    # its own [K_u, H] buffer: one row instead of K keeps that transient copy out of the
    # start-up peak (256 MiB at MiMo-7B shapes)
    worker.hot_token_id = torch.tensor(found.maps[found.default][:1], dtype=torch.int64)
    return None


def _refuse_sharded_head(worker: Any) -> None:
    """At TP>1 the target head is vocab-sharded: global hot ids would index past it.

    Stock 0.5.23 hits a device assert there; refuse at start-up with the reason instead.
    """
    runner = getattr(getattr(worker, "target_worker", None), "model_runner", None)
    head = getattr(getattr(getattr(runner, "model", None), "lm_head", None), "weight", None)
    vocab = getattr(getattr(runner, "model_config", None), "vocab_size", None)
    if head is not None and isinstance(vocab, int) and head.shape[0] != vocab:
        raise RuntimeError(
            f"fastmtp: this rank holds {head.shape[0]} of {vocab} lm_head rows (tensor "
            "parallelism shards the vocabulary); per-language draft maps need --tp-size 1, "
            f"or set {ENABLE_ENV}=0"
        )


def init_lm_head_after(result: Any, worker: Any) -> Any:
    """Build the bank over the target's full head; bind the draft to its active buffers."""
    found = getattr(worker, "_fastmtp_maps", None)
    if found is None:
        return result
    _embed, full_head = worker._resolve_shared_embed_and_head()  # [V, H], the target's
    vocab = int(full_head.shape[0])
    rows = draft_rows(found.size, len(found.maps), vocab)  # raises on a bad FASTMTP_DRAFT_ROWS
    with torch.no_grad():
        bank = DraftVocabBank(found.maps, full_head.data, found.default, rows)
    worker.hot_token_id = bank.active_ids
    worker.draft_runner.model.lm_head.weight.data = bank.active_head
    setattr(worker, BANK_ATTR, bank)
    worker._fastmtp_counts = Counts()
    log.info(
        "fastmtp: per-language draft vocabulary active: languages %s, K=%d, draft rows "
        "K_u=%d (FASTMTP_DRAFT_ROWS), up to %d languages per batch, default %s, "
        "bank %.1f MiB on %s",
        ",".join(bank.langs),
        bank.size,
        bank.rows,
        bank.max_langs,
        found.default,
        bank.nbytes / 2**20,
        full_head.device,
    )
    return result
