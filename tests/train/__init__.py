"""Tests of ``distill`` and ``train``, and the one helper their resume tests share."""

from __future__ import annotations

from typing import Any

import pytest

from fastmtp_export.train import trainer as trainer_mod


def train_killed_after(kill_step: int, *args: Any, **kwargs: Any) -> None:
    """Run :func:`~fastmtp_export.train.trainer.train` as a kill would stop it: at step
    ``kill_step`` (after the previous step's state was saved), with ``KeyboardInterrupt``."""
    real_step = trainer_mod._step

    def dies(step: int, *a: object, **kw: object) -> object:
        if step == kill_step:
            raise KeyboardInterrupt
        return real_step(step, *a, **kw)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod, "_step", dies)
        with pytest.raises(KeyboardInterrupt):
            trainer_mod.train(*args, **kwargs)
