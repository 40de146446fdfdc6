"""Tests of ``distill`` and ``train``, and the one helper their resume tests share."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
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


def run_ranks(code: str, *args: str, world: int = 2) -> None:
    """Run ``python -c code ARGS`` as the ``world`` ranks of a torchrun-style job on this
    machine (gloo: ``RANK``, ``WORLD_SIZE``, ``MASTER_*``, one thread each); every rank
    must exit 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=root,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(world),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "OMP_NUM_THREADS": "1",
            },
        )  # fmt: skip
        for rank in range(world)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
