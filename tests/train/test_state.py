"""A tampered or foreign ``train_state.pt`` is refused in one line, never half-applied.

The states here are made by the trainer's own ``_state`` and ``_schedule`` around a
small stand-in head (the optimizer as the trainer builds it), then edited; one case
goes through ``train --resume`` on the CLI after a real interrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from fastmtp_export.cli import app
from fastmtp_export.errors import TrainError
from fastmtp_export.train import trainer as trainer_mod
from fastmtp_export.train.dist import Dist
from fastmtp_export.train.state import STATE_NAME, load_state, restore, save_state

from ..conftest import assert_one_line_error
from . import train_killed_after
from .test_train import FAST, data, source  # noqa: F401  (fixtures)

IDENTITY = {"options": "{}", "data": "d" * 64, "source": "s" * 64}
TOTAL = 8


class _Head(torch.nn.Module):
    """Stands in for ``TrainableHead``: a weight, a bias and a norm."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 3)  # weight [3, 4], bias [3]
        self.norm = torch.nn.LayerNorm(3)  # weight [3], bias [3]


def _live() -> tuple[_Head, torch.optim.Optimizer, Any]:
    """A fresh head, optimizer and schedule, built as ``trainer._run`` builds them."""
    torch.manual_seed(0)
    head = _Head()
    opt = torch.optim.AdamW(list(head.parameters()), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    return head, opt, trainer_mod._schedule(opt, TOTAL, 0.0)


def _saved(out: Path, steps: int = 2) -> dict[str, Any]:
    """Take ``steps`` optimizer steps, save the state as the trainer does, return it."""
    head, opt, sched = _live()
    history = []
    for step in range(steps):
        x = torch.randn(5, 4)  # [B, 4]
        head.norm(head.proj(x)).square().mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        history.append({"step": step + 1, "loss": [0.5, 0.25, 0.125]})
    cpu = Dist(torch.device("cpu"))
    state = trainer_mod._state(steps, head, opt, sched, dict(IDENTITY), history, cpu)  # type: ignore[arg-type]
    save_state(out, state)
    return state


def _tamper(out: Path, edit: Callable[[Any], Any]) -> None:
    """Rewrite the saved state as ``edit`` returns it (``edit`` may mutate in place)."""
    path = out / STATE_NAME
    raw = torch.load(path, weights_only=True)
    new = edit(raw)
    torch.save(raw if new is None else new, path)


def _load_and_restore(out: Path) -> int:
    state = load_state(out, dict(IDENTITY))
    assert state is not None
    head, opt, sched = _live()
    return restore(out, state, head, opt, sched, TOTAL)


def _refused(out: Path, *needles: str) -> None:
    with pytest.raises(TrainError) as info:
        _load_and_restore(out)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for needle in (str(out / STATE_NAME), "--overwrite", *needles):
        assert needle in msg, msg


def test_an_untouched_state_restores_exactly(tmp_path: Path) -> None:
    saved = _saved(tmp_path)
    state = load_state(tmp_path, dict(IDENTITY))
    assert state is not None
    head, opt, sched = _live()
    assert restore(tmp_path, state, head, opt, sched, TOTAL) == 2
    for k, v in head.state_dict().items():
        assert torch.equal(v, saved["head"][k]), k
    assert sched.last_epoch == 2
    assert sched.get_last_lr() == saved["schedule"]["_last_lr"]
    assert opt.state_dict()["param_groups"] == saved["optimizer"]["param_groups"]


def _set(*path: Any, value: Any) -> Callable[[Any], None]:
    def edit(raw: Any) -> None:
        for key in path[:-1]:
            raw = raw[key]
        raw[path[-1]] = value

    return edit


def _drop(*path: Any) -> Callable[[Any], None]:
    def edit(raw: Any) -> None:
        for key in path[:-1]:
            raw = raw[key]
        del raw[path[-1]]

    return edit


SHAPE_CASES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "a list": (lambda raw: [raw], "it holds a list, not a dict"),
    "a tensor": (lambda raw: torch.zeros(3), "it holds a Tensor, not a dict"),
    "negative step": (_set("step", value=-1), "step"),
    "zero step": (_set("step", value=0), "step"),
    "float step": (_set("step", value=2.0), "step"),
    "bool step": (_set("step", value=True), "step"),
    "str step": (_set("step", value="2"), "step"),
    "tensor step": (_set("step", value=torch.tensor(2)), "step"),
    "no step": (_drop("step"), "step"),
    "no head": (_drop("head"), "head"),
    "no optimizer": (_drop("optimizer"), "optimizer"),
    "no schedule": (_drop("schedule"), "schedule"),
    "no identity": (_drop("identity"), "identity"),
    "no history": (_drop("history"), "history"),
    "an unknown key": (_set("extra", value=1), "extra"),
    "head a list": (lambda raw: _set("head", value=list(raw["head"].values()))(raw), "head"),
    "head value a list": (_set("head", "proj.weight", value=[[0.0] * 4] * 3), "head.proj.weight"),
    "optimizer a list": (_set("optimizer", value=[]), "optimizer"),
    "optimizer state a list": (_set("optimizer", "state", value=[]), "optimizer.state"),
    "optimizer entry not tensors": (_set("optimizer", "state", 0, "exp_avg", value=1.0), "exp_avg"),
    "no param groups": (_set("optimizer", "param_groups", value=[]), "param_groups"),
    "param group a list": (_set("optimizer", "param_groups", 0, value=[]), "param_groups"),
    "schedule a list": (_set("schedule", value=[1]), "schedule"),
    "identity a list": (_set("identity", value=["options"]), "identity"),
    "identity value an int": (_set("identity", "data", value=5), "identity.data"),
    "history a dict": (_set("history", value={}), "history"),
    "history entry without loss": (_drop("history", 0, "loss"), "history.0.loss"),
    "history loss a str": (_set("history", 1, "loss", value="0.5"), "history.1.loss"),
}


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_a_malformed_state_is_one_line(tmp_path: Path, case: str) -> None:
    edit, where = SHAPE_CASES[case]
    _saved(tmp_path)
    _tamper(tmp_path, edit)
    _refused(tmp_path, "not a training state this tool wrote", where)


def _grow(raw: Any) -> None:
    raw["head"]["proj.weight"] = torch.zeros(3, 5)


FIT_CASES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "step past the run": (_set("step", value=TOTAL), f"below the run's {TOTAL} steps"),
    "step ahead of its history": (_set("step", value=3), "history"),
    "history renumbered": (_set("history", 0, "step", value=7), "history"),
    "head tensor missing": (_drop("head", "norm.bias"), "norm.bias"),
    "head tensor unknown": (_set("head", "other", value=torch.zeros(1)), "other"),
    "head tensor reshaped": (_grow, "head.proj.weight"),
    "head tensor retyped": (
        lambda raw: _set("head", "norm.weight", value=raw["head"]["norm.weight"].half())(raw),
        "head.norm.weight",
    ),
    "optimizer tensor reshaped": (
        _set("optimizer", "state", 0, "exp_avg", value=torch.zeros(7)),
        "optimizer.state.0.exp_avg",
    ),
    "optimizer step not a scalar": (
        _set("optimizer", "state", 1, "step", value=torch.zeros(2)),
        "optimizer.state.1.step",
    ),
    "optimizer integer moments": (
        _set("optimizer", "state", 1, "exp_avg_sq", value=torch.zeros(3, dtype=torch.long)),
        "optimizer.state.1.exp_avg_sq",
    ),
    "optimizer parameter out of range": (
        lambda raw: _set("optimizer", "state", 9, value=raw["optimizer"]["state"][0])(raw),
        "parameter 9",
    ),
    "optimizer lr a str": (_set("optimizer", "param_groups", 0, "lr", value="x"), "lr"),
    "optimizer betas one long": (
        _set("optimizer", "param_groups", 0, "betas", value=(0.9,)),
        "betas",
    ),
    "optimizer group key missing": (_drop("optimizer", "param_groups", 0, "eps"), "eps"),
    "optimizer two groups": (
        lambda raw: raw["optimizer"]["param_groups"].append(raw["optimizer"]["param_groups"][0]),
        "2 optimizer groups",
    ),
    "optimizer params renumbered": (
        _set("optimizer", "param_groups", 0, "params", value=[0, 1, 2, 4]),
        "params",
    ),
    "schedule overwrites an attribute": (_set("schedule", "optimizer", value=5), "optimizer"),
    "schedule step a float": (_set("schedule", "last_epoch", value=2.0), "last_epoch"),
    "schedule behind the state": (_set("schedule", "last_epoch", value=1), "schedule is at step 1"),
    "schedule rates not floats": (_set("schedule", "base_lrs", value=["x"]), "base_lrs"),
    "schedule lambdas replaced": (_set("schedule", "lr_lambdas", value=[{"a": 1}]), "lr_lambdas"),
}


@pytest.mark.parametrize("case", FIT_CASES)
def test_a_state_that_does_not_fit_the_run_is_one_line(tmp_path: Path, case: str) -> None:
    edit, where = FIT_CASES[case]
    _saved(tmp_path)
    _tamper(tmp_path, edit)
    _refused(tmp_path, "not a training state this tool wrote", where)


def test_other_options_are_still_named(tmp_path: Path) -> None:
    _saved(tmp_path)
    with pytest.raises(TrainError, match="other data; rerun"):
        load_state(tmp_path, {**IDENTITY, "data": "e" * 64})


def test_train_resume_refuses_a_tampered_state(
    source: Path,  # noqa: F811
    data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Through the CLI: a state of the wrong shape, and a real state with a bad tensor."""
    runner = CliRunner()
    out = tmp_path / "head"
    args = ["train", str(source), "--data", str(data), "--out", str(out), "--resume",
            "--epochs", "2", "--batch", "4", "--lr", "3e-3", "--max-length", "40",
            "--warmup", "0", "--save-every", "1", "-q"]  # fmt: skip
    # the interrupted run first: the tokenizer's logger then writes to a stream that
    # outlives the CLI runs below (not to one CliRunner closes)
    train_killed_after(2, source, [data], out, FAST, overwrite=True, show_progress=False)
    good = (out / STATE_NAME).read_bytes()
    torch.save([{"step": 3}], out / STATE_NAME)
    assert_one_line_error(runner.invoke(app, args), str(out / STATE_NAME), "--overwrite")
    (out / STATE_NAME).write_bytes(good)
    _tamper(out, _set("step", value=-4))
    assert_one_line_error(runner.invoke(app, args), str(out / STATE_NAME), "step")
    (out / STATE_NAME).write_bytes(good)
    first = next(iter(torch.load(out / STATE_NAME, weights_only=True)["head"]))
    _tamper(out, lambda raw: _set("head", first, value=torch.zeros(2, 2))(raw))
    r = runner.invoke(app, args)
    assert_one_line_error(r, str(out / STATE_NAME), f"head.{first}", "--overwrite")
    assert not (out / "model.safetensors").exists()
    (out / STATE_NAME).write_bytes(good)
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
