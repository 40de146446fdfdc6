"""Seams 4, 5 and 6: the draft set per batch.

4. ``EagleDraftWorker.draft`` (BEFORE): switch to the batch's language set and turn
   every carried draft token (full-vocabulary ids) into a slot of that set.
5. ``EagleDraftWorker._draft_extend_for_prefill`` (AROUND): switch to a set holding the
   new requests' languages, and return their first draft token as a full id.
6. ``EagleDraftWorker._draft_extend_for_decode`` (AFTER): return the next draft tokens
   as full ids.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from ..bank import DraftVocabBank, set_label
from ..choice import language_counts, request_language
from .report import Counts, failed_once, prometheus_counters
from .targets import BANK_ATTR

log = logging.getLogger("sglang_patch")

#: log the per-language counters every this many draft batches (SGLang's decode-log interval)
LOG_EVERY = 40
#: the request attribute caching ``(id(bank), language)`` (plain values: a request holds
#: no reference to the bank's tensors): a request's ``custom_params`` never change once it
#: reaches the scheduler, and this runs for every request of every round
LANG_ATTR = "_fastmtp_draft_lang"


def _request_lang(req: Any, bank: DraftVocabBank) -> str | None:
    """The request's supported language (``None``: unknown), parsed once per request."""
    cached = getattr(req, LANG_ATTR, None)
    if cached is not None and cached[0] == id(bank):
        return cached[1]
    lang = request_language(getattr(req.sampling_params, "custom_params", None), bank.langs)
    # a request type without attributes of its own (slots) is parsed each round
    with contextlib.suppress(AttributeError):
        setattr(req, LANG_ATTR, (id(bank), lang))
    return lang


def _languages(worker: Any, bank: DraftVocabBank, reqs: Any) -> Any:
    """Requests per language (unknown ones as the default)."""
    return language_counts([_request_lang(r, bank) for r in reqs], worker._fastmtp_maps.default)


def _switch(worker: Any, bank: DraftVocabBank, langs: frozenset[str]) -> None:
    old = bank.active
    if bank.switch(langs):
        worker._fastmtp_counts.switches += 1
        if (metrics := prometheus_counters()) is not None:
            metrics["switches"].inc()
        log.debug("fastmtp: draft languages %s -> %s", set_label(old), set_label(langs))


def _count(worker: Any, bank: DraftVocabBank, counts: Any) -> None:
    c: Counts = worker._fastmtp_counts
    label = set_label(bank.active)
    c.batches[label] = c.batches.get(label, 0) + 1
    metrics = prometheus_counters()
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


def draft_before(worker: Any, batch: Any, *args: Any, **kwargs: Any) -> None:
    """Switch to the batch's language set; carried full ids become slots of that set."""
    bank: DraftVocabBank | None = getattr(worker, BANK_ATTR, None)
    if bank is None or batch is None:
        return None
    reqs = getattr(batch, "reqs", None) or []
    if reqs:
        try:
            counts = _languages(worker, bank, reqs)
            _switch(worker, bank, bank.choose(counts))
            _count(worker, bank, counts)
        except Exception:  # a request's odd params must not fail the batch
            failed_once("choosing the draft language")
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
            _switch(worker, bank, bank.choose_prefill(counts))
        except Exception:
            failed_once("choosing the prefill's draft language")
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
