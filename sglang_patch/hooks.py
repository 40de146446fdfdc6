"""The SGLang seams sglang_patch hooks (see INVENTORY.md): the only module importing sglang.

1. ``EagleDraftWorker.init_token_map`` (AROUND): when the draft artifact carries
   language maps and no ``--speculative-token-map`` was given, load the default
   language's map as SGLang would load a static one.
2. ``EagleDraftWorker.init_lm_head`` (AFTER): build the :class:`~.bank.DraftVocabBank`
   from the target's full ``lm_head`` and rebind the draft's ``hot_token_id`` and head
   weight to the bank's pointer-stable active buffers (before any CUDA-graph capture).
3. ``EagleDraftWorker.draft`` (BEFORE): pick the batch language from ``batch.reqs``;
   remap every carried ``spec_info.topk_index`` row from the space it was drafted in
   (recorded on its Req) into the new map's space, and switch the buffers in place.
4. ``EagleDraftWorker._draft_extend_for_prefill`` (BEFORE): switch to the new
   requests' language before their first draft, and record that space on them.
5. ``TokenizerManager._create_tokenized_object`` (BEFORE): detect the language of the
   prompt text (or of its decoded ids, for chat requests) when the client gave no
   ``draft_lang`` and store it in the request's ``custom_params`` (the scheduler never
   sees the text).

Draft-extend outputs are always in the space of the map active when they ran; each
Req records that space, and ``draft`` carries every row into the batch's language, so
the index the next ``draft_forward`` maps with ``hot_token_id`` is always consistent.
Verification uses full-vocabulary ids and the target's full logits: output is unchanged
whatever the map.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import torch

from fastmtp_export.lang import LanguageDetector

from .bank import DraftVocabBank
from .choice import PARAM, batch_language, request_language
from .settings import artifact_maps

log = logging.getLogger("sglang_patch")

_WORKER = "sglang.srt.speculative.eagle_worker_v2.EagleDraftWorker"
TARGETS = {
    "init_token_map": f"{_WORKER}.init_token_map",
    "init_lm_head": f"{_WORKER}.init_lm_head",
    "draft": f"{_WORKER}.draft",
    "prefill": f"{_WORKER}._draft_extend_for_prefill",
    "detect": "sglang.srt.managers.tokenizer_manager.TokenizerManager._create_tokenized_object",
}
BANK_ATTR = "_fastmtp_bank"
#: on each Req: the language space its carried draft index (topk_index row) is in
SPACE_ATTR = "_fastmtp_space"
#: log the per-language counters every this many draft batches (SGLang's decode-log interval)
LOG_EVERY = 40
#: prompt ids decoded for detection when a request has no text (the detector reads the
#: last 4096 characters; 1024 ids cover that in every tokenizer we know)
DETECT_TAIL_IDS = 1024


def init_token_map_around(original: Any, worker: Any) -> Any:
    """Load the artifact's default-language map where SGLang would load a static one."""
    from sglang.srt.runtime_context import get_spec

    spec = get_spec()
    draft_dir = getattr(spec, "speculative_draft_model_path", None)
    if worker.speculative_algorithm.is_eagle3() or not draft_dir:
        return original(worker)
    found = artifact_maps(Path(draft_dir))
    if found is None:
        return original(worker)
    if getattr(spec, "speculative_token_map", None) is not None:
        log.warning(
            "fastmtp: --speculative-token-map is set; using it as one static map "
            "(the artifact's per-language maps are not used)"
        )
        return original(worker)
    if worker.topk != 1:
        log.warning("fastmtp: per-language maps need --speculative-eagle-topk 1; plugin idle")
        return original(worker)
    _refuse_sharded_head(worker)
    worker._fastmtp_maps = found
    worker.hot_token_id = torch.tensor(found.maps[found.default], dtype=torch.int64)
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
            "or set FASTMTP_SGLANG_PATCH=0"
        )


def init_lm_head_after(result: Any, worker: Any) -> Any:
    """Build the bank from the target's full head; bind the draft to its active buffers."""
    found = getattr(worker, "_fastmtp_maps", None)
    if found is None:
        return result
    _embed, full_head = worker._resolve_shared_embed_and_head()  # [V, H], the target's
    with torch.no_grad():
        bank = DraftVocabBank(found.maps, full_head.data, found.default)
    worker.hot_token_id = bank.active_ids
    worker.draft_runner.model.lm_head.weight.data = bank.active_head
    setattr(worker, BANK_ATTR, bank)
    worker._fastmtp_counts = {"batches": dict.fromkeys(bank.langs, 0), "switches": 0}
    log.info(
        "fastmtp: per-language draft vocabulary active: languages %s, K=%d, default %s, "
        "bank %.1f MiB",
        ",".join(bank.langs),
        bank.size,
        bank.active,
        bank.nbytes / 2**20,
    )
    return result


def _choose(worker: Any, bank: DraftVocabBank, reqs: Any) -> str:
    """The language for a batch of ``reqs``: their majority, current on ties."""
    supported = set(bank.langs)
    langs = [
        request_language(getattr(r.sampling_params, "custom_params", None), supported) for r in reqs
    ]
    return batch_language(langs, current=bank.active, default=_default(worker, bank))


def _switch(worker: Any, bank: DraftVocabBank, lang: str) -> None:
    old = bank.active
    if bank.switch(lang):
        worker._fastmtp_counts["switches"] += 1
        if (metrics := _metrics()) is not None:
            metrics[1].inc()
        log.debug("fastmtp: draft language %s -> %s", old, lang)


@functools.cache
def _metrics() -> tuple[Any, Any] | None:
    """Prometheus counters (batches per language, switches) when ``--enable-metrics``.

    SGLang runs prometheus_client in multiprocess mode, so counters made in the
    scheduler appear on the server's ``/metrics``. Metrics never break serving.
    """
    try:
        from sglang.srt.runtime_context import get_observability

        if not get_observability().enable_metrics:
            return None
        from prometheus_client import Counter

        return (
            Counter(
                "fastmtp:draft_batches", "Draft batches per draft language (sglang_patch)", ["lang"]
            ),
            Counter("fastmtp:draft_switches", "Draft vocabulary switches (sglang_patch)"),
        )
    except Exception as exc:  # a missing or changed metrics seam: keep the log line only
        log.warning("fastmtp: Prometheus counters unavailable (%s); counters stay in the log", exc)
        return None


def draft_before(worker: Any, batch: Any, *args: Any, **kwargs: Any) -> None:
    """Choose the batch language, carry every row's index into it, and switch."""
    bank: DraftVocabBank | None = getattr(worker, BANK_ATTR, None)
    if bank is None or batch is None or not getattr(batch, "reqs", None):
        return None
    reqs = batch.reqs
    lang = _choose(worker, bank, reqs)
    counts = worker._fastmtp_counts
    counts["batches"][lang] += 1
    if (metrics := _metrics()) is not None:
        metrics[0].labels(lang=lang).inc()
    total = sum(counts["batches"].values())
    if total % LOG_EVERY == 0:
        per_lang = ", ".join(f"{k}={v}" for k, v in sorted(counts["batches"].items()))
        log.info("fastmtp: draft batches %s; switches %d", per_lang, counts["switches"])
    spec_info = batch.spec_info
    index = getattr(spec_info, "topk_index", None) if spec_info is not None else None
    if index is not None:
        if index.shape[0] == len(reqs):
            spaces = [getattr(r, SPACE_ATTR, bank.active) for r in reqs]
        else:  # rows not aligned with reqs (not seen in 0.5.23): all in the active space
            spaces = [bank.active] * int(index.shape[0])
        spec_info.topk_index = bank.remap_rows(index, spaces, lang)
    _switch(worker, bank, lang)
    for r in reqs:
        setattr(r, SPACE_ATTR, lang)
    return None


def prefill_before(worker: Any, batch: Any, *args: Any, **kwargs: Any) -> None:
    """Draft a prefill's first token in its own requests' language.

    Without this, a new request's first draft comes from the previous batch's map and is
    lost after a language change. Running requests are not in this batch: their rows
    keep their recorded space, and the next ``draft`` carries them over.
    """
    bank: DraftVocabBank | None = getattr(worker, BANK_ATTR, None)
    if bank is None or batch is None or not getattr(batch, "reqs", None):
        return None
    lang = _choose(worker, bank, batch.reqs)
    _switch(worker, bank, lang)
    for r in batch.reqs:
        setattr(r, SPACE_ATTR, lang)
    return None


def detect_before(manager: Any, obj: Any, input_text: Any, *args: Any, **kwargs: Any) -> None:
    """Fill ``custom_params["draft_lang"]`` from the prompt text when the client did not.

    Runs in the tokenizer manager, the last place that still has the text. A request that
    arrives as token ids (``/v1/chat/completions`` renders the chat template to ids, and
    clients may send ``input_ids``) is detected from its last ``DETECT_TAIL_IDS`` ids,
    decoded with the server's tokenizer. Without a tokenizer (``--skip-tokenizer-init``)
    or maps in the artifact, requests are left alone.
    """
    params = getattr(obj, "sampling_params", None)
    if not isinstance(params, dict):
        return None
    custom = params.get("custom_params")
    if isinstance(custom, dict) and PARAM in custom:
        return None  # the client's choice wins
    detector = _detector(getattr(manager.server_args, "speculative_draft_model_path", None))
    if detector is None:
        return None
    text = input_text if isinstance(input_text, str) and input_text else None
    ids = args[0] if args else kwargs.get("input_ids")
    tokenizer = getattr(manager, "tokenizer", None)
    if text is None and isinstance(ids, list) and ids and tokenizer is not None:
        text = tokenizer.decode(ids[-DETECT_TAIL_IDS:], skip_special_tokens=True)
    if not isinstance(text, str) or not text:
        return None
    lang = detector(text)
    if lang is not None:
        params["custom_params"] = {**(custom if isinstance(custom, dict) else {}), PARAM: lang}
    return None


@functools.cache
def _detector(draft_dir: str | None) -> LanguageDetector | None:
    if not draft_dir:
        return None
    try:
        found = artifact_maps(Path(draft_dir))
    except Exception:  # the scheduler reports a broken artifact; detection stays off
        return None
    return LanguageDetector(sorted(found.maps)) if found is not None else None


def _default(worker: Any, bank: DraftVocabBank) -> str:
    found = getattr(worker, "_fastmtp_maps", None)
    return found.default if found is not None else bank.active


def register() -> None:
    """Register the hooks with SGLang's HookRegistry."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGETS["init_token_map"], init_token_map_around, HookType.AROUND)
    HookRegistry.register(TARGETS["init_lm_head"], init_lm_head_after, HookType.AFTER)
    HookRegistry.register(TARGETS["draft"], draft_before, HookType.BEFORE)
    HookRegistry.register(TARGETS["prefill"], prefill_before, HookType.BEFORE)
    HookRegistry.register(TARGETS["detect"], detect_before, HookType.BEFORE)
