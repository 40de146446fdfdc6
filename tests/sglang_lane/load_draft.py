"""Load draft directories with SGLang 0.5.23's own draft classes, on CPU, in-process.

Run in the lane environment (``server.lane_env()``) with draft directories as
arguments; prints one JSON object per directory. For each draft it does what SGLang's
model runner does at start-up, minus the server:

1. ``ModelConfig(draft, is_draft_model=True)`` (SGLang rewrites the architecture to the
   draft class) and ``get_model_architecture`` (the class SGLang picks);
2. instantiate the class on CPU with world size 1;
3. fill every parameter with NaN and feed all the draft's tensors to the class's own
   ``load_weights`` in one call, as SGLang's loader does; list the parameters still
   holding NaN: what the draft would serve uninitialised unless SGLang takes it from
   the target (the embedding and head);
4. for each tensor, load all the others into a fresh NaN-filled model: a tensor whose
   absence leaves fewer elements unfilled than it holds was ignored (SGLang skips names
   it does not know without a word) or only partly used. The loader's own answers to
   a missing tensor are the only ones counted: parameters left unfilled, or the one
   refusal a class makes for it (``Step3p5MTP``: "Some parameters like P are not in
   the checkpoint", P one of its parameters). Any other exception is a probe error
   (:class:`ProbeError`, the draft's result is an error): counting it as "used" would
   report every tensor used whenever the probe itself is broken;
5. call ``set_embed_and_head(embed, head)`` as ``EagleDraftWorker.init_lm_head`` does
   with a reduced ``[K, H]`` head, and report whether ``model.lm_head.weight`` is then
   that tensor: the plugin rebinds exactly that attribute to swap vocabularies.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: ops ``sglang/srt/models/qwen3_5.py`` binds at import when running on CPU (the model
#: registry otherwise skips qwen3_5 and qwen3_5_mtp with "Ignore import error").
CPU_OP_PLACEHOLDERS = (
    "fused_sigmoid_mul_cpu",
    "fused_qk_gemma_rmsnorm_cpu",
    "fused_qk_gemma_rmsnorm_with_gate_cpu",
    "fused_qkvzba_split_reshape_cat_contiguous_cpu",
)


def _placeholder_ops() -> list[str]:
    """Define the ``sgl_kernel`` CPU ops that some model modules look up at import time
    and the PyPI CUDA build lacks; they raise if called (loading never calls them)."""
    import sgl_kernel  # noqa: F401  (the real library first, so real ops win)

    defined = []
    lib = torch.library.Library("sgl_kernel", "FRAGMENT")
    for name in CPU_OP_PLACEHOLDERS:
        try:
            getattr(torch.ops.sgl_kernel, name)
            continue
        except (AttributeError, RuntimeError):
            pass

        def refuse(*_args: Any, _name: str = name) -> torch.Tensor:
            raise RuntimeError(f"{_name} is a load-only placeholder")

        lib.define(name + "(Tensor x) -> ()")
        lib.impl(name, refuse, "CompositeExplicitAutograd")
        defined.append(name)
    _LIBS.append(lib)
    return defined


_LIBS: list[torch.library.Library] = []


def init_sglang() -> None:
    """World size 1 on gloo, the topology published as a server would (TP 1)."""
    from sglang.srt.distributed import parallel_state
    from sglang.srt.distributed.parallel_state import (
        init_distributed_environment,
        initialize_model_parallel,
    )
    from sglang.srt.runtime_context import SpawnRanks, get_parallel, publish, reset_context
    from sglang.srt.server_args import ServerArgs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo")
    reset_context()
    publish(
        ServerArgs(model_path="dummy", tp_size=1, ep_size=1, pp_size=1, device="cpu"),
        role="test",
        ranks=SpawnRanks(world_rank=0),
    )
    get_parallel().override_permanently(world_group=parallel_state._WORLD)
    initialize_model_parallel(backend="gloo")


#: the refusal SGLang's ``Step3p5MTP.load_weights`` raises (a ``RuntimeError``) when a
#: parameter received no tensor; the other draft classes leave such a parameter as it is
MISSING_REFUSAL = re.compile(r"Some parameters like (\S+) are not in the checkpoint\b")


class ProbeError(RuntimeError):
    """Loading a draft without one tensor failed for another reason than its absence."""


def _refuses_missing(exc: Exception, params: dict[str, torch.Tensor]) -> bool:
    """``exc`` is the loader's own refusal of a checkpoint that lacks a parameter's tensor.

    A ``KeyError`` is not: the loaders raise it for a name they have no parameter for
    (an extra tensor), which the full load would already have raised.
    """
    if type(exc) is not RuntimeError:
        return False
    found = MISSING_REFUSAL.match(str(exc))
    return found is not None and found.group(1) in params


def _nan_count(params: dict[str, torch.Tensor]) -> int:
    return sum(int(torch.isnan(p).sum()) for p in params.values() if p.is_floating_point())


def _fresh(
    cls: Any, hf_config: Any, quant_config: Any = None, **kw: Any
) -> tuple[Any, dict[str, torch.Tensor]]:
    """The class built as SGLang builds the draft (with its quantization config, if any),
    every floating parameter NaN (float8_e4m3fn has a NaN too, 0x7f)."""
    model = cls(config=hf_config, quant_config=quant_config, **kw)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for p in params.values():
            if p.is_floating_point():
                p.fill_(float("nan"))
    return model, params


def _runner(
    cls: Any,
    hf_config: Any,
    weights: dict[str, tuple[str, torch.Tensor]],
    quant_config: Any = None,
    **kw: Any,
) -> tuple[list[str], set[str], Any]:
    """One draft model runner: (unfilled parameters, source tensors it uses, model).

    ``weights``: name as the runner sees it -> (name in the draft dir, tensor).
    """
    model, params = _fresh(cls, hf_config, quant_config, **kw)
    model.load_weights([(n, t) for n, (_, t) in weights.items()])  # one call, as SGLang
    full = _nan_count(params)
    unfilled = sorted(n for n, p in params.items() if p.is_floating_point() and p.isnan().any())
    # leave one out: a tensor SGLang uses leaves at least its own size unfilled when
    # missing (more where the loader fuses it with another, as MLA's q_a/kv_a), or makes
    # the loader refuse the checkpoint for a missing parameter; one it ignores changes
    # nothing; any other failure is the probe's, never evidence of use
    used = set()
    for name, (source, t) in weights.items():
        probe, probe_params = _fresh(cls, hf_config, quant_config, **kw)
        try:
            probe.load_weights([(n, w) for n, (_, w) in weights.items() if n != name])
        except Exception as exc:
            if not _refuses_missing(exc, probe_params):
                raise ProbeError(
                    f"{cls.__name__}.load_weights without {source}: {type(exc).__name__}: {exc}"
                ) from exc
            used.add(source)
            continue
        if _nan_count(probe_params) - full >= t.numel():
            used.add(source)
    return unfilled, used, model


def draft_weights(draft: str) -> dict[str, torch.Tensor]:
    """Every tensor of the draft directory (all its ``*.safetensors``)."""
    from fastmtp_export.evaluate.reference import load_artifact_weights

    return load_artifact_weights(Path(draft))


def load_draft(draft: str, steps: int | None = None, quant_config: Any = None) -> dict[str, Any]:
    """What SGLang's draft class makes of ``draft`` (see the module docstring).

    ``steps``: multi-layer EAGLE (MiMo-V2, Step-3.5): SGLang builds one runner per draft
    step ``i`` with ``draft_model_idx=i`` and its loader's own MTP-layer filter.
    ``quant_config``: the quantization config SGLang's loader derives from a quantized
    draft's config (``None``, as for every unquantized draft).
    """
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.model_loader.loader import DefaultModelLoader
    from sglang.srt.model_loader.utils import get_model_architecture

    config = ModelConfig(draft, is_draft_model=True)
    cls, arch = get_model_architecture(config)
    weights = draft_weights(draft)
    unfilled: list[str] = []
    used: set[str] = set()
    for idx in range(steps) if steps else [None]:
        if idx is None:
            seen = {n: (n, t) for n, t in weights.items()}
            kw: dict[str, Any] = {}
        else:
            seen = _filtered(DefaultModelLoader, weights, idx)
            kw = {"draft_model_idx": idx}
        step_unfilled, step_used, model = _runner(cls, config.hf_config, seen, quant_config, **kw)
        unfilled += [u if idx is None else f"step {idx}: {u}" for u in step_unfilled]
        used |= step_used
    partial = [
        {"tensor": n, "numel": t.numel()} for n, t in sorted(weights.items()) if n not in used
    ]
    head_follows = None
    # DeepseekV2ForCausalLM.set_embed_and_head ends with torch.cuda.synchronize()
    torch.cuda.synchronize = lambda *_a, **_k: None
    if hasattr(model, "set_embed_and_head") and hasattr(model, "lm_head"):
        embed, head = model.get_embed_and_head()
        reduced = torch.zeros(3, head.shape[1], dtype=head.dtype)  # [K, H]: a reduced head
        model.set_embed_and_head(embed, reduced)
        head_follows = model.lm_head.weight.data_ptr() == reduced.data_ptr()
    return {
        "draft": draft,
        "architecture": arch,
        "class": cls.__name__,
        "tensors": len(weights),
        "ignored_or_partial": partial,
        "unfilled": unfilled,
        "head_follows_target": head_follows,
    }


def _filtered(
    loader: Any, weights: dict[str, torch.Tensor], idx: int
) -> dict[str, tuple[str, torch.Tensor]]:
    """SGLang's own multi-layer filter, name by name (kept: new name -> (old, tensor))."""
    out = {}
    for name, t in weights.items():
        for new, _ in loader._filter_mtp_weights(iter([(name, t)]), "", idx):
            out[new] = (name, t)
    return out


def run(argv: list[str], load: Callable[[str], dict[str, Any]]) -> int:
    """SGLang set up once, then one JSON line per argument: ``load(arg)``, or the error
    it raised (one draft's failure is a result, not a crash)."""
    placeholders = _placeholder_ops()
    init_sglang()
    for arg in argv:
        try:
            doc = load(arg)
        except Exception as exc:
            doc = {"draft": arg, "error": f"{type(exc).__name__}: {exc}"}
        doc["placeholder_ops"] = placeholders
        sys.stdout.write(json.dumps(doc) + "\n")
    return 0


def _load_arg(arg: str) -> dict[str, Any]:
    draft, _, steps = arg.partition(":")  # DIR or DIR:STEPS (multi-layer EAGLE)
    return load_draft(draft, int(steps) if steps else None)


def main(argv: list[str]) -> int:
    return run(argv, _load_arg)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
