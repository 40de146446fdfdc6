"""A training run's resumable state and its finished outputs.

The state (head, optimizer, schedule, step) is one ``train_state.pt`` in ``--out``,
replaced atomically every ``--save-every`` steps, so a kill loses at most that many
steps. Resuming refuses a state written with other options or other data: the run
would silently become a different one. The data order is a function of the seed and
the epoch, so a resumed run takes exactly the batches an uninterrupted one takes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from .._util.atomic import atomic_write
from ..errors import TrainError

STATE_NAME = "train_state.pt"
RECORD_NAME = "training.json"
WEIGHTS_NAME = "model.safetensors"
OUTPUT_FILES = (WEIGHTS_NAME, RECORD_NAME)


def save_state(out: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (a kill leaves the previous state or this one)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(out / STATE_NAME, buf.getvalue())


def load_state(out: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state of ``out``, or ``None`` when there is none.

    Raises:
        TrainError: the state is unreadable, or was written by a run with other
            options, data or source (``identity`` differs).
    """
    path = out / STATE_NAME
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainError(
            f"{path} is unreadable ({type(exc).__name__}); remove it or pass --overwrite"
        ) from None
    saved = state.get("identity", {})
    changed = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
    if changed:
        raise TrainError(
            f"--resume: {path} was written with other {', '.join(changed)}; rerun with the "
            "original options and data, or pass --overwrite to start over"
        )
    return state
