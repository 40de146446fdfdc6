"""Deterministic synthetic MiMo checkpoints: the demo default, test fixtures, benchmarks.

Nothing can be downloaded here, so every run that needs "a MiMo checkpoint" builds one:
the real tensor names and layout (sharded safetensors + index, ``model.mtp_layers.*``)
with random values. Each tensor's values depend only on ``(seed, name)``, so a file is
byte-identical across runs and machines, whatever the shard split.

``write_synthetic(..., fp8_block=(128, 128))`` writes a family's head as a block-FP8
release, DeepSeek-V3's format: the same values, quantized per block by
:func:`block_quantize` (DeepSeek's ``weight_quant``, independent of the exporter's
dequantization in :mod:`.fp8`).
"""

from __future__ import annotations

import functools
import json
import math
import re
import zlib
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .safetensors_io import DTYPE_CODES, TensorSpec, tensor_bytes, write_safetensors

if TYPE_CHECKING:
    import torch

    from .contract import DraftContract

#: MiMo-7B-RL's shapes (reference: fastmtp-method.md §4.1).
MIMO_7B: dict[str, int] = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 151680,
}

#: test fixtures and the demo's model: small enough that a round trip takes milliseconds.
TINY: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
}

_ROWS_PER_CHUNK_BYTES = 32 << 20


def mimo_config(
    dims: dict[str, int], *, num_mtp_layers: int = 1, training_keys: bool = False
) -> dict[str, Any]:
    """A MiMo-style ``config.json`` (``model_type: mimo``, remote code) for ``dims``.

    ``training_keys`` adds the keys FastMTP's training config carries, which the
    exporter must strip.
    """
    cfg: dict[str, Any] = {
        "architectures": ["MiMoForCausalLM"],
        "model_type": "mimo",
        "auto_map": {
            "AutoConfig": "configuration_mimo.MiMoConfig",
            "AutoModel": "modeling_mimo.MiMoModel",
            "AutoModelForCausalLM": "modeling_mimo.MiMoForCausalLM",
        },
        "attention_bias": True,
        "attention_dropout": 0.0,
        # MiMo's <|endoftext|> / <|im_end|>, kept inside small test vocabularies
        "bos_token_id": min(151643, dims["vocab_size"] - 2),
        "eos_token_id": min(151645, dims["vocab_size"] - 1),
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_position_embeddings": 32768,
        "max_window_layers": dims["num_hidden_layers"],
        "num_nextn_predict_layers": num_mtp_layers,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 640000,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        **dims,
    }
    if training_keys:
        cfg.update(
            num_speculative_steps=3,
            mtp_loss_step_weights=[0.51, 0.31, 0.18],
            ntp_loss_weight=0.0,
            mtp_loss_weight=1.0,
            tokenizer_class=["Qwen2Tokenizer"],
        )
    return cfg


def _decoder_shapes(prefix: str, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    head_dim = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * head_dim, cfg["num_key_value_heads"] * head_dim
    return {
        prefix + "input_layernorm.weight": (h,),
        prefix + "self_attn.q_proj.weight": (q, h),
        prefix + "self_attn.q_proj.bias": (q,),
        prefix + "self_attn.k_proj.weight": (kv, h),
        prefix + "self_attn.k_proj.bias": (kv,),
        prefix + "self_attn.v_proj.weight": (kv, h),
        prefix + "self_attn.v_proj.bias": (kv,),
        prefix + "self_attn.o_proj.weight": (h, q),
        prefix + "post_attention_layernorm.weight": (h,),
        prefix + "mlp.gate_proj.weight": (i, h),
        prefix + "mlp.up_proj.weight": (i, h),
        prefix + "mlp.down_proj.weight": (h, i),
    }


def mimo_tensor_shapes(
    cfg: dict[str, Any], *, include_trunk: bool = True
) -> dict[str, tuple[int, ...]]:
    """Every tensor name -> shape of a MiMo checkpoint, in file order."""
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    if include_trunk:
        for layer in range(cfg["num_hidden_layers"]):
            shapes.update(_decoder_shapes(f"model.layers.{layer}.", cfg))
        shapes["model.norm.weight"] = (h,)
    for m in range(cfg.get("num_nextn_predict_layers", 1)):
        p = f"model.mtp_layers.{m}."
        shapes[p + "token_layernorm.weight"] = (h,)
        shapes[p + "hidden_layernorm.weight"] = (h,)
        shapes[p + "input_proj.weight"] = (h, 2 * h)
        shapes.update(_decoder_shapes(p, cfg))
        shapes[p + "final_layernorm.weight"] = (h,)
    shapes["lm_head.weight"] = (v, h)
    return shapes


def _values(name: str, shape: tuple[int, ...], seed: int, dtype: str) -> Iterator[memoryview]:
    """Random values for one tensor, generated in bounded row chunks (deterministic)."""
    import torch

    tdtype = getattr(torch, dtype)
    is_norm = name.endswith("norm.weight")
    is_bias = name.endswith(".bias")
    scale = 0.02 if (is_bias or len(shape) == 1) else 1.0 / math.sqrt(shape[-1])
    row_elems = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    rows = shape[0] if len(shape) > 1 else 1
    step = max(1, _ROWS_PER_CHUNK_BYTES // (row_elems * 4))
    base = zlib.crc32(name.encode()) ^ (seed * 0x9E3779B1)
    for chunk, start in enumerate(range(0, rows, step)):
        n = min(step, rows - start)
        gen = torch.Generator().manual_seed((base + chunk) & 0xFFFF_FFFF_FFFF)
        t = torch.randn(n * row_elems, generator=gen) * scale  # [n*row_elems] float32
        if is_norm:
            t += 1.0
        t = t.to(tdtype)
        yield tensor_bytes(t)


def write_synthetic_mimo(
    path: Path,
    cfg: dict[str, Any],
    *,
    seed: int = 0,
    num_shards: int = 2,
    include_trunk: bool = True,
    dtype: str = "bfloat16",
) -> Path:
    """Write a sharded MiMo checkpoint (``config.json``, shards, index) into ``path``.

    MTP tensors are spread round-robin over the shards so that readers must really
    work shard by shard; the other tensors are split by size.
    """
    shapes = mimo_tensor_shapes(cfg, include_trunk=include_trunk)
    mtp = {n for n in shapes if ".mtp_layers." in n}
    return write_sharded(path, cfg, shapes, mtp, seed=seed, num_shards=num_shards, dtype=dtype)


def family_tensor_shapes(
    family: str,
    cfg: dict[str, Any],
    *,
    num_mtp_layers: int = 1,
    contract: DraftContract | None = None,
) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """A checkpoint of ``family`` in its release layout: every name -> shape, and the MTP names.

    The MTP layers follow the family's reader (its contract, renamed back to the source
    names, plus the per-layer embedding/head copies the family ships); the trunk is
    the embedding, final norm and head only, which is all an exporter may touch.
    ``contract`` picks a variant the config cannot tell (fused MoE experts).
    """
    from .checkpoint import language_config
    from .contract import expected_shapes
    from .readers import READERS

    reader = READERS[family]
    lang = language_config(cfg)
    h, v = int(lang["hidden_size"]), int(lang["vocab_size"])
    shapes: dict[str, tuple[int, ...]] = {
        reader.TRUNK_EMBED: (v, h),
        reader.TRUNK_NORM: (h,),
    }
    mtp: set[str] = set()
    draft = expected_shapes(contract or reader.contract_for(cfg), cfg)
    for layer in range(num_mtp_layers):
        names = {
            src: shape
            for n, shape in draft.items()
            if (src := reader.source_name(n, cfg, layer)) is not None
        }
        names.update({shared: (v, h) for shared in reader.shared_names(cfg, layer)})
        shapes.update(names)
        mtp.update(names)
    shapes["lm_head.weight"] = (v, h)
    return shapes, mtp


#: weights a block-FP8 release keeps unquantized (DeepSeek-V3's; Qwen's FP8 releases list
#: the same in ``modules_to_not_convert``): norms, routers, the MTP input fusion, the
#: embedding and head copies
_FP8_PLAIN = re.compile(
    r"(norm(\.m)?|embed_tokens|shared_head\.head|lm_head|eh_proj|mtp\.fc|mlp\.gate"
    r"|shared_expert_gate)\.weight$"
)


def fp8_release_weights(shapes: dict[str, tuple[int, ...]], mtp: Collection[str]) -> set[str]:
    """The MTP weights a block-FP8 release stores in fp8: every 2-D projection."""
    return {
        n for n in mtp if len(shapes[n]) == 2 and n.endswith(".weight") and not _FP8_PLAIN.search(n)
    }


def block_quantize(w: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` [rows, cols] as block FP8: (float8_e4m3fn weight, float32 inverse scale).

    DeepSeek's ``weight_quant`` (``inference/kernel.py``), block by block: the scale is
    the block's largest magnitude / 448 (e4m3's largest finite value), the fp8 values
    are the block divided by it.
    """
    import torch

    rows, cols = w.shape
    bn, bk = block
    scale = torch.empty(-(-rows // bn), -(-cols // bk), dtype=torch.float32)
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            tile = w[i * bn : (i + 1) * bn, j * bk : (j + 1) * bk].float()
            s = tile.abs().max() / 448.0
            s = s if s > 0 else torch.tensor(1.0)
            scale[i, j] = s
            q[i * bn : (i + 1) * bn, j * bk : (j + 1) * bk] = (tile / s).to(torch.float8_e4m3fn)
    return q, scale


def write_synthetic(
    path: Path,
    family: str,
    cfg: dict[str, Any],
    *,
    num_mtp_layers: int = 1,
    contract: DraftContract | None = None,
    seed: int = 0,
    num_shards: int = 2,
    dtype: str = "bfloat16",
    fp8_block: tuple[int, int] | None = None,
) -> Path:
    """Write a sharded checkpoint of ``family`` in its release layout into ``path``.

    ``fp8_block``: a block-FP8 release with this ``weight_block_size``: the MTP
    projections (:func:`fp8_release_weights`) in fp8, each with its ``NAME_scale_inv``,
    and the ``quantization_config`` DeepSeek-V3's ``config.json`` has.
    """
    shapes, mtp = family_tensor_shapes(
        family, cfg, num_mtp_layers=num_mtp_layers, contract=contract
    )
    fp8: set[str] = set()
    if fp8_block is not None:
        fp8 = fp8_release_weights(shapes, mtp)
        cfg = {
            **cfg,
            "quantization_config": {
                "activation_scheme": "dynamic",
                "fmt": "e4m3",
                "quant_method": "fp8",
                "weight_block_size": list(fp8_block),
            },
        }
    return write_sharded(
        path, cfg, shapes, mtp, seed=seed, num_shards=num_shards, dtype=dtype,
        fp8=fp8, fp8_block=fp8_block or (128, 128),
    )  # fmt: skip


def _fp8_specs(
    name: str, shape: tuple[int, ...], seed: int, dtype: str, block: tuple[int, int]
) -> tuple[TensorSpec, TensorSpec]:
    """The fp8 weight and its ``_scale_inv``: the values :func:`_values` gives ``name``
    in ``dtype``, block-quantized."""
    import torch

    @functools.cache
    def quantized() -> tuple[torch.Tensor, torch.Tensor]:
        raw = bytearray(b"".join(bytes(c) for c in _values(name, shape, seed, dtype)))
        w = torch.frombuffer(raw, dtype=getattr(torch, dtype)).view(shape)
        return block_quantize(w, block)

    def weight() -> Iterator[memoryview]:
        yield tensor_bytes(quantized()[0])

    def scale() -> Iterator[memoryview]:
        yield tensor_bytes(quantized()[1])

    rows, cols = shape
    grid = (-(-rows // block[0]), -(-cols // block[1]))
    return TensorSpec(name, "F8_E4M3", shape, weight), TensorSpec(
        name + "_scale_inv", "F32", grid, scale
    )


def write_sharded(
    path: Path,
    cfg: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    mtp: set[str],
    *,
    seed: int = 0,
    num_shards: int = 2,
    dtype: str = "bfloat16",
    fp8: Collection[str] = (),
    fp8_block: tuple[int, int] = (128, 128),
) -> Path:
    """Write ``shapes`` as a sharded checkpoint (``config.json``, shards, index).

    The ``mtp`` tensors are spread round-robin over the shards so that readers must
    really work shard by shard; the other tensors are split by size. The ``fp8`` ones
    are block-quantized, each followed by its scale (an MTP tensor too).
    """
    path.mkdir(parents=True, exist_ok=True)
    code = DTYPE_CODES[dtype]
    specs: dict[str, TensorSpec] = {}
    mtp = set(mtp)
    for name, shape in shapes.items():
        if name in fp8:
            weight, scale = _fp8_specs(name, shape, seed, dtype, fp8_block)
            specs[name], specs[scale.name] = weight, scale
            mtp.add(scale.name)
        else:
            values = functools.partial(_values, name, shape, seed, dtype)
            specs[name] = TensorSpec(name, code, shape, values)
    groups: list[list[TensorSpec]] = [[] for _ in range(num_shards)]
    others = [s for n, s in specs.items() if n not in mtp]
    per_shard = sum(s.nbytes for s in others) / num_shards
    acc = 0
    for spec in others:
        groups[min(int(acc // per_shard), num_shards - 1)].append(spec)
        acc += spec.nbytes
    for i, spec in enumerate(s for n, s in specs.items() if n in mtp):
        groups[i % num_shards].append(spec)
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        write_safetensors(path / fname, sorted(group, key=lambda s: s.name), {"format": "pt"})
        weight_map.update({s.name: fname for s in group})
    total = sum(s.nbytes for s in specs.values())
    (path / "model.safetensors.index.json").write_text(
        json.dumps(
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
            indent=2,
        )
        + "\n"
    )
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path
