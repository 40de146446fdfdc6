"""The SGLang seams sglang_patch hooks (see INVENTORY.md): the only module importing sglang.

1. ``Scheduler.__init__`` (BEFORE): start-up checks where raising stops the server: an
   artifact on an unsupported SGLang version, a partial hook set, a draft loaded from a
   base without MTP tensors; says once why the plugin stays idle.
2. ``EagleDraftWorker.init_token_map`` (AROUND): when the draft artifact carries
   language maps and no ``--speculative-token-map`` was given, load the default
   language's map as SGLang would load a static one.
3. ``EagleDraftWorker.init_lm_head`` (AFTER): build the :class:`~.bank.DraftVocabBank`
   over the target's full ``lm_head`` and rebind the draft's ``hot_token_id`` and head
   weight to the bank's pointer-stable K_u-row buffers (before any CUDA-graph capture).
4. ``EagleDraftWorker.draft`` (BEFORE): switch to the batch's language set and turn
   every carried draft token (full-vocabulary ids) into a slot of that set.
5. ``EagleDraftWorker._draft_extend_for_prefill`` (AROUND): switch to a set holding the
   new requests' languages, and return their first draft token as a full id.
6. ``EagleDraftWorker._draft_extend_for_decode`` (AFTER): return the next draft tokens
   as full ids.
7. ``TokenizerManager._create_tokenized_object`` (BEFORE): detect the language of the
   prompt text (or of its decoded ids, for chat requests) when the client gave no
   ``draft_lang`` and store it in the request's ``custom_params``.

Between rounds SGLang carries each request's next draft token (``topk_index``) in the
draft head's slot space. The hooks keep it in full-vocabulary ids instead, converting
with device gathers on both sides, so a row never depends on which set was active when
it was drafted: no per-request space tags, no host-built tensors, no host-device
synchronisation. Verification uses full ids and the target's full logits: output is
unchanged whatever the set.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import torch

from fastmtp_export.lang import LanguageDetector

from .bank import DraftVocabBank, set_label
from .choice import PARAM, draft_set, language_counts, prefill_set, request_language
from .settings import (
    ENABLE_ENV,
    artifact_maps,
    base_mtp_tensors,
    draft_rows,
    idle_reason,
)

log = logging.getLogger("sglang_patch")

_WORKER = "sglang.srt.speculative.eagle_worker_v2.EagleDraftWorker"
#: the start-up guard, registered on every SGLang version (a stable, public constructor)
GUARD_TARGET = "sglang.srt.managers.scheduler.Scheduler.__init__"
TARGETS = {
    "guard": GUARD_TARGET,
    "init_token_map": f"{_WORKER}.init_token_map",
    "init_lm_head": f"{_WORKER}.init_lm_head",
    "draft": f"{_WORKER}.draft",
    "prefill": f"{_WORKER}._draft_extend_for_prefill",
    "decode_extend": f"{_WORKER}._draft_extend_for_decode",
    "detect": "sglang.srt.managers.tokenizer_manager.TokenizerManager._create_tokenized_object",
}
BANK_ATTR = "_fastmtp_bank"
#: log the per-language counters every this many draft batches (SGLang's decode-log interval)
LOG_EVERY = 40
#: prompt ids decoded for detection when a request has no text (the detector reads the
#: last 4096 characters; 1024 ids cover that in every tokenizer we know)
DETECT_TAIL_IDS = 1024
#: set by :func:`register_guard` when the installed SGLang is not a supported version
_version_problem: str | None = None


# --- 1. start-up guard ----------------------------------------------------------------


def missing_hooks() -> list[str]:
    """Hook targets SGLang's registry failed to apply (moved or renamed seams)."""
    from sglang.srt.plugins.hook_registry import HookRegistry

    return sorted(t for t in TARGETS.values() if t not in HookRegistry._patched)


def guard_before(scheduler: Any, server_args: Any, *args: Any, **kwargs: Any) -> None:
    """Refuse, or say once why the plugin stays idle, before the scheduler loads anything.

    SGLang's ``load_plugins`` and ``apply_hooks`` swallow exceptions; an exception
    raised here stops the scheduler and with it the server.
    """
    if str(getattr(server_args, "speculative_algorithm", None) or "").upper() not in (
        "EAGLE",
        "NEXTN",
    ):
        return None
    draft = getattr(server_args, "speculative_draft_model_path", None)
    model = getattr(server_args, "model_path", None)
    if not draft or (model is not None and str(draft) == str(model)):
        _check_base_draft(str(model))
        return None
    idle = idle_reason(str(draft))  # raises for an artifact with broken maps
    if idle is not None:
        level = logging.WARNING if idle.warn else logging.INFO
        log.log(level, "fastmtp: plugin idle: %s", idle.message)
        return None
    if _version_problem is not None:
        raise RuntimeError(_version_problem)
    _refuse_partial_hooks()
    return None


def _refuse_partial_hooks() -> None:
    missing = missing_hooks()
    if missing:
        raise RuntimeError(
            f"fastmtp: SGLang did not apply the plugin's hooks to {', '.join(missing)} "
            "(the seams moved in this SGLang); a partial hook set would serve a wrong draft "
            f"vocabulary: install a supported SGLang, or set {ENABLE_ENV}=0 to serve the "
            "artifact without per-language maps"
        )


def _check_base_draft(model: str) -> None:
    """The silent trap: no draft path, so SGLang loads the MTP draft from the base.

    A base without MTP tensors leaves every draft weight uninitialised (acceptance about
    1, no error from SGLang): refuse. A base with them serves its own head: say so.
    """
    found = base_mtp_tensors(Path(model))
    if found is None:
        return  # not a local checkpoint (a Hub id): nothing cheap to inspect
    if found == 0:
        raise RuntimeError(
            f"fastmtp: no --speculative-draft-model-path, and the base checkpoint {model} has "
            "no MTP tensors: SGLang would draft with uninitialised weights (acceptance about "
            "1); pass --speculative-draft-model-path DIR (a fastmtp-export artifact), or set "
            f"{ENABLE_ENV}=0 to skip this check"
        )
    log.warning(
        "fastmtp: no --speculative-draft-model-path: SGLang serves the base checkpoint's own "
        "MTP head (%d tensors in %s), not a fastmtp-export artifact; no per-language maps",
        found,
        model,
    )


# --- 2, 3. the bank at start-up --------------------------------------------------------


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
    _refuse_partial_hooks()  # the guard's own seam may be the one that moved
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
    worker._fastmtp_counts = _Counts()
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


# --- 4, 5, 6. per batch ----------------------------------------------------------------


class _Counts:
    """What the plugin did, for the periodic log line and ``/metrics``."""

    def __init__(self) -> None:
        self.batches: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.off_map: dict[str, int] = {}
        self.switches = 0

    def line(self) -> str:
        def fmt(d: dict[str, int]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "none"

        return (
            f"fastmtp: draft batches {fmt(self.batches)}; rows {fmt(self.rows)}; "
            f"rows off their map {fmt(self.off_map)}; switches {self.switches}"
        )


def _languages(worker: Any, bank: DraftVocabBank, reqs: Any) -> Any:
    """Requests per language (unknown ones as the default)."""
    langs = (
        request_language(getattr(r.sampling_params, "custom_params", None), bank.langs)
        for r in reqs
    )
    return language_counts(langs, worker._fastmtp_maps.default)


def _switch(worker: Any, bank: DraftVocabBank, langs: frozenset[str]) -> None:
    old = bank.active
    if bank.switch(langs):
        worker._fastmtp_counts.switches += 1
        if (metrics := _metrics()) is not None:
            metrics["switches"].inc()
        log.debug("fastmtp: draft languages %s -> %s", set_label(old), set_label(langs))


@functools.cache
def _metrics() -> dict[str, Any] | None:
    """Prometheus counters when ``--enable-metrics``.

    SGLang runs prometheus_client in multiprocess mode, so counters made in the
    scheduler appear on the server's ``/metrics``. Metrics never break serving.
    """
    try:
        from sglang.srt.runtime_context import get_observability

        if not get_observability().enable_metrics:
            return None
        from prometheus_client import Counter

        return {
            "batches": Counter(
                "fastmtp:draft_batches",
                "Draft batches per active language set (sglang_patch)",
                ["lang"],
            ),
            "switches": Counter("fastmtp:draft_switches", "Draft set switches (sglang_patch)"),
            "rows": Counter(
                "fastmtp:draft_rows", "Requests drafted, per request language", ["lang"]
            ),
            "off_map": Counter(
                "fastmtp:draft_rows_off_map",
                "Requests drafted with a set not holding their language's map",
                ["lang"],
            ),
        }
    except Exception as exc:  # a missing or changed metrics seam: keep the log line only
        log.warning("fastmtp: Prometheus counters unavailable (%s); counters stay in the log", exc)
        return None


def _count(worker: Any, bank: DraftVocabBank, counts: Any) -> None:
    c: _Counts = worker._fastmtp_counts
    label = set_label(bank.active)
    c.batches[label] = c.batches.get(label, 0) + 1
    metrics = _metrics()
    if metrics is not None:
        metrics["batches"].labels(lang=label).inc()
    for lang, n in counts.items():
        c.rows[lang] = c.rows.get(lang, 0) + n
        if metrics is not None:
            metrics["rows"].labels(lang=lang).inc(n)
        if lang not in bank.active:
            c.off_map[lang] = c.off_map.get(lang, 0) + n
            if metrics is not None:
                metrics["off_map"].labels(lang=lang).inc(n)
    if sum(c.batches.values()) % LOG_EVERY == 0:
        log.info(c.line())


#: hook sections that raised once already (each is logged with its traceback once)
_failed: set[str] = set()


def _failed_once(where: str) -> None:
    if where not in _failed:
        _failed.add(where)
        log.exception("fastmtp: %s failed; drafting with the active set (reported once)", where)


def draft_before(worker: Any, batch: Any, *args: Any, **kwargs: Any) -> None:
    """Switch to the batch's language set; carried full ids become slots of that set."""
    bank: DraftVocabBank | None = getattr(worker, BANK_ATTR, None)
    if bank is None or batch is None:
        return None
    reqs = getattr(batch, "reqs", None) or []
    if reqs:
        try:
            counts = _languages(worker, bank, reqs)
            _switch(worker, bank, draft_set(counts, current=bank.active, sets=bank.sets))
            _count(worker, bank, counts)
        except Exception:  # a request's odd params must not fail the batch
            _failed_once("choosing the draft language")
    spec_info: Any = getattr(batch, "spec_info", None)
    index = getattr(spec_info, "topk_index", None)
    if index is not None:  # always, or draft_forward would index the head with full ids
        spec_info.topk_index = bank.to_slots(index)
    return None


def prefill_around(original: Any, worker: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
    """Draft a prefill's first tokens over its requests' maps; return them as full ids."""
    bank: DraftVocabBank | None = getattr(worker, BANK_ATTR, None)
    if bank is not None and batch is not None and getattr(batch, "reqs", None):
        try:
            counts = _languages(worker, bank, batch.reqs)
            langs = prefill_set(counts, current=bank.active, sets=bank.sets)
            _switch(worker, bank, langs)
        except Exception:
            _failed_once("choosing the prefill's draft language")
    result = original(worker, batch, *args, **kwargs)
    index = getattr(result, "topk_index", None)
    if bank is not None and index is not None:
        result.topk_index = bank.to_full(index)
    return result


def decode_extend_after(
    result: Any, worker: Any, batch: Any, batch_result: Any, *args: Any, **kwargs: Any
) -> Any:
    """The next round's draft tokens, drafted over the active set, as full ids."""
    bank: DraftVocabBank | None = getattr(worker, BANK_ATTR, None)
    nxt: Any = getattr(batch_result, "next_draft_input", None)
    index = getattr(nxt, "topk_index", None)
    if bank is not None and index is not None:
        nxt.topk_index = bank.to_full(index)
    return result


# --- 7. detection ------------------------------------------------------------------------


def detect_before(manager: Any, obj: Any, input_text: Any, *args: Any, **kwargs: Any) -> None:
    """Fill ``custom_params["draft_lang"]`` from the prompt text when the client did not.

    Runs in the tokenizer manager, the last place that still has the text. A request that
    arrives as token ids (``/v1/chat/completions`` renders the chat template to ids, and
    clients may send ``input_ids``) is detected from its last ``DETECT_TAIL_IDS`` ids,
    decoded with the server's tokenizer. Without a tokenizer (``--skip-tokenizer-init``)
    or maps in the artifact, requests are left alone. Never fails a request.
    """
    try:
        _detect(manager, obj, input_text, *args, **kwargs)
    except Exception:
        _failed_once("language detection")
    return None


def _detect(manager: Any, obj: Any, input_text: Any, *args: Any, **kwargs: Any) -> None:
    params = getattr(obj, "sampling_params", None)
    if not isinstance(params, dict):
        return
    custom = params.get("custom_params")
    if isinstance(custom, dict) and PARAM in custom:
        return  # the client's choice wins
    detector = _detector(getattr(manager.server_args, "speculative_draft_model_path", None))
    if detector is None:
        return
    text = input_text if isinstance(input_text, str) and input_text else None
    ids = args[0] if args else kwargs.get("input_ids")
    tokenizer = getattr(manager, "tokenizer", None)
    if text is None and isinstance(ids, list) and ids and tokenizer is not None:
        text = tokenizer.decode(ids[-DETECT_TAIL_IDS:], skip_special_tokens=True)
    if not isinstance(text, str) or not text:
        return
    lang = detector(text)
    if lang is not None:
        params["custom_params"] = {**(custom if isinstance(custom, dict) else {}), PARAM: lang}


@functools.cache
def _detector(draft_dir: str | None) -> LanguageDetector | None:
    if not draft_dir or not Path(draft_dir).is_dir():
        return None
    try:
        found = artifact_maps(Path(draft_dir))
    except Exception:  # the scheduler reports a broken artifact; detection stays off
        return None
    return LanguageDetector(sorted(found.maps)) if found is not None else None


# --- registration ------------------------------------------------------------------------


def register_guard(version_problem: str | None) -> None:
    """Register only the start-up guard (any SGLang version); it refuses ``version_problem``."""
    global _version_problem
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    _version_problem = version_problem
    HookRegistry.register(GUARD_TARGET, guard_before, HookType.BEFORE)


def register() -> None:
    """Register the guard and every hook with SGLang's HookRegistry."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    register_guard(None)
    HookRegistry.register(TARGETS["init_token_map"], init_token_map_around, HookType.AROUND)
    HookRegistry.register(TARGETS["init_lm_head"], init_lm_head_after, HookType.AFTER)
    HookRegistry.register(TARGETS["draft"], draft_before, HookType.BEFORE)
    HookRegistry.register(TARGETS["prefill"], prefill_around, HookType.AROUND)
    HookRegistry.register(TARGETS["decode_extend"], decode_extend_after, HookType.AFTER)
    HookRegistry.register(TARGETS["detect"], detect_before, HookType.BEFORE)
