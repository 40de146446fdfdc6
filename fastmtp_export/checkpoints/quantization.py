"""How an MTP head is quantized, judged by its tensors rather than by ``config.json`` alone.

Three cases export:

- a plain head (bf16/fp16/fp32 tensors);
- a plain head under a stale ``quantization_config`` (a bf16 copy made with DeepSeek's
  ``fp8_cast_bf16.py`` keeps the release config): the key is named in a warning and the
  draft config leaves it out;
- a block-FP8 head, DeepSeek-V3's release format (:mod:`.fp8`): fp8 weights, each with
  its ``NAME_scale_inv`` of the shape the config's ``weight_block_size`` implies. The
  draft writer dequantizes it (``--dtype bf16/fp16/fp32``) or copies it with its scales
  (``--dtype keep``).

Anything else quantized (int4 AWQ/GPTQ ``qweight``/``scales``, per-tensor or per-channel
FP8 ``weight_scale``, fp8 without its scale) is refused in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SourceError
from .checkpoint import SourceCheckpoint
from .fp8 import FP8_CODE, SCALE_CODES, SCALE_SUFFIX, BlockFP8, block_fp8, scale_name, scale_shape
from .safetensors_io import TensorInfo

log = logging.getLogger(__name__)

#: safetensors dtype codes of an unquantized head: export copies or converts these
PLAIN_DTYPES = frozenset({"BF16", "F16", "F32", "F64"})
#: name endings of the other quantized layouts' extra tensors (per-tensor FP8 scales,
#: packed GPTQ/AWQ weights); ``weight_scale_inv`` is block FP8's and handled
OTHER_QUANT_SUFFIXES = (
    "weight_scale", "input_scale", ".qweight", ".qzeros", ".scales", ".g_idx",
)  # fmt: skip
_PLAIN_FIX = "pass the unquantized (bf16) release or dequantize it first"


@dataclass(frozen=True)
class QuantizedHead:
    """A block-FP8 head: its format, and each fp8 weight's scale in the source."""

    scheme: BlockFP8
    #: draft weight name -> its ``NAME_scale_inv`` in the source
    scales: Mapping[str, TensorInfo]


def quantization_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """``quantization_config`` entries of ``config`` (top level, or a VL ``text_config``)."""
    found: dict[str, Any] = {}
    if "quantization_config" in config:
        found["quantization_config"] = config["quantization_config"]
    text = config.get("text_config")
    if isinstance(text, Mapping) and "quantization_config" in text:
        found["text_config.quantization_config"] = text["quantization_config"]
    return found


def judge_quantization(
    ckpt: SourceCheckpoint, infos: Mapping[str, TensorInfo]
) -> tuple[dict[str, TensorInfo], QuantizedHead | None, tuple[str, ...]]:
    """Split a head (draft name -> source tensor) into its weights and block-FP8 scales.

    Returns:
        the head without its scales; the block-FP8 layout (``None`` for a plain head);
        the stale config keys a plain head's draft config leaves out.

    Raises:
        SourceError: a quantized layout other than block FP8, an fp8 weight without its
            scale (or a scale without its fp8 weight), a scale of the wrong shape or
            dtype, or block FP8 with no ``weight_block_size`` to read it by.
    """
    keys = quantization_keys(ckpt.config)
    first = next(iter(keys.values()), None)
    method = first.get("quant_method", "?") if isinstance(first, Mapping) else "?"
    how = f"quantization_config.quant_method={method}; " if keys else ""
    scales = {n: i for n, i in infos.items() if n.endswith(SCALE_SUFFIX)}
    weights = {n: i for n, i in infos.items() if n not in scales}
    other = sorted(n for n in weights if n.endswith(OTHER_QUANT_SUFFIXES))
    codes = sorted({i.dtype for i in weights.values()} - PLAIN_DTYPES)
    if other or set(codes) - {FP8_CODE}:
        why = f"MTP tensors in {', '.join(codes)}"
        if other:
            why = f"quantization tensor {infos[other[0]].name}"
        raise SourceError(
            f"source {ckpt.path} is quantized ({how}{why}); export reads bf16/fp16/fp32 heads "
            f"and block-FP8 ones (DeepSeek-V3's *_scale_inv layout): {_PLAIN_FIX}"
        )
    fp8 = {n: i for n, i in weights.items() if i.dtype == FP8_CODE}
    if not fp8 and not scales:
        if keys:
            plain = ", ".join(sorted({i.dtype for i in weights.values()}))
            log.warning(
                "%s in %s/config.json says quant_method=%s, but the MTP tensors are %s: a "
                "stale key (a dequantized copy keeps the release config); exporting the head "
                "as it is, and the draft config leaves the key out",
                " and ".join(keys), ckpt.path, method, plain,
            )  # fmt: skip
        return weights, None, tuple(keys)
    scheme = block_fp8(ckpt.config)
    if scheme is None:
        has = f"{how}no weight_block_size" if keys else "no quantization_config"
        raise SourceError(
            f"source {ckpt.path} is FP8 (MTP tensors in {FP8_CODE} with *{SCALE_SUFFIX}) but "
            f"its config.json has {has}, so the scales' block size is unknown; restore the "
            'release config.json (quant_method "fp8", weight_block_size [128, 128])'
        )
    for name, info in sorted(fp8.items()):
        _check_scale(ckpt, info, scales.get(scale_name(name)), scheme.block)
    for name, info in sorted(scales.items()):
        if name[: -len(SCALE_SUFFIX)] not in fp8:
            raise SourceError(
                f"{info.name} in {ckpt.weight_map.get(info.name, '?')} scales no "
                f"{FP8_CODE} weight {info.name[: -len(SCALE_SUFFIX)]}; the checkpoint mixes "
                "files of different releases: re-download it"
            )
    return weights, QuantizedHead(scheme, {n: scales[scale_name(n)] for n in sorted(fp8)}), ()


def _check_scale(
    ckpt: SourceCheckpoint,
    weight: TensorInfo,
    scale: TensorInfo | None,
    block: tuple[int, int],
) -> None:
    where = ckpt.weight_map.get(weight.name, "?")
    if scale is None:
        raise SourceError(
            f"{weight.name} in {where} is {FP8_CODE} but the checkpoint has no "
            f"{scale_name(weight.name)}; without it the weight cannot be read: re-download "
            "the release's shards and index"
        )
    if len(weight.shape) != 2:
        raise SourceError(
            f"{weight.name} is {FP8_CODE}{list(weight.shape)}: block FP8 scales 2-D weights "
            f"only; {_PLAIN_FIX}"
        )
    want = scale_shape(weight.shape, block)
    if scale.shape != want or scale.dtype not in SCALE_CODES:
        bn, bk = block
        raise SourceError(
            f"{scale.name} is {scale.dtype}{list(scale.shape)} but {weight.name} "
            f"{list(weight.shape)} in {bn}x{bk} blocks needs F32{list(want)}; the scale and "
            "the weight are from different checkpoints (or config.json's weight_block_size "
            "is wrong): restore the release's files"
        )
