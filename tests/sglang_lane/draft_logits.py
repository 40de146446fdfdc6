"""Run SGLang 0.5.23's own MTP draft classes forward on CPU, in-process: draft logits.

The contract test compares our PyTorch reference heads with what SGLang computes in
EAGLE's prefill draft-extend pass (``EagleWorkerV2._draft_extend_for_prefill``): one
sequence from position 0, ``ForwardMode.EXTEND``, ``spec_info`` an
``EagleDraftExtendInput`` carrying the target's hidden states, page size 1.

Usage, in the lane environment (``server.lane_env()``)::

    python draft_logits.py IN.safetensors OUT.safetensors DRAFT_DIR [DRAFT_DIR ...]
    python draft_logits.py --selfcheck

IN: ``input_ids`` [T] int64 (the ids the draft sees: the prompt shifted left by one
plus the target's next token), ``positions`` [T] int64, ``hidden`` [T, H] float32
(``spec_info.hidden_states``), ``embed`` [V, H] and ``lm_head`` [K, H] float32 (the
target's, bound with ``set_embed_and_head`` as ``EagleDraftWorker`` does; a reduced
head gives K logits). OUT, per draft ``i`` in argument order: ``{i}.logits`` [T, K]
and ``{i}.out`` [T, H] float32, the hidden states SGLang's ``LogitsProcessor`` captures
with ``CaptureHiddenMode.FULL`` (what the draft feeds its next step); the metadata key
``drafts`` and one stdout JSON line per draft tell class, dtype, attention path, shims
used and seconds. Single-layer drafts only (no ``DIR:STEPS``).

Everything is SGLang's: ``ModelConfig(is_draft_model=True)``, ``get_model_architecture``,
construction under ``resolve_shared_experts_config`` (fusion resolves to off on CPU),
``DefaultModelLoader.load_weights_and_postprocess`` (the class's ``load_weights`` and
``post_load_weights``), ``set_embed_and_head``, a real ``ReqToTokenPool``, an
``MHATokenToKVPool`` (``MLATokenToKVPool`` for MLA), ``TorchNativeAttnBackend`` and the
class's ``forward`` with its ``LogitsProcessor``. The model is built with float32 as
default dtype (the lane serves ``--dtype float32``): the drafts' bf16 weights load
into float32 parameters. Logits for every row are SGLang's ``LogitsProcessor._get_logits``
on the FULL capture; the last row is checked against the forward's own
``next_token_logits``. No SGLang plugin runs (``load_plugins`` is never called): neither
``sglang_patch`` nor the lane's ``fastmtp_cpu_lane``. ``--selfcheck`` re-runs itself in
the lane environment when started outside it.

Replaced, and why (tests/sglang_lane/draft_shims.py, each counted when called):

1. three ``sgl_kernel`` CPU ops missing from the CUDA wheel (Qwen3.5's per-head Gemma
   q/k norm with the gate split, and the output gate), in PyTorch;
2. Qwen's gated shared-expert Triton kernel (no Triton CPU driver), in PyTorch;
3. MLA's attention method on ``torch_native``: weight-absorbed MLA instead of the MHA
   path, which cannot run on this backend (the pool holds the latent);
4. LongCat-Flash's NextN layer never hands its attention an input
   (``qkv_latent_func`` missing in SGLang 0.5.23): its own ``prepare_qkv_latent`` is
   given, as in the target's layers;
5. ``torch.cuda.synchronize``/``empty_cache`` are no-ops around ``set_embed_and_head``
   (the GLM/DeepSeek/LongCat/Qwen3-Next classes call them; cf. fastmtp_cpu_lane.models).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

LANE = Path(__file__).resolve().parent
ROOT = LANE.parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's tests package
    sys.path.insert(0, str(ROOT))

from tests.sglang_lane import draft_shims  # noqa: E402
from tests.sglang_lane.load_draft import (  # noqa: E402
    _placeholder_ops,
    draft_weights,
    init_sglang,
)

SELFCHECK_SKIP = ("mimo_v2", "step3p5")  # multi-layer EAGLE, out of scope
#: the tensor the self-check zeroes: the projection of [embedding, hidden]
FUSION_TENSORS = ("eh_proj.weight", "fc.weight", "input_proj.weight")


def setup() -> None:
    """Ops before any SGLang model module is imported, then world size 1."""
    draft_shims.register_ops()
    _placeholder_ops()
    init_sglang()


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


@contextmanager
def _no_cuda_calls() -> Any:
    saved = torch.cuda.synchronize, torch.cuda.empty_cache
    torch.cuda.synchronize = torch.cuda.empty_cache = _noop
    try:
        yield
    finally:
        torch.cuda.synchronize, torch.cuda.empty_cache = saved


def load(draft: str, embed: torch.Tensor, head: torch.Tensor) -> Any:
    """SGLang's draft class for ``draft``, loaded as its loader does, head bound."""
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.layers.moe.utils import resolve_shared_experts_config
    from sglang.srt.model_loader.loader import DefaultModelLoader
    from sglang.srt.model_loader.utils import get_model_architecture, set_default_torch_dtype
    from sglang.srt.runtime_context import get_model

    config = ModelConfig(draft, is_draft_model=True)
    cls, _ = get_model_architecture(config)
    shared = resolve_shared_experts_config(cls, config.hf_config, None)
    with set_default_torch_dtype(torch.float32), get_model().override(shared_experts=shared):
        model = cls(config=config.hf_config, quant_config=None)
    model.shared_experts_config = shared
    DefaultModelLoader.load_weights_and_postprocess(
        model, iter(draft_weights(draft).items()), torch.device("cpu")
    )
    with _no_cuda_calls():
        model.set_embed_and_head(embed, head)
    draft_shims.install(model)
    return model.eval()


def _backend(model: Any, tokens: int) -> Any:
    """TorchNativeAttnBackend over real pools sized for one request of ``tokens``."""
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.mem_cache.memory_pool import (
        MHATokenToKVPool,
        MLATokenToKVPool,
        ReqToTokenPool,
    )

    attns = [m for m in model.modules() if isinstance(m, RadixAttention)]
    layers = max(a.layer_id for a in attns) + 1
    size = tokens + 1  # slot 0 is SGLang's padding slot
    hf = model.config
    if getattr(hf, "kv_lora_rank", None):
        kv: Any = MLATokenToKVPool(
            size, 1, torch.float32, hf.kv_lora_rank, hf.qk_rope_head_dim, layers, "cpu", False
        )
    else:
        a = attns[0]
        kv = MHATokenToKVPool(
            size, 1, torch.float32, a.tp_k_head_num, a.qk_head_dim, layers, "cpu", False,
            v_head_dim=a.v_head_dim,
        )  # fmt: skip

    class Runner:  # what TorchNativeAttnBackend reads from a model runner
        device = "cpu"
        req_to_token_pool = ReqToTokenPool(1, size, "cpu", False)  # rows [2, size]
        token_to_kv_pool = kv

    backend = TorchNativeAttnBackend(Runner())
    # the names a runner started with --attention-backend torch_native stamps
    backend.prefill_attention_backend_str = backend.decode_attention_backend_str = "torch_native"
    extend = backend.forward_extend

    def counted(*args: Any, **kw: Any) -> Any:
        draft_shims.USED["torch_native.forward_extend"] += 1
        return extend(*args, **kw)

    backend.forward_extend = counted
    return backend


def run(model: Any, ids: torch.Tensor, pos: torch.Tensor, hidden: torch.Tensor) -> Any:
    """One prefill draft-extend forward: (logits [T, K], out [T, H])."""
    from sglang.srt.layers.logits_processor import LogitsMetadata
    from sglang.srt.model_executor.forward_batch_info import (
        CaptureHiddenMode,
        ForwardBatch,
        ForwardMode,
    )
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context
    from sglang.srt.runtime_context import get_model
    from sglang.srt.speculative.eagle_info import EagleDraftExtendInput
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    t = ids.shape[0]
    backend = _backend(model, t)
    loc = torch.arange(1, t + 1, dtype=torch.int64)  # [T] KV slots of the request
    backend.req_to_token_pool.req_to_token[1, :t] = loc.to(torch.int32)
    one = torch.tensor([1], dtype=torch.int64)
    fb = ForwardBatch(
        forward_mode=ForwardMode.EXTEND, batch_size=1, input_ids=ids,
        req_pool_indices=one, seq_lens=one * t, out_cache_loc=loc, seq_lens_sum=t,
        seq_lens_cpu=one * t, positions=pos, extend_num_tokens=t,
        extend_seq_lens=(one * t).int(), extend_prefix_lens=(one * 0).int(),
        extend_start_loc=(one * 0).int(), extend_prefix_lens_cpu=[0],
        extend_seq_lens_cpu=[t], extend_logprob_start_lens_cpu=[t], return_logprob=False,
        spec_algorithm=SpeculativeAlgorithm.EAGLE, capture_hidden_mode=CaptureHiddenMode.FULL,
        spec_info=EagleDraftExtendInput(
            hidden_states=hidden, num_tokens_per_req=1, num_tokens_for_logprob_per_req=1
        ),
    )  # fmt: skip
    with (
        torch.no_grad(),
        get_model().override(shared_experts=model.shared_experts_config),
        forward_context(ForwardContext(attn_backend=backend), forward_batch=fb),
    ):
        backend.init_forward_metadata(fb)
        result = model.forward(ids, pos, fb)
        out = result.hidden_states  # [T, H]
        meta = LogitsMetadata.from_forward_batch(fb)
        logits = model.logits_processor._get_logits(
            out, model.lm_head, meta, use_logits_buffer=False
        )  # [T, K]
    # same head, [T, H] @ [H, K] against [1, H] @ [H, K]: equal up to BLAS rounding
    if not torch.allclose(logits[-1:], result.next_token_logits, rtol=1e-5, atol=1e-5):
        raise AssertionError("full logits disagree with SGLang's own last-row logits")
    return logits.float(), out.float()


def draft_logits(drafts: list[str], inputs: dict[str, torch.Tensor]) -> tuple[dict, list]:
    """Every draft on the same inputs: ({i}.logits/{i}.out tensors, one doc per draft)."""
    tensors, docs = {}, []
    for i, draft in enumerate(drafts):
        draft_shims.USED.clear()
        start = time.perf_counter()
        model = load(draft, inputs["embed"].float(), inputs["lm_head"].float())
        logits, out = run(model, inputs["input_ids"], inputs["positions"], inputs["hidden"])
        tensors[f"{i}.logits"], tensors[f"{i}.out"] = logits.contiguous(), out.contiguous()
        docs.append(
            {
                "index": i, "draft": draft, "class": type(model).__name__,
                "dtype": str(next(model.parameters()).dtype), "shims": dict(draft_shims.USED),
                "seconds": round(time.perf_counter() - start, 2),
            }
        )  # fmt: skip
    return tensors, docs


def main(argv: list[str]) -> int:
    if argv == ["--selfcheck"]:
        return selfcheck()
    if len(argv) < 3 or any(":" in a for a in argv[2:]):
        sys.stderr.write(__doc__ or "")
        return 2
    from safetensors.torch import load_file, save_file

    setup()
    tensors, docs = draft_logits(argv[2:], load_file(argv[0]))
    save_file(tensors, argv[1], metadata={"drafts": json.dumps(docs)})
    for doc in docs:
        sys.stdout.write(json.dumps(doc) + "\n")
    return 0


def _inputs(t: int, h: int, v: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, v, (t,), generator=g),  # [T]
        "positions": torch.arange(t),  # [T]
        "hidden": torch.randn(t, h, generator=g),  # [T, H]
        "embed": torch.randn(v, h, generator=g),  # [V, H]
        "lm_head": torch.randn(v, h, generator=g) * 0.2,  # [V, H]
    }


def selfcheck() -> int:
    """Every family: runs, finite, changes when the fusion projection is zeroed; and
    two facts read off SGLang's forward: whether row 0 sees its token, causality."""
    if os.environ.get("SGLANG_USE_CPU_ENGINE") != "1":  # re-run in the lane environment
        from tests.sglang_lane.server import lane_env

        os.execve(sys.executable, [sys.executable, __file__, "--selfcheck"], lane_env())
    from safetensors.torch import load_file, save_file

    from fastmtp_export.artifact.export import export_draft
    from fastmtp_export.checkpoints.synthetic import write_synthetic
    from tests.checkpoints.families import CASES

    setup()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if case.family in SELFCHECK_SKIP:
                continue
            root = Path(tmp) / case.id
            src = write_synthetic(
                root / "src", case.family, case.config,
                num_mtp_layers=case.mtp_layers, contract=case.contract,
            )  # fmt: skip
            draft = export_draft(src, root / "draft", progress=False).out
            weights = load_file(draft / "model.safetensors")
            name = next(n for n in weights if n.endswith(FUSION_TENSORS))
            weights[name] = torch.zeros_like(weights[name])
            broken = root / "zeroed"
            broken.mkdir()
            for f in draft.iterdir():
                if f.suffix == ".json":
                    (broken / f.name).write_bytes(f.read_bytes())
            save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
            h, v = weights[name].shape[0], 256
            base = _inputs(6, h, v)
            first = dict(base, input_ids=base["input_ids"].clone())
            first["input_ids"][0] = (first["input_ids"][0] + 1) % v
            last = dict(base, input_ids=base["input_ids"].clone())
            last["input_ids"][-1] = (last["input_ids"][-1] + 1) % v
            runs = [draft_logits([str(d)], x) for d, x in (
                (draft, base), (broken, base), (draft, first), (draft, last))]  # fmt: skip
            ref, zeroed, row0, causal = (r[0]["0.logits"] for r in runs)

            def moved(a: torch.Tensor, b: torch.Tensor) -> bool:
                # above the rounding of MoE's per-expert batches (~1e-6 here)
                return bool((a - b).abs().max() > 1e-4)

            checks = {
                "finite": bool(torch.isfinite(ref).all()),
                "zeroed_changes_logits": moved(ref, zeroed),
                "causal": not moved(ref[:-1], causal[:-1]) and moved(ref[-1], causal[-1]),
            }
            failures += not all(checks.values())
            doc = runs[0][1][0] | {
                "case": case.id, "checks": checks, "zeroed": name, "logits": list(ref.shape),
                "row0_sees_its_token": moved(ref[0], row0[0]),
                "max_abs_change_zeroed": float((ref - zeroed).abs().max()),
            }  # fmt: skip
            doc.pop("draft")
            sys.stdout.write(json.dumps(doc) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
