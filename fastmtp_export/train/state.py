"""A training run's resumable state and its finished outputs.

The state (head, optimizer, schedule, step) is one ``train_state.pt`` in ``--out``,
replaced atomically every ``--save-every`` steps, so a kill loses at most that many
steps. Resuming refuses a state written with other options or other data: the run
would silently become a different one. The data order is a function of the seed and
the epoch, so a resumed run takes exactly the batches an uninterrupted one takes.

A state file is input like any other: one that was truncated, edited or written by
another program is refused in one line (:class:`TrainState` checks its shape,
:func:`restore` checks it against the run's own head, optimizer and schedule), never
half-applied and never a traceback.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict, Field, ValidationError

from .._util.atomic import atomic_write
from .._util.schema import StrictModel
from ..errors import TrainError

STATE_NAME = "train_state.pt"
RECORD_NAME = "training.json"
WEIGHTS_NAME = "model.safetensors"
OUTPUT_FILES = (WEIGHTS_NAME, RECORD_NAME)


class _StateModel(StrictModel):
    """Strict types (no coercion: ``True`` is not a step, ``"5"`` is not an int)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True
    )


class HistoryEntry(_StateModel):
    """One optimizer step's mean loss (and, with ``--kd-weight``, KL) per step position."""

    step: int = Field(ge=1)
    loss: list[float]
    kl: list[float] | None = None


class OptimizerState(_StateModel):
    """``torch.optim.Optimizer.state_dict()``: per-parameter tensors, then the groups."""

    state: dict[int, dict[str, torch.Tensor]]
    param_groups: list[dict[str, Any]] = Field(min_length=1)


class TrainState(_StateModel):
    """Exactly what the trainer saves (``trainer._state``)."""

    step: int = Field(ge=1)  #: optimizer steps taken; a state is saved after one at least
    head: dict[str, torch.Tensor]  #: ``TrainableHead.state_dict()``
    optimizer: OptimizerState
    schedule: dict[str, Any]  #: ``LambdaLR.state_dict()``, checked against a live one
    identity: dict[str, str]  #: options, data and source hashes of the run
    history: list[HistoryEntry]


def save_state(out: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (a kill leaves the previous state or this one)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(out / STATE_NAME, buf.getvalue())


def _refuse(path: Path, why: str) -> TrainError:
    return TrainError(
        f"--resume: {path} is not a training state this tool wrote ({why}); remove it, or "
        "pass --overwrite instead of --resume to start over"
    )


def load_state(out: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state of ``out``, or ``None`` when there is none.

    The returned dict has :class:`TrainState`'s keys and types; :func:`restore` applies it.

    Raises:
        TrainError: the state is unreadable or malformed, or was written by a run with
            other options, data or source (``identity`` differs).
    """
    path = out / STATE_NAME
    if not path.is_file():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainError(
            f"{path} is unreadable ({type(exc).__name__}); remove it or pass --overwrite"
        ) from None
    try:
        state = TrainState.model_validate(raw)
    except ValidationError as exc:
        if not isinstance(raw, dict):
            raise _refuse(path, f"it holds a {type(raw).__name__}, not a dict") from None
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in err["loc"])
        raise _refuse(path, f"{where}: {err['msg']}") from None
    saved = state.identity
    changed = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
    if changed:
        raise TrainError(
            f"--resume: {path} was written with other {', '.join(changed)}; rerun with the "
            "original options and data, or pass --overwrite to start over"
        )
    return dict(raw)


def restore(
    out: Path,
    state: dict[str, Any],
    head: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    total: int,
    *,
    sharded: bool = False,
) -> int:
    """Load a :func:`load_state` result into the run's objects; returns the step reached.

    A ``sharded`` head (:mod:`.shard`) takes the same full state; each rank keeps its shard.

    Everything is checked against the live objects before any of them changes: a
    tensor of another shape, a group key of another type or a step past the run's end
    would otherwise surface as a traceback steps later, or as a silently different run.

    Raises:
        TrainError: the state does not fit this run's head, optimizer or schedule.
    """
    path = out / STATE_NAME
    step: int = state["step"]
    if step >= total:
        raise _refuse(path, f"step {step} is not below the run's {total} steps")
    history = state["history"]
    if [h["step"] for h in history] != list(range(1, step + 1)):
        raise _refuse(path, f"the history does not list steps 1..{step}")
    want = head.state_dict()
    got: dict[str, torch.Tensor] = state["head"]
    if set(got) != set(want):
        extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        raise _refuse(path, f"head tensors differ: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, t in want.items():
        if got[name].shape != t.shape or got[name].dtype != t.dtype:
            raise _refuse(
                path, f"head.{name} is {got[name].dtype} {tuple(got[name].shape)}, "
                f"expected {t.dtype} {tuple(t.shape)}"
            )  # fmt: skip
    _check_optimizer(path, state["optimizer"], opt)
    _check_same_layout(path, "schedule", state["schedule"], sched.state_dict())
    if state["schedule"]["last_epoch"] != step:
        at = state["schedule"]["last_epoch"]
        raise _refuse(path, f"the schedule is at step {at}, the state at {step}")
    if sharded:
        from .shard import load_full

        load_full(head, opt, got, state["optimizer"])
    else:
        head.load_state_dict(got)
        opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["schedule"])
    return step


def _check_optimizer(path: Path, saved: dict[str, Any], opt: torch.optim.Optimizer) -> None:
    """The saved optimizer has this optimizer's groups and one parameter's tensors each."""
    live = opt.state_dict()
    groups = saved["param_groups"]
    if len(groups) != len(live["param_groups"]):
        raise _refuse(path, f"{len(groups)} optimizer groups, expected {len(live['param_groups'])}")
    for i, (g, want) in enumerate(zip(groups, live["param_groups"], strict=True)):
        _check_same_layout(path, f"optimizer.param_groups.{i}", g, want)
        if g["params"] != want["params"]:
            raise _refuse(path, f"optimizer.param_groups.{i}.params differ from the head's")
    params = [p for group in opt.param_groups for p in group["params"]]
    for index, entry in saved["state"].items():
        if not 0 <= index < len(params):
            raise _refuse(path, f"optimizer.state has parameter {index} of {len(params)}")
        for key, t in entry.items():
            want_shape = () if key == "step" else tuple(params[index].shape)
            if tuple(t.shape) != want_shape or not t.is_floating_point():
                raise _refuse(
                    path, f"optimizer.state.{index}.{key} is {t.dtype} {tuple(t.shape)}, "
                    f"expected a float tensor of shape {want_shape}"
                )  # fmt: skip


def _check_same_layout(path: Path, where: str, saved: dict[str, Any], live: dict[str, Any]) -> None:
    """``saved`` has exactly ``live``'s keys, each value of the same type."""
    if set(saved) != set(live):
        diff = sorted(set(saved) ^ set(live), key=str)
        raise _refuse(path, f"{where} keys differ from this version's: {diff[:3]}")
    for key, value in live.items():
        if not _same_kind(saved[key], value):
            want = type(value).__name__
            if isinstance(value, (list, tuple)):
                want += f" of {len(value)} " + "/".join(sorted({type(v).__name__ for v in value}))
            raise _refuse(path, f"{where}.{key} is {saved[key]!r:.40}, expected a {want}")


def _same_kind(saved: Any, live: Any) -> bool:
    """Same type, and for a list or tuple the same length and element kinds."""
    if type(saved) is not type(live):
        return False
    if isinstance(live, (list, tuple)):
        return len(saved) == len(live) and all(map(_same_kind, saved, live))
    return True
