"""Evidence that the lane's shims ran: one JSON line per event, per process.

``FASTMTP_CPU_LANE_STATUS`` names a file; each process appends small lines (atomic
under ``O_APPEND``). The tests read it to prove that every fallback was registered and
called and every hook fired in the scheduler: a shim that silently did nothing would
otherwise let the lane pass on a different code path.
"""

from __future__ import annotations

import json
import os

ENV = "FASTMTP_CPU_LANE_STATUS"
_seen: set[str] = set()


def record(event: str, once: bool = True) -> None:
    """Append ``{"pid", "event"}`` to the status file (first occurrence only by default)."""
    path = os.environ.get(ENV)
    if not path or (once and event in _seen):
        return
    _seen.add(event)
    line = json.dumps({"pid": os.getpid(), "event": event}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
