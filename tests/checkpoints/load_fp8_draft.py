"""Load block-FP8 drafts with SGLang 0.5.23's own class *and its own Fp8Config*, on CPU.

tests/sglang_lane/load_draft.py builds each draft class with ``quant_config=None``, as
SGLang builds an unquantized draft. A draft that keeps its block-FP8 head carries the
release's ``quantization_config``, and SGLang's loader then builds the class with the
quantization config it derives from it (``_get_quantization_config`` in
``sglang/srt/model_loader/loader.py``): fp8 ``weight`` and float32 ``weight_scale_inv``
parameters for the layers it quantizes. This script runs load_draft.py's probe (its
functions, imported) with that config (``load_draft(..., quant_config=...)``), and adds:

- ``quant_config``: the class of SGLang's quantization config;
- ``fp8_params``: SGLang's fp8 and scale parameters, name -> [shape, dtype];
- ``after_loading``: what the loader's next step, each layer's
  ``process_weights_after_loading``, does on this machine ("ok", or the distinct
  errors with the layers that raised them);
- with ``FP8DIR=BF16DIR``: ``dequant_mismatches``, the fp8 tensors whose dequantization
  by SGLang's ``block_quant_dequant`` (``layers/quantization/fp8_utils.py``) to bf16
  differs in any bit from the same tensor in ``BF16DIR`` (the ``--dtype bf16`` export of
  the same source), and ``dequant_checked``, how many were compared.

Run in the lane environment (``server.lane_env()``): ``load_fp8_draft.py FP8DIR[=BF16DIR]...``;
one JSON object per argument.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from tests.sglang_lane import load_draft as probe


def _quant_config(draft: str) -> Any:
    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.model_loader.loader import _get_quantization_config

    return _get_quantization_config(ModelConfig(draft, is_draft_model=True), LoadConfig())


def _after_loading(draft: str, quant: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A model built and loaded as SGLang's loader does it, then its post-load step per
    layer; and the fp8 and scale parameters the model was built with."""
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.model_loader.utils import get_model_architecture

    config = ModelConfig(draft, is_draft_model=True)
    cls, _ = get_model_architecture(config)
    model = cls(config=config.hf_config, quant_config=quant)
    fp8_params = {
        n: [list(p.shape), str(p.dtype).removeprefix("torch.")]
        for n, p in model.named_parameters()
        if p.dtype == torch.float8_e4m3fn or n.endswith("weight_scale_inv")
    }
    model.load_weights(list(probe.draft_weights(draft).items()))
    errors: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        method = getattr(module, "quant_method", None)
        if method is None or not hasattr(method, "process_weights_after_loading"):
            continue
        try:
            method.process_weights_after_loading(module)
        except Exception as exc:
            errors.setdefault(f"{type(exc).__name__}: {exc}", []).append(name)
    return ({"ok": True} if not errors else {"errors": errors}), fp8_params


def _dequant_mismatches(draft: str, bf16: str, block: list[int]) -> tuple[list[str], int]:
    from sglang.srt.layers.quantization.fp8_utils import block_quant_dequant

    fp8, plain = probe.draft_weights(draft), probe.draft_weights(bf16)
    names = sorted(n for n, t in fp8.items() if t.dtype == torch.float8_e4m3fn)
    bad = []
    for n in names:
        ours = plain[n]
        theirs = block_quant_dequant(fp8[n], fp8[n + "_scale_inv"], block, torch.bfloat16)
        same = ours.dtype == torch.bfloat16 and torch.equal(
            ours.view(torch.int16), theirs.view(torch.int16)
        )
        if not same:
            bad.append(n)
    return bad, len(names)


def load(arg: str) -> dict[str, Any]:
    draft, _, bf16 = arg.partition("=")
    quant = _quant_config(draft)
    doc = probe.load_draft(draft, quant_config=quant)
    doc["quant_config"] = type(quant).__name__ if quant is not None else None
    doc["after_loading"], doc["fp8_params"] = _after_loading(draft, quant)
    if bf16:
        block = list(getattr(quant, "weight_block_size", None) or [128, 128])
        doc["dequant_mismatches"], doc["dequant_checked"] = _dequant_mismatches(draft, bf16, block)
    return doc


def main(argv: list[str]) -> int:
    return probe.run(argv, load)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
