"""Load draft directories with vLLM's own MTP draft classes, on CPU, as its runner does.

Run with the vLLM lane's interpreter (``.venv-vllm``; tests/vllm_lane/env.py) and
``TARGET=DRAFT`` pairs as arguments; prints one JSON object per pair. ``TARGET`` is the
base model's directory (its ``config.json`` is what vLLM builds the target, and most MTP
classes, from), ``DRAFT`` the directory passed as ``speculative_config["model"]``.

For each pair it does what vLLM's GPU model runner does at start-up, minus the GPU:

1. ``EngineArgs(model=TARGET, speculative_config={"method": "mtp", "model": DRAFT,
   ...}).create_engine_config()``: vLLM's own ``SpeculativeConfig`` rewrites the draft
   config (``hf_config_override``) and resolves the draft class;
2. ``load_eagle_model(target, vllm_config)``, the function ``MTPSpeculator`` calls:
   the real ``get_model`` with vLLM's ``DefaultModelLoader`` reading DRAFT's
   safetensors, its strict check that every parameter was loaded ("Following weights
   were not initialized from checkpoint"), and the sharing of the target's embedding
   and ``lm_head``. The target is a stand-in holding only those two modules (the one
   thing ``load_eagle_model`` reads from it), built from TARGET's config. Every
   parameter is NaN before the loader runs, so a parameter still NaN afterwards is one
   the draft would serve uninitialised;
3. for each tensor of DRAFT, a fresh model (vLLM's ``initialize_model``) loads all the
   others with the class's ``load_weights``: a tensor whose absence leaves fewer
   elements unfilled than it holds was ignored (the MTP loaders skip names they do not
   know, without a word) or only partly used. Any exception there is a probe error,
   never evidence of use.

Errors of one pair (vLLM's refusal of a draft) are results: ``{"error": ...}``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from cpu_shims import ENV  # this directory (the script runs as a file, not a module)
from cpu_shims import install as install_cpu_shims

os.environ.update(ENV)  # before vLLM is imported

import torch

#: the draft loads in float32 here so that NaN marks survive (no bf16 rounding games)
DTYPE = "float32"


def _engine_config(target: str, draft: str) -> Any:
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(
        model=target,
        skip_tokenizer_init=True,
        enforce_eager=True,
        dtype=DTYPE,
        max_model_len=256,
        speculative_config={"method": "mtp", "model": draft, "num_speculative_tokens": 1},
    )
    return args.create_engine_config()


def _init_distributed(cfg: Any) -> None:
    """World size 1 on gloo, as one CPU worker, set up for ``cfg``: vLLM creates the
    expert-parallel group only for a config with experts, so each draft gets its own."""
    from vllm.config import set_current_vllm_config
    from vllm.distributed import parallel_state

    if parallel_state._WORLD is not None:
        parallel_state.destroy_model_parallel()
        parallel_state.destroy_distributed_environment()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with set_current_vllm_config(cfg):
        parallel_state.init_distributed_environment(
            world_size=1,
            rank=0,
            local_rank=0,
            distributed_init_method=f"tcp://127.0.0.1:{port}",
            backend="gloo",
        )
        parallel_state.initialize_model_parallel(1, 1)


def _nan_fill(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.fill_(float("nan"))


def _nan_count(model: torch.nn.Module) -> int:
    return sum(int(torch.isnan(p).sum()) for p in model.parameters() if p.is_floating_point())


class _Target(torch.nn.Module):
    """What ``load_eagle_model`` reads from the target: ``model.embed_tokens`` and
    ``lm_head`` (vLLM's own layer classes, sized from TARGET's text config)."""

    def __init__(self, cfg: Any) -> None:
        from vllm.model_executor.layers.vocab_parallel_embedding import (
            ParallelLMHead,
            VocabParallelEmbedding,
        )

        super().__init__()
        text = cfg.model_config.hf_text_config
        self.model = torch.nn.Module()
        self.model.embed_tokens = VocabParallelEmbedding(text.vocab_size, text.hidden_size)
        self.lm_head = ParallelLMHead(text.vocab_size, text.hidden_size)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))  # [V, H]


class ProbeError(RuntimeError):
    """Loading a draft without one tensor failed: the probe's failure, not a result."""


def _used(cfg: Any, weights: dict[str, torch.Tensor]) -> set[str]:
    """The tensors the class's ``load_weights`` uses (leave one out, see module doc)."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.utils import initialize_model
    from vllm.utils.torch_utils import set_default_torch_dtype

    draft_config = cfg.speculative_config.draft_model_config

    def fresh() -> Any:
        # attention layers register by name in the config: a new model, a new registry
        cfg.compilation_config.static_forward_context.clear()
        with set_default_torch_dtype(draft_config.dtype), torch.device("cpu"):
            model = initialize_model(vllm_config=cfg, model_config=draft_config)
        _nan_fill(model)
        return model

    with set_current_vllm_config(cfg):
        full = fresh()
        full.load_weights(iter(weights.items()))
        base = _nan_count(full)
        used = set()
        for name, t in weights.items():
            probe = fresh()
            try:
                probe.load_weights((n, w) for n, w in weights.items() if n != name)
            except Exception as exc:
                raise ProbeError(
                    f"{type(probe).__name__}.load_weights without {name}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if _nan_count(probe) - base >= t.numel():
                used.add(name)
    return used


def load_draft(target: str, draft: str) -> dict[str, Any]:
    """What vLLM's runner makes of ``draft`` served beside ``target`` (module doc)."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.default_loader import DefaultModelLoader
    from vllm.v1.worker.gpu.spec_decode.eagle.utils import load_eagle_model

    from fastmtp_export.evaluate.reference import load_artifact_weights

    cfg = _engine_config(target, draft)
    _init_distributed(cfg)
    draft_config = cfg.speculative_config.draft_model_config
    doc: dict[str, Any] = {
        "target": target,
        "draft": draft,
        "architecture": draft_config.hf_config.architectures[0],
    }
    real_load = DefaultModelLoader.load_weights

    def nan_first(self: Any, model: torch.nn.Module, model_config: Any) -> None:
        doc["class"] = type(model).__name__
        _nan_fill(model)  # the loader must fill everything it claims
        real_load(self, model, model_config)

    with set_current_vllm_config(cfg):
        target_model = _Target(cfg)
        DefaultModelLoader.load_weights = nan_first
        try:
            model = load_eagle_model(target_model, cfg)
        finally:
            DefaultModelLoader.load_weights = real_load
    target_ptrs = {p.data_ptr(): n for n, p in target_model.named_parameters()}
    params = dict(model.named_parameters(remove_duplicate=False))
    doc["shared_from_target"] = sorted(n for n, p in params.items() if p.data_ptr() in target_ptrs)
    doc["unfilled"] = sorted(
        n for n, p in params.items() if p.is_floating_point() and bool(torch.isnan(p).any())
    )
    weights = load_artifact_weights(Path(draft))
    used = _used(cfg, weights)
    doc["tensors"] = len(weights)
    doc["ignored_or_partial"] = sorted(n for n in weights if n not in used)
    return doc


def main(argv: list[str]) -> int:
    install_cpu_shims()
    for arg in argv:
        target, _, draft = arg.partition("=")
        try:
            doc = load_draft(target, draft)
        except Exception as exc:
            doc = {"target": target, "draft": draft, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
