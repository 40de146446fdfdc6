"""Entry point (``sglang.srt.plugins``): SGLang calls :func:`register` in every process."""

from __future__ import annotations

import logging

from .settings import disabled, version_problem

log = logging.getLogger("sglang_patch")


def register() -> None:
    """Register the hooks, or on an unsupported SGLang only the start-up guard.

    Raising here would not stop SGLang (``load_plugins`` logs and goes on), so an
    unsupported version registers the guard alone: it refuses in the scheduler, where
    an exception stops the server, and only when a fastmtp artifact is being served.
    """
    if disabled():
        log.info("fastmtp sglang_patch disabled by FASTMTP_SGLANG_PATCH=0")
        return
    import sglang

    from . import hooks

    problem = version_problem(sglang.__version__)
    if problem is not None:
        log.warning("%s (the plugin is idle; serving a fastmtp artifact is refused)", problem)
        hooks.register_guard(problem)
        return
    hooks.register()
