"""What the plugin did, for the periodic log line and ``/metrics``, and the once-only
report of a hook section that raised (a hook never fails a batch or a request)."""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger("sglang_patch")


class Counts:
    """What the plugin did, for the periodic log line and ``/metrics``."""

    def __init__(self) -> None:
        self.batches: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.off_map: dict[str, int] = {}
        self.switches = 0

    def line(self) -> str:
        def fmt(d: dict[str, int]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "none"

        return (
            f"fastmtp: draft batches {fmt(self.batches)}; rows {fmt(self.rows)}; "
            f"rows off their map {fmt(self.off_map)}; switches {self.switches}"
        )


@functools.cache
def prometheus_counters() -> dict[str, Any] | None:
    """Prometheus counters when ``--enable-metrics``.

    SGLang runs prometheus_client in multiprocess mode, so counters made in the
    scheduler appear on the server's ``/metrics``. Metrics never break serving.
    """
    try:
        from sglang.srt.runtime_context import get_observability

        if not get_observability().enable_metrics:
            return None
        from prometheus_client import Counter

        return {
            "batches": Counter(
                "fastmtp:draft_batches",
                "Draft batches per active language set (sglang_patch)",
                ["lang"],
            ),
            "switches": Counter("fastmtp:draft_switches", "Draft set switches (sglang_patch)"),
            "rows": Counter(
                "fastmtp:draft_rows", "Requests drafted, per request language", ["lang"]
            ),
            "off_map": Counter(
                "fastmtp:draft_rows_off_map",
                "Requests drafted with a set not holding their language's map",
                ["lang"],
            ),
        }
    except Exception as exc:  # a missing or changed metrics seam: keep the log line only
        log.warning("fastmtp: Prometheus counters unavailable (%s); counters stay in the log", exc)
        return None


#: hook sections that raised once already (each is logged with its traceback once)
_failed: set[str] = set()


def failed_once(where: str) -> None:
    if where not in _failed:
        _failed.add(where)
        log.exception("fastmtp: %s failed; drafting with the active set (reported once)", where)
