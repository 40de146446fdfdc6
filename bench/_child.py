"""Wall time and peak RSS of a child process, shared by the benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def run_child(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a child process, after flushing dirty pages."""
    os.sync()  # every timed run starts with no pending writeback from the previous one
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv], check=True, capture_output=True, text=True
    ).stdout
    wall, rss, code = json.loads(out.strip().splitlines()[-1])
    if code != 0:
        raise SystemExit(f"{argv} failed with exit code {code}")
    return wall, rss
