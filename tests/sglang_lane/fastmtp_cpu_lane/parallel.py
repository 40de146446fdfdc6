"""Tensor parallelism on CPU ranks (1 AROUND hook): no PyNccl communicator.

``init_model_parallel_group`` builds a ``PyNcclCommunicator`` on the rank's device when
the caller leaves ``use_pynccl`` unset; on ``cpu`` it stops with "Expected a cuda
device". The hook passes ``use_pynccl=False`` there, so the groups use torch.distributed
(gloo) alone. With one core per rank (``SGLANG_CPU_OMP_THREADS_BIND="0|1"``) two TP
ranks run on a 2-core machine (docs/testing.md).
"""

from __future__ import annotations

from typing import Any

from .status import record

TARGET = "sglang.srt.distributed.parallel_state.init_model_parallel_group"


def init_group_around(original: Any, *args: Any, **kwargs: Any) -> Any:
    """Build the group as SGLang does, without PyNccl unless the caller asked for it."""
    if kwargs.get("use_pynccl") is None and len(args) < 4:
        kwargs["use_pynccl"] = False
        record("hook:no_pynccl")
    return original(*args, **kwargs)


def register_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, init_group_around, HookType.AROUND)
    record("registered:parallel")
