"""Where each hook attaches in SGLang 0.5.23 (dotted paths for ``HookRegistry``), and the
worker attribute that carries the bank. Imports nothing, so the tests can read it."""

from __future__ import annotations

_WORKER = "sglang.srt.speculative.eagle_worker_v2.EagleDraftWorker"
_TOKENIZER = "sglang.srt.managers.tokenizer_manager.TokenizerManager"
#: the start-up guard, registered on every SGLang version (a stable, public constructor)
GUARD_TARGET = "sglang.srt.managers.scheduler.Scheduler.__init__"
TARGETS = {
    "guard": GUARD_TARGET,
    "init_token_map": f"{_WORKER}.init_token_map",
    "init_lm_head": f"{_WORKER}.init_lm_head",
    "draft": f"{_WORKER}.draft",
    "prefill": f"{_WORKER}._draft_extend_for_prefill",
    "decode_extend": f"{_WORKER}._draft_extend_for_decode",
    "detect": f"{_TOKENIZER}._create_tokenized_object",
    "fetch": f"{_TOKENIZER}.__init__",
}
BANK_ATTR = "_fastmtp_bank"
