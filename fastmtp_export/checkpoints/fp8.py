"""Block FP8, DeepSeek-V3's weight format: reading its config and dequantizing it.

The DeepSeek-V3/R1 release stores each linear weight ``NAME`` [rows, cols] as
``float8_e4m3fn`` with an inverse scale ``NAME_scale_inv``: float32, one value per
``weight_block_size`` block (128 x 128), shape [ceil(rows / 128), ceil(cols / 128)];
``config.json`` says so in ``quantization_config`` (``quant_method: fp8``,
``weight_block_size``). The weight is ``w[i, j] * scale_inv[i // 128, j // 128]``.

:func:`dequantized_chunks` is DeepSeek's own ``weight_dequant``
(``inference/kernel.py`` in github.com/deepseek-ai/DeepSeek-V3; ``fp8_cast_bf16.py``
calls it under ``torch.set_default_dtype(torch.bfloat16)``): per block, the fp8 values
in float32 times the block's scale, in float32, stored in the output dtype. The Triton
kernel becomes row blocks here: the ``block_rows`` rows sharing a row of scales are
read, multiplied by that row of scales repeated ``block_cols`` times (the last block
cropped to the weight), cast and yielded. A weight is never held whole, in any dtype:
peak memory is one row block (``block_rows`` x ``cols``), whatever the layer's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .safetensors_io import CODE_NAMES, TensorInfo

if TYPE_CHECKING:
    import torch

#: the safetensors code of DeepSeek's weights (``torch.float8_e4m3fn``)
FP8_CODE = "F8_E4M3"
#: ``NAME`` + this is the inverse scale of the block-quantized weight ``NAME``
SCALE_SUFFIX = "_scale_inv"
#: safetensors codes a scale may have (DeepSeek's are F32; all are read as float32)
SCALE_CODES = frozenset({"F32", "BF16", "F16"})


@dataclass(frozen=True)
class BlockFP8:
    """A ``quantization_config`` of DeepSeek's block FP8 format."""

    #: (rows, cols) of one block: ``weight_block_size``
    block: tuple[int, int]
    #: where the config holds it: ``quantization_config`` or ``text_config.quantization_config``
    key: str
    #: the ``quantization_config`` itself (kept in a draft that keeps the FP8 weights)
    config: Mapping[str, Any]

    @property
    def dynamic(self) -> bool:
        """Activations are quantized at run time (``activation_scheme: dynamic``, the
        default), the only scheme SGLang's block-FP8 layers take."""
        return self.config.get("activation_scheme", "dynamic") == "dynamic"


def block_fp8(config: Mapping[str, Any]) -> BlockFP8 | None:
    """The block-FP8 ``quantization_config`` of ``config`` (top level, or a VL model's
    ``text_config``), or ``None`` when it has none or another method or layout."""
    text = config.get("text_config")
    for key, holder in (
        ("quantization_config", config),
        ("text_config.quantization_config", text if isinstance(text, Mapping) else {}),
    ):
        quant = holder.get("quantization_config")
        if not isinstance(quant, Mapping) or quant.get("quant_method") != "fp8":
            continue
        block = quant.get("weight_block_size")
        if (
            isinstance(block, list)
            and len(block) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
        ):
            return BlockFP8((block[0], block[1]), key, quant)
    return None


def scale_name(weight: str) -> str:
    """The name of ``weight``'s inverse scale (``...weight_scale_inv``)."""
    return weight + SCALE_SUFFIX


def scale_shape(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int]:
    """The scale grid of a [rows, cols] weight: [ceil(rows / bn), ceil(cols / bk)]."""
    rows, cols = shape
    return (-(-rows // block[0]), -(-cols // block[1]))


def scale_shapes(
    weights: Mapping[str, tuple[int, ...]], block: tuple[int, int]
) -> dict[str, tuple[int, ...]]:
    """``NAME_scale_inv`` -> its shape, for each quantized weight ``NAME`` -> shape."""
    return {scale_name(n): scale_shape(s, block) for n, s in weights.items()}


def _scale_rows(raw: bytes, info: TensorInfo) -> torch.Tensor:
    import torch

    s = torch.frombuffer(bytearray(raw), dtype=getattr(torch, CODE_NAMES[info.dtype]))
    return s.view(info.shape).float()  # [ceil(rows / bn), ceil(cols / bk)]


def dequantized_chunks(
    weight: TensorInfo,
    data: Iterable[memoryview],
    scale: TensorInfo,
    scale_bytes: bytes,
    block: tuple[int, int],
    code: str,
) -> Iterator[memoryview]:
    """The bytes of ``weight`` dequantized to ``code`` (``BF16``/``F16``/``F32``), one row
    block at a time.

    Args:
        weight: the fp8 weight [rows, cols] (its header entry).
        data: its bytes, in any chunking (a shard reader's ``chunks``); each chunk is
            consumed before the next is asked for.
        scale, scale_bytes: the ``NAME_scale_inv`` header entry and its bytes.
        block: ``weight_block_size`` (rows, cols).
    """
    import torch

    from .safetensors_io import tensor_bytes

    rows, cols = weight.shape
    bn, bk = block
    out = getattr(torch, CODE_NAMES[code])
    s = _scale_rows(scale_bytes, scale)
    i = 0  # the row block being gathered
    pending = bytearray()  # its bytes so far (fp8: one byte per element)
    for chunk in data:
        view = memoryview(chunk).cast("B")
        while view:
            n = min(bn, rows - i * bn)
            if n <= 0:
                raise ValueError(f"{weight.name}: more fp8 data than {[rows, cols]} holds")
            take = n * cols - len(pending)
            pending += view[:take]
            view = view[take:]
            if len(pending) < n * cols:
                break  # the rest of this row block is in the next chunk
            x = torch.frombuffer(pending, dtype=torch.float8_e4m3fn).view(n, cols)
            # DeepSeek's weight_dequant: x in float32 times its block's scale, then cast
            y = (x.float() * s[i].repeat_interleave(bk)[:cols]).to(out).contiguous()
            yield tensor_bytes(y)
            del x, y
            pending = bytearray()
            i += 1
    if pending or i * bn < rows:
        raise ValueError(f"{weight.name}: fp8 data ended after {i} of {s.shape[0]} row blocks")
