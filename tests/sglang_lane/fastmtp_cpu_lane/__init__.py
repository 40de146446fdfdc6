"""Test-only SGLang plugin: EAGLE K=3 chain speculation on a CPU without AMX.

SGLang 0.5.23 runs EAGLE on CPU only through the ``intel_amx`` attention backend, and
the PyPI ``sgl_kernel`` (a CUDA build) lacks the CPU ops the speculative loop calls.
This plugin, discovered through the ``sglang.srt.plugins`` entry point (a dist-info
folder beside it, on ``PYTHONPATH``), adds what the chain path needs:

- :mod:`.ops`: pure-PyTorch fallbacks for the 7 missing ``sgl_kernel`` CPU ops;
- :mod:`.backends`: a ``torch_native`` draft backend (2 AROUND hooks);
- :mod:`.parallel`: tensor parallelism without PyNccl (1 AROUND hook);
- :mod:`.models`: GLM-4.5's embedding/head binding without CUDA calls (1 AROUND hook).

It is never shipped: it lives under ``tests/`` and only the CPU test lane puts it on
``PYTHONPATH``. Every registration and first call is recorded through
:mod:`.status`, so a fallback or hook that silently did not run fails the lane.
"""

from __future__ import annotations


def register() -> None:
    """Entry point called by SGLang's ``load_plugins()`` in every process."""
    from . import backends, models, ops, parallel

    ops.register_fallbacks()
    backends.register_hooks()
    parallel.register_hooks()
    models.register_hooks()
