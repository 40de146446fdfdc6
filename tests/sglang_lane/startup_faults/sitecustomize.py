"""Test-only start-up faults for the lane's refusal tests; on ``PYTHONPATH`` only for them.

Python imports ``sitecustomize`` at the start of every process, so the faults reach
the launcher and the spawned scheduler alike, before SGLang loads plugins:

- ``FASTMTP_LANE_FAKE_SGLANG_VERSION=X``: ``sglang.__version__`` reads ``X`` (an
  SGLang the plugin does not support);
- ``FASTMTP_LANE_UNHOOKABLE=SUFFIX``: SGLang's ``HookRegistry`` fails to apply the
  hooks of targets ending with ``SUFFIX``, exactly as it does for a seam that moved
  (it logs the exception and goes on).
"""

from __future__ import annotations

import os

_VERSION = os.environ.get("FASTMTP_LANE_FAKE_SGLANG_VERSION")
_UNHOOKABLE = os.environ.get("FASTMTP_LANE_UNHOOKABLE")

if _VERSION:
    import sglang

    sglang.__version__ = _VERSION

if _UNHOOKABLE:
    from typing import Any

    from sglang.srt.plugins.hook_registry import HookRegistry

    _apply: Any = getattr(HookRegistry._apply_target, "__func__")  # noqa: B009
    _suffix: str = _UNHOOKABLE

    def _apply_target(cls: type, target: str, hooks: list[Any]) -> None:
        if target.endswith(_suffix):
            raise AttributeError(f"{target} does not exist (lane fault: a moved seam)")
        _apply(cls, target, hooks)

    setattr(HookRegistry, "_apply_target", classmethod(_apply_target))  # noqa: B010
