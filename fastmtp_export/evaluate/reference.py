"""A pure-PyTorch MiMo MTP forward, computed exactly as SGLang's ``MiMoMTP`` does.

Why it exists: to prove an export is lossless (exported tensors give bit-identical
logits to the source tensors) and, later, to evaluate acceptance without a GPU server.
One MTP step over a sequence of T positions::

    e   = embed(x_{t+1}); e[positions == 0] = 0           # [T, H]
    x   = input_proj(cat[hidden_ln(h_t), token_ln(e)])     # [T, 2H] -> [T, H]; hidden FIRST
    x   = x + attn(input_ln(x))                            # Qwen2 attention, q/k/v bias, RoPE
    x   = x + mlp(post_attention_ln(x))                    # SwiGLU
    out = final_ln(x)                                      # [T, H], fed to the next step
    logits = out @ lm_head.T                               # [T, V], the *target's* head

``h_t`` is the target's final-normed hidden state at step 1 and the previous step's
``out`` afterwards (SGLang's EAGLE semantics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F  # noqa: N812

from ..checkpoints.contract import config_dims

PREFIX = "model.mtp_layers.0."


@dataclass(frozen=True)
class MTPDims:
    """The config values the forward needs."""

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MTPDims:
        dims = config_dims(config)
        heads = int(config["num_attention_heads"])
        head_dim = dims["Q"] // heads
        return cls(
            hidden_size=dims["H"],
            num_heads=heads,
            num_kv_heads=dims["KV"] // head_dim,
            head_dim=head_dim,
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(config.get("rope_theta", 10000.0)),
        )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen2RMSNorm: normalise in float32, cast back, then scale."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neox-style rotary tables, each [T, head_dim]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]  # [T, head_dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, head_dim]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class KVCache:
    """Keys and values of the positions already run, for incremental decoding.

    Preallocated buffers [nkv, capacity, hd] (after RoPE), doubled when full, so an
    append costs its own positions, not a copy of the prefix. :meth:`crop` drops
    speculative positions (draft steps) before the next draft-extend rewrites them.
    """

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None  # [nkv, capacity, hd]
        self.v: torch.Tensor | None = None
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def crop(self, length: int) -> None:
        self.length = min(self.length, length)

    def save(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """A copy to :meth:`restore` after speculative steps overwrite positions."""
        assert self.k is not None
        assert self.v is not None
        return self.k.clone(), self.v.clone(), self.length

    def restore(self, saved: tuple[torch.Tensor, torch.Tensor, int], dirty: slice) -> None:
        """Put back the ``dirty`` positions of :meth:`save`'s copy, and its length."""
        assert self.k is not None
        assert self.v is not None
        self.k[:, dirty] = saved[0][:, dirty]
        self.v[:, dirty] = saved[1][:, dirty]
        self.length = saved[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add k, v [nkv, T, hd]; return every cached position's [nkv, length, hd] views."""
        end = self.length + k.shape[1]
        if self.k is None or self.v is None or end > self.k.shape[1]:
            cap = max(64, 2 * end)
            grown_k = k.new_empty(k.shape[0], cap, k.shape[2])  # [nkv, cap, hd]
            grown_v = v.new_empty(v.shape[0], cap, v.shape[2])
            if self.k is not None and self.v is not None:
                grown_k[:, : self.length] = self.k[:, : self.length]
                grown_v[:, : self.length] = self.v[:, : self.length]
            self.k, self.v = grown_k, grown_v
        self.k[:, self.length : end] = k
        self.v[:, self.length : end] = v
        self.length = end
        return self.k[:, :end], self.v[:, :end]


def attention(
    x: torch.Tensor,
    w: Mapping[str, torch.Tensor],
    dims: MTPDims,
    positions: torch.Tensor,
    cache: KVCache | None = None,
) -> torch.Tensor:
    """Causal GQA self-attention over one sequence; x [T, H] -> [T, H].

    With ``cache``, the T new positions follow the cached ones and attend to them too;
    their keys and values are appended.
    """
    t = x.shape[0]
    p = "self_attn."
    q = F.linear(x, w[p + "q_proj.weight"], w[p + "q_proj.bias"])  # [T, nh*hd]
    k = F.linear(x, w[p + "k_proj.weight"], w[p + "k_proj.bias"])  # [T, nkv*hd]
    v = F.linear(x, w[p + "v_proj.weight"], w[p + "v_proj.bias"])  # [T, nkv*hd]
    q = q.view(t, dims.num_heads, dims.head_dim).transpose(0, 1)  # [nh, T, hd]
    k = k.view(t, dims.num_kv_heads, dims.head_dim).transpose(0, 1)  # [nkv, T, hd]
    v = v.view(t, dims.num_kv_heads, dims.head_dim).transpose(0, 1)  # [nkv, T, hd]
    cos, sin = rope_cos_sin(positions, dims.head_dim, dims.rope_theta, x.dtype)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    past = 0
    if cache is not None:
        past = len(cache)
        k, v = cache.append(k, v)  # [nkv, past+T, hd]
    groups = dims.num_heads // dims.num_kv_heads
    # query heads grouped by their KV head: no copy of K/V per group
    q = q.view(dims.num_kv_heads, groups, t, dims.head_dim)  # [nkv, g, T, hd]
    scores = (q @ k.transpose(1, 2)[:, None]) / math.sqrt(dims.head_dim)  # [nkv, g, T, past+T]
    if t > 1:
        causal = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
        scores = scores.masked_fill(~causal, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    out = probs @ v[:, None]  # [nkv, g, T, hd]
    out = out.reshape(dims.num_heads, t, dims.head_dim).transpose(0, 1)  # [T, nh, hd]
    return F.linear(out.reshape(t, dims.num_heads * dims.head_dim), w[p + "o_proj.weight"])


def mlp(x: torch.Tensor, w: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """SwiGLU: down(silu(gate(x)) * up(x))."""
    gate = F.linear(x, w["mlp.gate_proj.weight"])  # [T, I]
    up = F.linear(x, w["mlp.up_proj.weight"])  # [T, I]
    return F.linear(F.silu(gate) * up, w["mlp.down_proj.weight"])


class DraftCache(Protocol):
    """A draft head's KV cache, as eval drives it."""

    def __len__(self) -> int: ...
    def crop(self, length: int) -> None: ...
    def save(self) -> Any: ...
    def restore(self, saved: Any, dirty: slice) -> None: ...


class DraftHead(Protocol):
    """What eval needs of any family's draft head (:func:`reference_head`)."""

    embed: torch.Tensor  # [V, H]
    lm_head: torch.Tensor  # [V, H]

    def new_cache(self) -> DraftCache: ...
    def trunk(
        self,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: Any = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class MiMoMTPReference:
    """One MiMo MTP layer plus the target's shared embedding and ``lm_head``."""

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        embed: torch.Tensor,
        lm_head: torch.Tensor,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Args:
        weights: the 16 MTP tensors, named ``model.mtp_layers.0.*`` (prefix optional).
        embed, lm_head: the target's [V, H] tensors (the draft ships neither).
        dtype: compute dtype; default: the dtype of ``input_proj.weight``.
        """
        w = {k.removeprefix(PREFIX): v for k, v in weights.items()}
        dtype = dtype or w["input_proj.weight"].dtype
        self.w = {k: v.to(dtype) for k, v in w.items()}
        self.embed = embed.to(dtype)
        self.lm_head = lm_head.to(dtype)
        self.dims = MTPDims.from_config(config)
        self.dtype = dtype

    def new_cache(self) -> KVCache:
        return KVCache()

    @torch.no_grad()
    def forward(
        self,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One MTP step, teacher-forced over T positions.

        Args:
            hidden: [T, H] previous hidden (target final-normed, or the last step's out).
            next_ids: [T] int64, token t+1 for each position t.
            positions: [T] int64 positions t (after the cached ones, with ``cache``).
            cache: the draft's KV cache, extended in place; ``None`` runs stand-alone.

        Returns:
            (logits [T, V] float32, out [T, H]) where out is the final-normed hidden.
        """
        out = self.trunk(hidden, next_ids, positions, cache)
        return F.linear(out, self.lm_head).float(), out

    __call__ = forward

    @torch.no_grad()
    def trunk(
        self,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """:meth:`forward` without the head: the final-normed output [T, H].

        A decoder scores only the rows it needs (the last position, the hot vocabulary).
        """
        w, eps = self.w, self.dims.rms_norm_eps
        e = self.embed[next_ids]  # [T, H]
        e = e.masked_fill((positions == 0)[:, None], 0.0)
        x = torch.cat(
            (
                rms_norm(hidden.to(self.dtype), w["hidden_layernorm.weight"], eps),
                rms_norm(e, w["token_layernorm.weight"], eps),
            ),
            dim=-1,
        )  # [T, 2H], order [hidden, embed]
        x = F.linear(x, w["input_proj.weight"])  # [T, H]
        x = x + attention(
            rms_norm(x, w["input_layernorm.weight"], eps), w, self.dims, positions, cache
        )
        x = x + mlp(rms_norm(x, w["post_attention_layernorm.weight"], eps), w)
        return rms_norm(x, w["final_layernorm.weight"], eps)  # [T, H]


def load_artifact_weights(artifact: Path) -> dict[str, torch.Tensor]:
    """All tensors of an exported draft directory (every ``*.safetensors`` file)."""
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for f in sorted(artifact.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    return weights


def reference_head(
    family: str,
    weights: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    embed: torch.Tensor,
    lm_head: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> DraftHead:
    """``family``'s draft head for eval: :class:`MiMoMTPReference` for MiMo, else the
    family's :class:`~..heads.module.FamilyHead` (both: ``trunk``, ``new_cache``,
    ``lm_head``)."""
    if family == "mimo":
        return MiMoMTPReference(weights, config, embed, lm_head, dtype)
    from ..heads.module import FamilyHead

    return FamilyHead.of(family, weights, config, embed, lm_head, dtype).eval()


def artifact_head(
    model: Any, artifact: Path, dtype: torch.dtype | None = None, family: str = "mimo"
) -> DraftHead:
    """The exported ``family`` draft in ``artifact`` on a loaded target ``model``
    (transformers): its embedding and ``lm_head`` shared, as SGLang shares them. Either
    layout of a NextN draft (``export --for vllm`` keeps the release's numbering)."""
    from ..checkpoints.readers import READERS
    from ..maps.eos import read_json

    device = next(model.parameters()).device
    config = read_json(artifact / "config.json")
    reader = READERS[family].draft_layout(config)
    weights, config = reader.default_layout(load_artifact_weights(artifact), config)
    return reference_head(
        family,
        {k: v.to(device) for k, v in weights.items()},
        config,
        model.get_input_embeddings().weight.detach(),  # [V, H]
        model.get_output_embeddings().weight.detach(),  # [V, H]
        dtype,
    )
