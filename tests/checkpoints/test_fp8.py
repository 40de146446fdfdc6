"""Block-FP8 dequantization against DeepSeek's own ``weight_dequant``, re-implemented here.

``_kernel_reference`` transcribes the Triton kernel of ``inference/kernel.py`` in
github.com/deepseek-ai/DeepSeek-V3 program by program: a (pid_m, pid_n) grid of
BLOCK x BLOCK tiles masked at the edges, the scale read at ``s_ptr + pid_m * n + pid_n``
with ``n = cdiv(N, BLOCK)`` (the flat index fixes the orientation: a transposed scale
grid reads other blocks' scales), ``x`` in float32 times the scale, stored in the output
dtype (``fp8_cast_bf16.py`` sets bf16 as the default dtype). The exporter's streaming
version must match it bit for bit, for shapes that are not whole blocks too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import torch

from fastmtp_export.checkpoints.fp8 import block_fp8, dequantized_chunks, scale_shape
from fastmtp_export.checkpoints.safetensors_io import DTYPE_CODES, TensorInfo, tensor_bytes
from fastmtp_export.checkpoints.synthetic import block_quantize

_CODES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def _kernel_reference(
    x: torch.Tensor, s: torch.Tensor, block: tuple[int, int], out: torch.dtype
) -> torch.Tensor:
    m, n_cols = x.shape
    bm, bn = block
    n = -(-n_cols // bn)  # tl.cdiv(N, BLOCK_SIZE)
    flat = s.reshape(-1)  # s_ptr: the scale grid, row-major
    y = torch.empty(m, n_cols, dtype=out)
    for pid_m, pid_n in itertools.product(range(-(-m // bm)), range(n)):
        rows = slice(pid_m * bm, min((pid_m + 1) * bm, m))  # the mask
        cols = slice(pid_n * bn, min((pid_n + 1) * bn, n_cols))
        y[rows, cols] = (x[rows, cols].to(torch.float32) * flat[pid_m * n + pid_n]).to(out)
    return y


def _fp8(shape: tuple[int, int], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 100).to(torch.float8_e4m3fn)


def _scales(grid: tuple[int, int], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.rand(grid, generator=gen) * 1e-3 + 1e-5  # a distinct scale per block


def _chunked(data: bytes, size: int) -> Iterator[memoryview]:
    for i in range(0, len(data), size):
        yield memoryview(data[i : i + size])


def _ours(
    x: torch.Tensor,
    s: torch.Tensor,
    block: tuple[int, int],
    out: torch.dtype,
    chunk: int = 1 << 20,
) -> torch.Tensor:
    w = TensorInfo("w", "F8_E4M3", tuple(x.shape), 0, x.numel())
    sc = TensorInfo("w_scale_inv", "F32", tuple(s.shape), 0, s.numel() * 4)
    data = bytes(tensor_bytes(x.contiguous()))
    raw = bytes(tensor_bytes(s.contiguous()))
    got = b"".join(
        bytes(c) for c in dequantized_chunks(w, _chunked(data, chunk), sc, raw, block, _CODES[out])
    )
    return torch.frombuffer(bytearray(got), dtype=out).view(x.shape)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


SHAPES = [(200, 130), (256, 256), (128, 128), (300, 129), (1, 1), (127, 385), (64, 384)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("out", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_dequantization_is_deepseeks_weight_dequant(
    shape: tuple[int, int], out: torch.dtype
) -> None:
    block = (128, 128)
    x, s = _fp8(shape, 0), _scales(scale_shape(shape, block), 0)
    assert _same_bits(_ours(x, s, block, out), _kernel_reference(x, s, block, out))


@pytest.mark.parametrize("chunk", [1, 7, 130, 1000, 1 << 20])
def test_any_chunking_of_the_source_bytes_gives_the_same_tensor(chunk: int) -> None:
    """Shard readers yield chunks of any size; a row block may straddle several."""
    shape, block = (300, 129), (128, 128)
    x, s = _fp8(shape, 1), _scales(scale_shape(shape, block), 1)
    ref = _kernel_reference(x, s, block, torch.bfloat16)
    assert _same_bits(_ours(x, s, block, torch.bfloat16, chunk), ref)


def test_a_non_square_block_keeps_rows_and_columns_apart() -> None:
    """weight_block_size is [rows, cols]; swapping them reads the wrong scales."""
    shape, block = (200, 130), (64, 32)
    x, s = _fp8(shape, 2), _scales(scale_shape(shape, block), 2)
    assert s.shape == (4, 5)
    assert _same_bits(
        _ours(x, s, block, torch.bfloat16), _kernel_reference(x, s, block, torch.bfloat16)
    )


def test_a_transposed_scale_grid_fails_the_comparison() -> None:
    """The check has teeth: dequantizing with the scale grid transposed (a square grid,
    so every shape check passes) gives another tensor, for 200x130 ([2, 2] blocks)
    and 256x256 alike."""
    for shape in ((200, 130), (256, 256)):
        block = (128, 128)
        x, s = _fp8(shape, 3), _scales(scale_shape(shape, block), 3)
        assert s.shape == (2, 2)
        ref = _kernel_reference(x, s, block, torch.bfloat16)
        assert not _same_bits(_ours(x, s.T.contiguous(), block, torch.bfloat16), ref)
        assert _same_bits(_ours(x, s, block, torch.bfloat16), ref)


def test_a_row_block_at_a_time() -> None:
    """Peak memory is one row block of the output: a weight is never held whole."""
    shape, block = (1000, 300), (128, 128)
    x, s = _fp8(shape, 4), _scales(scale_shape(shape, block), 4)
    w = TensorInfo("w", "F8_E4M3", shape, 0, x.numel())
    sc = TensorInfo("w_scale_inv", "F32", tuple(s.shape), 0, s.numel() * 4)
    sizes = [
        len(c)
        for c in dequantized_chunks(
            w, _chunked(bytes(tensor_bytes(x)), 1 << 20), sc, bytes(tensor_bytes(s)), block, "BF16"
        )
    ]
    assert sizes == [128 * 300 * 2] * 7 + [(1000 - 7 * 128) * 300 * 2]


def test_short_or_long_data_is_refused() -> None:
    shape, block = (200, 130), (128, 128)
    x, s = _fp8(shape, 5), _scales(scale_shape(shape, block), 5)
    w = TensorInfo("w", "F8_E4M3", shape, 0, x.numel())
    sc = TensorInfo("w_scale_inv", "F32", (2, 2), 0, 16)
    raw, data = bytes(tensor_bytes(s)), bytes(tensor_bytes(x))
    with pytest.raises(ValueError, match="ended after 1 of 2 row blocks"):
        list(dequantized_chunks(w, _chunked(data[:-1], 4096), sc, raw, block, "BF16"))
    with pytest.raises(ValueError, match="more fp8 data"):
        list(dequantized_chunks(w, _chunked(data + b"\0", 4096), sc, raw, block, "BF16"))


@pytest.mark.parametrize(
    ("shape", "grid"),
    [
        ((200, 130), (2, 2)),
        ((128, 128), (1, 1)),
        ((129, 1), (2, 1)),
        # DeepSeek-V3's release (its safetensors headers): kv_a_proj_with_mqa, o_proj,
        # q_b_proj, kv_b_proj, down_proj of a dense layer
        ((576, 7168), (5, 56)),
        ((7168, 16384), (56, 128)),
        ((24576, 1536), (192, 12)),
        ((32768, 512), (256, 4)),
        ((7168, 18432), (56, 144)),
    ],
)
def test_scale_shapes_are_ceil_rows_by_ceil_cols(
    shape: tuple[int, int], grid: tuple[int, int]
) -> None:
    assert scale_shape(shape, (128, 128)) == grid


def test_block_quantization_of_the_test_sources_inverts() -> None:
    """The synthetic releases' quantizer (DeepSeek's weight_quant: scale = amax / 448):
    every block's largest fp8 magnitude is e4m3's 448, and dequantizing gives the
    weight back within e4m3's precision: 3 mantissa bits (2**-4 relative), and steps
    of 2**-9 times the scale among the subnormals."""
    w = torch.randn(200, 130, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    q, s = block_quantize(w, (128, 128))
    assert (q.dtype, s.dtype, tuple(s.shape)) == (torch.float8_e4m3fn, torch.float32, (2, 2))
    for i, j in itertools.product(range(2), range(2)):
        tile = q[i * 128 : (i + 1) * 128, j * 128 : (j + 1) * 128].float()
        assert tile.abs().max() == 448
    back = _kernel_reference(q, s, (128, 128), torch.float32)
    assert torch.all((back - w.float()).abs() <= 2**-4 * w.float().abs() + 2**-10 * s.max())


@pytest.mark.parametrize(
    ("config", "found"),
    [
        ({}, None),
        ({"quantization_config": {"quant_method": "awq", "bits": 4}}, None),
        ({"quantization_config": {"quant_method": "fp8"}}, None),  # per-tensor: no blocks
        ({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128]}}, None),
        (
            {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 64]}},
            ((128, 64), "quantization_config"),
        ),
        (
            {
                "text_config": {
                    "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}
                }
            },
            ((128, 128), "text_config.quantization_config"),
        ),
    ],
)
def test_block_fp8_configs(config: dict, found: tuple | None) -> None:
    scheme = block_fp8(config)
    assert (scheme.block, scheme.key) == found if scheme is not None else found is None


def test_every_output_dtype_has_a_code() -> None:
    assert set(_CODES.values()) == set(DTYPE_CODES.values())
