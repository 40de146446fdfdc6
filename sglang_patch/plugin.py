"""Entry point (``sglang.srt.plugins``): SGLang calls :func:`register` in every process."""

from __future__ import annotations

import logging

from .settings import disabled, version_problem

log = logging.getLogger("sglang_patch")


def register() -> None:
    """Register the hooks unless disabled or on an unsupported SGLang version."""
    if disabled():
        log.info("fastmtp sglang_patch disabled by FASTMTP_SGLANG_PATCH=0")
        return
    import sglang

    problem = version_problem(sglang.__version__)
    if problem is not None:
        log.error(problem)
        raise RuntimeError(problem)
    from . import hooks

    hooks.register()
