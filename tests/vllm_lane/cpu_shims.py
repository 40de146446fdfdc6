"""What vLLM needs to build and load its draft classes on a CPU with the PyPI build.

The PyPI wheel is vLLM's CUDA build, without the ``vllm._C`` CPU ops that vLLM's CPU
backend is compiled with. Three seams touch them while a draft loads, and none changes
which parameter receives which tensor:

* ``CpuPlatform.check_and_update_config`` refuses x86 machines without Triton ("vLLM on
  x86 CPUs requires Triton (triton-cpu)"), and ``vllm.triton_utils`` disables the
  installed Triton (3.8.0, torch's pin) when it finds no active GPU driver. With
  ``CUDA_VISIBLE_DEVICES`` set and empty, vLLM's own lenient branch for workers whose
  devices are not visible yet (Ray) keeps Triton; :data:`ENV` sets it. No Triton kernel
  runs while weights load.
* the CPU MoE experts repack their weights after loading
  (``CPUExperts.process_weights_after_loading`` -> ``torch.ops._C.prepack_moe_weight``,
  a layout change for the CPU kernel): the lane keeps them as loaded, so the NaN check
  reads exactly what the loader wrote.
* vLLM picks its AMX MLA backend where the CPU has AMX tiles (it packs the absorbed MLA
  weights with another ``vllm._C`` op) and its reference ``CPU_MLA`` backend elsewhere:
  the lane reports no AMX, so every machine takes the reference path.
"""

from __future__ import annotations

from typing import Any

#: set before ``import vllm`` (tests/vllm_lane/env.py passes it to the subprocess)
ENV = {"VLLM_TARGET_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""}


def _as_loaded(weight: Any, isa: str) -> Any:
    return weight


def install() -> None:
    """Apply the shims; call before vLLM builds a model."""
    import torch

    torch.cpu._is_amx_tile_supported = lambda: False

    from vllm.model_executor.layers.fused_moe.experts import cpu_moe

    cpu_moe.cpu_prepack_moe_weight = _as_loaded
