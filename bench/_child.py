"""Wall time and peak RSS of a child process, shared by the benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: A fresh, small interpreter forks the measured command, so the child's peak RSS is its
#: own: a child forked straight from this (large) process would inherit our RSS as its
#: starting high-water mark.
_MEASURE = """
import json, os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
print(json.dumps([time.perf_counter() - t, usage.ru_maxrss * 1024, code]))
"""


def run_child(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a child process, after flushing dirty pages."""
    os.sync()  # every timed run starts with no pending writeback from the previous one
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    wall, rss, code = json.loads(out.strip().splitlines()[-1])
    if code != 0:
        raise SystemExit(f"{argv} failed with exit code {code}")
    return wall, rss


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants now (Linux /proc)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def run_tree(argv: list[str], interval: float = 0.05) -> tuple[float, int]:
    """(wall seconds, peak summed RSS of the process tree), sampled every ``interval`` s.

    For commands that spawn worker processes, whose memory ``wait4`` does not add up.
    """
    import time

    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(interval)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed with exit code {proc.returncode}")
    return wall, peak
