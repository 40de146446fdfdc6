"""Tensor-name fragments several MTP families share, as contract templates.

Each function returns ``{name template: symbolic shape}`` under a prefix; a family's
contract is the union of its fragments. Symbols are resolved by the family's ``dims``
(see :mod:`..contract`); ``{e}`` expands over the routed experts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..contract import int_field

Templates = dict[str, tuple[str, ...]]

#: the symbols of :func:`mla_attention`.
MLA_LEGEND = (
    "QL = q_lora_rank, QB = heads x (qk_nope_head_dim + qk_rope_head_dim), "
    "KVL = kv_lora_rank, KVA = KVL + qk_rope_head_dim, "
    "KVB = heads x (qk_nope_head_dim + v_head_dim), O = heads x v_head_dim"
)


def nextn_fusion(p: str) -> Templates:
    """DeepSeek-style NextN input fusion: ``eh_proj(cat(enorm(embed), hnorm(hidden)))``."""
    return {
        p + "enorm.weight": ("H",),
        p + "hnorm.weight": ("H",),
        p + "eh_proj.weight": ("H", "2H"),
    }


def gqa_attention(p: str, *, bias: bool = False, qk_norm: bool = False) -> Templates:
    """q/k/v/o projections (Q = heads x head_dim rows; QG doubles it for gated attention)."""
    t: Templates = {
        p + "self_attn.q_proj.weight": ("QG", "H"),
        p + "self_attn.k_proj.weight": ("KV", "H"),
        p + "self_attn.v_proj.weight": ("KV", "H"),
        p + "self_attn.o_proj.weight": ("H", "Q"),
    }
    if bias:
        t |= {
            p + "self_attn.q_proj.bias": ("QG",),
            p + "self_attn.k_proj.bias": ("KV",),
            p + "self_attn.v_proj.bias": ("KV",),
        }
    if qk_norm:
        t |= {p + "self_attn.q_norm.weight": ("D",), p + "self_attn.k_norm.weight": ("D",)}
    return t


def mla_attention(p: str) -> Templates:
    """DeepSeek multi-head latent attention with a low-rank query (q_lora_rank set)."""
    return {
        p + "self_attn.q_a_proj.weight": ("QL", "H"),
        p + "self_attn.q_a_layernorm.weight": ("QL",),
        p + "self_attn.q_b_proj.weight": ("QB", "QL"),
        p + "self_attn.kv_a_proj_with_mqa.weight": ("KVA", "H"),
        p + "self_attn.kv_a_layernorm.weight": ("KVL",),
        p + "self_attn.kv_b_proj.weight": ("KVB", "KVL"),
        p + "self_attn.o_proj.weight": ("H", "O"),
    }


def mla_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """The symbols of :func:`mla_attention` from a DeepSeek-style config."""
    heads = int_field(config, "num_attention_heads")
    nope = int_field(config, "qk_nope_head_dim")
    rope = int_field(config, "qk_rope_head_dim")
    v = int_field(config, "v_head_dim")
    kv_rank = int_field(config, "kv_lora_rank")
    return {
        "QL": int_field(config, "q_lora_rank"),
        "QB": heads * (nope + rope),
        "KVA": kv_rank + rope,
        "KVL": kv_rank,
        "KVB": heads * (nope + v),
        "O": heads * v,
    }


def layer_norms(p: str) -> Templates:
    return {p + "input_layernorm.weight": ("H",), p + "post_attention_layernorm.weight": ("H",)}


def dense_mlp(p: str) -> Templates:
    return {
        p + "gate_proj.weight": ("I", "H"),
        p + "up_proj.weight": ("I", "H"),
        p + "down_proj.weight": ("H", "I"),
    }


def per_expert_moe(p: str, shared: str, *, correction_bias: bool = False) -> Templates:
    """Router, one gate/up/down triple per routed expert, and the shared expert(s)
    under ``shared`` (``shared_experts.`` in DeepSeek/GLM, ``shared_expert.`` in Qwen)."""
    t: Templates = {
        p + "gate.weight": ("E", "H"),
        p + "experts.{e}.gate_proj.weight": ("MI", "H"),
        p + "experts.{e}.up_proj.weight": ("MI", "H"),
        p + "experts.{e}.down_proj.weight": ("H", "MI"),
        p + shared + "gate_proj.weight": ("SI", "H"),
        p + shared + "up_proj.weight": ("SI", "H"),
        p + shared + "down_proj.weight": ("H", "SI"),
    }
    if correction_bias:
        t[p + "gate.e_score_correction_bias"] = ("E",)
    return t
