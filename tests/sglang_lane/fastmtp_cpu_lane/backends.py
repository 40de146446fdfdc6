"""A ``torch_native`` EAGLE draft backend for CPUs without AMX (2 AROUND hooks).

1. ``DraftBackendFactory._create_backend`` gets a ``"torch_native"`` entry: for draft
   decode a container of ``num_steps - 1`` step backends, step ``i`` attending over
   ``seq_lens + i + 1`` keys (exact for topk=1: step ``i`` writes position
   ``seq_len + i``, whose slot is already in ``req_to_token``); for draft extend a
   plain ``TorchNativeAttnBackend``. Decode and extend are told apart by
   ``stamps_children``, which only ``create_decode_backend`` passes.
2. ``TorchNativeAttnBackend.forward_extend`` in ``TARGET_VERIFY`` mode, where SGLang
   leaves ``extend_prefix_lens`` unset: for the call, the verify window becomes an
   extend of ``draft_token_num`` tokens after ``seq_lens``, whose causal mask over a
   chain is exactly the chain's tree mask.
"""

from __future__ import annotations

from typing import Any

import torch

from .status import record

DECODE_TARGET = "sglang.srt.speculative.draft_utils.DraftBackendFactory._create_backend"
VERIFY_TARGET = (
    "sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend.forward_extend"
)


def _step_backend_class() -> type:
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

    class TorchNativeDraftStepBackend(TorchNativeAttnBackend):
        """Draft step ``step``: position ``seq_len + step`` sees ``seq_len + step + 1`` keys."""

        def __init__(self, model_runner: Any, step: int) -> None:
            super().__init__(model_runner)
            self.step = step

        def forward_decode(
            self, q: Any, k: Any, v: Any, layer: Any, forward_batch: Any, save_kv_cache: bool = True
        ) -> Any:
            record("called:draft_decode_step")
            saved = forward_batch.seq_lens
            forward_batch.seq_lens = saved + self.step + 1
            try:
                return super().forward_decode(q, k, v, layer, forward_batch, save_kv_cache)
            finally:
                forward_batch.seq_lens = saved

    return TorchNativeDraftStepBackend


class TorchNativeMultiStepDraftBackend:
    """The per-step container SGLang's draft worker indexes as ``attn_backends[i]``."""

    def __init__(self, model_runner: Any, topk: int, speculative_num_steps: int) -> None:
        if topk != 1:
            raise ValueError("the CPU test lane's torch_native draft backend supports topk=1 only")
        step_cls = _step_backend_class()
        self.topk = topk
        self.speculative_num_steps = speculative_num_steps
        self.attn_backends = [step_cls(model_runner, i) for i in range(speculative_num_steps - 1)]

    def init_forward_metadata(self, forward_batch: Any) -> None:
        for backend in self.attn_backends:
            backend.init_forward_metadata(forward_batch)


def create_backend_around(
    original: Any,
    factory: Any,
    backend_name: str,
    backend_map: dict[str, Any],
    error_template: str,
    stamps_children: bool = False,
) -> Any:
    """Add ``torch_native`` to the draft backend map, then build as SGLang does."""
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

    runner = factory.draft_model_runner
    backend_map = dict(backend_map)
    if stamps_children:
        record("hook:draft_decode_backend")
        backend_map["torch_native"] = lambda: (
            "torch_native",
            TorchNativeMultiStepDraftBackend(runner, factory.topk, factory.speculative_num_steps),
        )
    else:
        record("hook:draft_extend_backend")
        backend_map["torch_native"] = lambda: ("torch_native", TorchNativeAttnBackend(runner))
    return original(
        factory, backend_name, backend_map, error_template, stamps_children=stamps_children
    )


def forward_extend_around(
    original: Any,
    backend: Any,
    q: Any,
    k: Any,
    v: Any,
    layer: Any,
    forward_batch: Any,
    save_kv_cache: bool = True,
) -> Any:
    """Target verify as an extend of the draft window after the verified prefix."""
    if not forward_batch.forward_mode.is_target_verify():
        return original(backend, q, k, v, layer, forward_batch, save_kv_cache)
    if forward_batch.spec_info is not None and getattr(forward_batch.spec_info, "topk", 1) != 1:
        raise ValueError("the CPU test lane verifies chains only (topk=1)")
    record("hook:target_verify")
    bs = forward_batch.batch_size
    window = q.shape[0] // bs
    saved = (
        forward_batch.extend_prefix_lens,
        forward_batch.extend_seq_lens,
        forward_batch.seq_lens,
    )
    forward_batch.extend_prefix_lens = saved[2]
    forward_batch.extend_seq_lens = torch.full_like(saved[2], window)
    forward_batch.seq_lens = saved[2] + window
    try:
        return original(backend, q, k, v, layer, forward_batch, save_kv_cache)
    finally:
        (
            forward_batch.extend_prefix_lens,
            forward_batch.extend_seq_lens,
            forward_batch.seq_lens,
        ) = saved


def register_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(DECODE_TARGET, create_backend_around, HookType.AROUND)
    HookRegistry.register(VERIFY_TARGET, forward_extend_around, HookType.AROUND)
    record("registered:hooks")
