"""Two runs into one ``--out`` at the same time: the second fails in one line, and no
run's recovery ever deletes the temporary directory of another live run.

Both runs are real processes: the first is held inside its atomic block (a helper
script that waits on a file), the second is the ``export`` CLI started meanwhile.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from fastmtp_export._util import atomic
from fastmtp_export._util.atomic import atomic_directory, lock_path

#: a run into OUT that writes x=1, says it is inside (READY), and waits for GO
_HELD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fastmtp_export._util.atomic import atomic_directory
    out, ready, go = map(Path, sys.argv[1:4])
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "x").write_text("1")
        ready.write_text(tmp.name)
        while not go.exists():
            time.sleep(0.02)
    """
)


def _export(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastmtp_export", "export", str(src), "--out", str(out), "-q",
         "--overwrite"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert [x for x in lines if x.startswith("error: ")] == lines[-1:], r.stderr
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_second_export_into_a_live_out_fails_in_one_line(
    tiny_source: Path, tmp_path: Path
) -> None:
    out, ready, go = tmp_path / "draft", tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", _HELD, str(out), str(ready), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(ready, first)
        held = tmp_path / ready.read_text()
        second = _export(tiny_source, out)
        _one_line_error(second, "another run is writing --out", str(out), "wait for it")
        assert (held / "x").read_text() == "1"  # the live run's directory is untouched
        assert not out.exists()
    finally:
        go.write_text("")
        assert first.wait(timeout=60) == 0, first.communicate()
    assert (out / "x").read_text() == "1"  # the first run published
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert _export(tiny_source, out).returncode == 0  # the lock went with the first run
    assert (out / "fastmtp.json").is_file()


def test_recovery_never_deletes_a_directory_made_before_its_lock(
    tiny_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old window: a run had made its temporary directory but not yet locked it when
    a second run's recovery looked. A real export is started exactly there."""
    out = tmp_path / "draft"
    mkdtemp = tempfile.mkdtemp
    seen: list[subprocess.CompletedProcess[str]] = []

    def then_a_second_run(*args: Any, **kwargs: Any) -> str:
        made = mkdtemp(*args, **kwargs)
        if Path(made).name.startswith(f".{out.name}.tmp-") and not seen:
            seen.append(_export(tiny_source, out))  # before this run locks ``made``
        return made

    monkeypatch.setattr(tempfile, "mkdtemp", then_a_second_run)
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "x").write_text("1")
    _one_line_error(seen[0], "another run is writing --out")
    assert (out / "x").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_lock_file_left_by_a_killed_run_is_reused_and_removed(tmp_path: Path) -> None:
    out = tmp_path / "draft"
    lock_path(out).write_text("")  # what a kill -9 leaves: the kernel dropped its lock
    with atomic_directory(out, overwrite=False) as tmp:
        (tmp / "x").write_text("1")
        assert lock_path(out).exists()
    assert (out / "x").read_text() == "1"
    assert not lock_path(out).exists()


def test_a_file_system_without_flock_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    out = tmp_path / "draft"
    with (
        caplog.at_level(logging.WARNING, logger=atomic.__name__),
        atomic_directory(out, overwrite=False) as tmp,
    ):
        (tmp / "x").write_text("1")
    assert (out / "x").read_text() == "1"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("has no flock" in r.getMessage() for r in warned), caplog.text
    assert any("will not be cleaned up" in r.getMessage() for r in warned), caplog.text
