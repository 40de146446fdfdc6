"""The SGLang seams sglang_patch hooks (see INVENTORY.md): one module per seam, the only
modules importing sglang.

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
8. ``TokenizerManager.__init__`` (AFTER): start fetching a repo-id draft's manifest and
   maps in a background thread, so that 7, on the event loop, never waits on the Hub.

Between rounds SGLang carries each request's next draft token (``topk_index``) in the
draft head's slot space. The hooks keep it in full-vocabulary ids instead, converting
with device gathers on both sides, so a row never depends on which set was active when
it was drafted: no per-request space tags, no host-built tensors, no host-device
synchronisation. Verification uses full ids and the target's full logits: output is
unchanged whatever the set.
"""

from __future__ import annotations

from . import guard
from .detect import detect_before, tokenizer_manager_init_after
from .draft import decode_extend_after, draft_before, prefill_around
from .guard import guard_before
from .startup import init_lm_head_after, init_token_map_around
from .targets import BANK_ATTR, GUARD_TARGET, TARGETS

__all__ = [
    "BANK_ATTR",
    "TARGETS",
    "decode_extend_after",
    "detect_before",
    "draft_before",
    "guard_before",
    "init_lm_head_after",
    "init_token_map_around",
    "prefill_around",
    "register",
    "register_guard",
    "tokenizer_manager_init_after",
]


def register_guard(version_problem: str | None) -> None:
    """Register only the start-up guard (any SGLang version); it refuses ``version_problem``."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    guard._version_problem = version_problem
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
    HookRegistry.register(TARGETS["fetch"], tokenizer_manager_init_after, HookType.AFTER)
