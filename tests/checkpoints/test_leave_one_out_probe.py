"""The leave-one-out probe of tests/sglang_lane/load_draft.py can fail.

It decides which exported tensors SGLang's draft class uses by loading the draft once
without each tensor. Only the loader's own answers to a missing tensor count as "used"
(a parameter left unfilled, or ``Step3p5MTP``'s refusal naming a parameter); any other
exception is the probe's error. Counting every exception as "used" reported every
tensor used, an ignored one included, whenever loading a second model failed for an
unrelated reason (issue 25). Small stand-in classes, no SGLang needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import pytest
import torch

from ..sglang_lane.load_draft import ProbeError, _runner

WEIGHTS = {
    "a": torch.ones(4),  # [4]
    "b": torch.ones(2, 3),  # [2, 3]
    "stray": torch.ones(5),  # [5]: no parameter has this name; the loaders skip it
}


class _Draft(torch.nn.Module):
    """Two parameters; ``load_weights`` skips names it has no parameter for, as SGLang's do."""

    def __init__(self, config: Any, quant_config: Any, **_kw: Any) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(4))  # [4]
        self.b = torch.nn.Parameter(torch.zeros(2, 3))  # [2, 3]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded = set()
        with torch.no_grad():
            for name, w in weights:
                if name in params:
                    params[name].copy_(w)
                    loaded.add(name)
        return loaded


class _Strict(_Draft):
    """Refuses a checkpoint that leaves a parameter unloaded, as ``Step3p5MTP`` does."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loaded = super().load_weights(weights)
        missing = sorted(set(dict(self.named_parameters())) - loaded)
        if missing:
            raise RuntimeError(
                f"Some parameters like {missing[0]} are not in the checkpoint and will "
                "falsely use random initialization"
            )
        return loaded


class _LoadsOnce(_Draft):
    """Loads the first model built, then fails for a reason no tensor has anything to
    do with (state shared across instances, as a kernel cache or a global registry)."""

    loads: ClassVar[int] = 0

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        type(self).loads += 1
        if type(self).loads > 1:
            raise ValueError("the fused-weight cache is already initialised")
        return super().load_weights(weights)


class _RefusesWithAStrangerName(_Draft):
    """Says a parameter is missing, but names one the model does not have."""

    loads: ClassVar[int] = 0

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        type(self).loads += 1
        if type(self).loads > 1:
            raise RuntimeError("Some parameters like cache.bin are not in the checkpoint")
        return super().load_weights(weights)


def _seen() -> dict[str, tuple[str, torch.Tensor]]:
    return {n: (n, t) for n, t in WEIGHTS.items()}


@pytest.mark.parametrize("cls", [_Draft, _Strict], ids=["unfilled", "refused"])
def test_the_stray_tensor_is_reported_unused(cls: type[_Draft]) -> None:
    unfilled, used, _model = _runner(cls, None, _seen())
    assert unfilled == []
    assert used == {"a", "b"}


def test_a_missing_parameter_is_reported_unfilled() -> None:
    seen = {n: v for n, v in _seen().items() if n != "b"}
    unfilled, used, _model = _runner(_Draft, None, seen)
    assert unfilled == ["b"]
    assert used == {"a"}


@pytest.mark.parametrize("cls", [_LoadsOnce, _RefusesWithAStrangerName])
def test_an_unrelated_load_failure_is_a_probe_error(cls: type[_Draft]) -> None:
    """The old probe reported {"a", "b", "stray"} used here: every tensor, the stray too."""
    cls.loads = 0  # type: ignore[attr-defined]
    with pytest.raises(ProbeError, match=f"{cls.__name__}.load_weights without a: "):
        _runner(cls, None, _seen())
