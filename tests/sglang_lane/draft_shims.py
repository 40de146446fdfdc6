"""The few CPU stand-ins tests/sglang_lane/draft_logits.py needs to run SGLang's drafts.

Each one replaces a single kernel or one missing call with the same computation in
PyTorch, and counts its calls in :data:`USED`, so a run can say which ones it needed.
None touches a family's own wiring (norms, projections, concat order, rope, routing).

1. ``sgl_kernel`` CPU ops that the PyPI (CUDA) ``sgl_kernel`` lacks and
   ``sglang/srt/models/qwen3_5.py`` binds at import on CPU: per-head Gemma RMSNorm of
   q and k (optionally splitting ``[q_h, gate_h]`` interleaved per head) and the
   in-place ``x *= sigmoid(gate)`` of the attention output gate. Semantics from
   sgl-kernel's own CPU tests (``x * rsqrt(mean(x^2) + eps) * (1 + w)`` in float32).
2. ``fused_gate_sigmoid_mul_add`` (a Triton kernel) in ``sglang/srt/models/qwen2_moe.py``:
   ``out += sigmoid(h @ w) * shared`` for Qwen's gated shared expert; on CPU without
   AMX, SGLang launches the Triton kernel and fails (no Triton CPU driver).
3. MLA attention method: SGLang has no dispatch entry for ``torch_native`` and falls
   back to Triton's, which picks MHA (``forward_normal``) for a prefix-free extend.
   That path stores the latent in the MLA pool and runs the dense heads with
   ``save_kv_cache=False``, but ``TorchNativeAttnBackend`` always reads K/V from the
   pool, so it fails (latent width != head width). The entry registered here returns
   SGLang's own ``_dispatch_mla_subtype``: ``AttnForwardMethod.MLA`` (weight-absorbed
   MLA, what SGLang runs for decode and draft-extend-v2), the same attention up to
   float rounding.
4. LongCat-Flash's NextN layer (``LongcatFlashDenseDecoderLayer``) declares its
   attention stage without ``qkv_latent_func``, unlike ``LongcatFlashDecoderLayer`` and
   ``DeepseekV2DecoderLayer``, so ``fetch_qkv_latent()`` finds no attention input (an
   assertion in-process). The wrapper hands the attention its own
   ``prepare_qkv_latent`` on its own (normed) input, as the target's layers do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

#: shim name -> calls in this process
USED: Counter[str] = Counter()
_LIBS: list[torch.library.Library] = []


def _gemma_rms(x: torch.Tensor, w: torch.Tensor, eps: float, head_dim: int) -> torch.Tensor:
    """GemmaRMSNorm per head in float32: [N, head_dim] out."""
    xf = x.float().reshape(-1, head_dim)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * (1.0 + w.float())).to(x.dtype)


def fused_qk_gemma_rmsnorm(
    q: torch.Tensor, k: torch.Tensor, qw: torch.Tensor, kw: torch.Tensor, eps: float, hd: int
) -> tuple[torch.Tensor, torch.Tensor]:
    USED["fused_qk_gemma_rmsnorm_cpu"] += 1
    return _gemma_rms(q, qw, eps, hd).reshape(q.shape), _gemma_rms(k, kw, eps, hd).reshape(k.shape)


def fused_qk_gemma_rmsnorm_with_gate(
    q_gate: torch.Tensor,
    k: torch.Tensor,
    qw: torch.Tensor,
    kw: torch.Tensor,
    eps: float,
    hd: int,
    num_head: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q_gate [T, num_head * 2 * hd], per head [q_h, gate_h] -> q, k, gate as [*, hd]."""
    USED["fused_qk_gemma_rmsnorm_with_gate_cpu"] += 1
    per_head = q_gate.reshape(q_gate.shape[0], num_head, 2 * hd)  # [T, nh, 2 * hd]
    q, gate = per_head[..., :hd], per_head[..., hd:]
    return _gemma_rms(q, qw, eps, hd), _gemma_rms(k, kw, eps, hd), gate.reshape(-1, hd).clone()


def fused_sigmoid_mul(x: torch.Tensor, gate: torch.Tensor) -> None:
    """In place: x [T, nh * hd] *= sigmoid(gate) (gate of the same numel)."""
    USED["fused_sigmoid_mul_cpu"] += 1
    x.copy_((x.float() * torch.sigmoid(gate.float().reshape(x.shape))).to(x.dtype))


#: name -> (schema, implementation); schemas as sgl-kernel's CPU build declares them
CPU_OPS: dict[str, tuple[str, Callable[..., Any]]] = {
    "fused_sigmoid_mul_cpu": ("(Tensor(a!) input, Tensor gate) -> ()", fused_sigmoid_mul),
    "fused_qk_gemma_rmsnorm_cpu": (
        "(Tensor q, Tensor k, Tensor q_weight, Tensor k_weight, float eps, int head_dim)"
        " -> (Tensor, Tensor)",
        fused_qk_gemma_rmsnorm,
    ),
    "fused_qk_gemma_rmsnorm_with_gate_cpu": (
        "(Tensor q_gate, Tensor k, Tensor q_weight, Tensor k_weight, float eps, int head_dim,"
        " int num_head) -> (Tensor, Tensor, Tensor)",
        fused_qk_gemma_rmsnorm_with_gate,
    ),
}


def register_ops() -> list[str]:
    """Define the missing ops (a real CPU build wins); call before SGLang's models load."""
    import sgl_kernel  # noqa: F401  (the real library first)

    lib = torch.library.Library("sgl_kernel", "FRAGMENT")
    defined = []
    for name, (schema, fn) in CPU_OPS.items():
        try:
            getattr(torch.ops.sgl_kernel, name)
            continue
        except (AttributeError, RuntimeError):
            pass
        lib.define(name + schema)
        lib.impl(name, fn, "CPU")
        defined.append(name)
    _LIBS.append(lib)
    return defined


def fused_gate_sigmoid_mul_add(
    hidden: torch.Tensor, gate_w: torch.Tensor, shared: torch.Tensor, out: torch.Tensor
) -> None:
    """out [T, H] += sigmoid(hidden [T, H] @ gate_w [H]) * shared [T, H] (float32 math)."""
    USED["fused_gate_sigmoid_mul_add"] += 1
    gate = torch.sigmoid(hidden.float() @ gate_w.float())  # [T]
    out += (gate[:, None] * shared.float()).to(out.dtype)


def _mla_dispatch(attn: Any, forward_batch: Any) -> Any:
    from sglang.srt.models.deepseek_common.attention_backend_handler import (
        _dispatch_mla_subtype,
    )

    method = _dispatch_mla_subtype(attn, forward_batch)
    USED[f"mla_method:{method.name}"] += 1
    return method


def _attn_with_own_inputs(attn: Any) -> Callable[..., Any]:
    from sglang.srt.layers.layer_boundary.adapters.attention import (
        AttentionInputs,
        get_attn_tp_context,
    )

    forward = attn.forward

    def wrapped(*, hidden_states: torch.Tensor, forward_batch: Any, **kw: Any) -> Any:
        USED["longcat_nextn_qkv_latent"] += 1
        ctx = get_attn_tp_context()
        ctx.set_attn_inputs(AttentionInputs(hidden_states, forward_batch, attn.prepare_qkv_latent))
        try:
            return forward(hidden_states=hidden_states, forward_batch=forward_batch, **kw)
        finally:
            ctx.clear_attn_inputs()

    return wrapped


def install(model: torch.nn.Module) -> None:
    """Shims 2-4 for ``model`` (idempotent for 2 and 3)."""
    import sglang.srt.models.qwen2_moe as qwen2_moe
    from sglang.srt.models.deepseek_common.attention_backend_handler import (
        AttentionBackendRegistry,
    )

    qwen2_moe.fused_gate_sigmoid_mul_add = fused_gate_sigmoid_mul_add
    AttentionBackendRegistry.register("torch_native", _mla_dispatch)
    for module in model.modules():
        attn: Any = getattr(module, "self_attn", None)
        if type(module).__name__ == "LongcatFlashDenseDecoderLayer" and attn.q_lora_rank:
            attn.forward = _attn_with_own_inputs(attn)
