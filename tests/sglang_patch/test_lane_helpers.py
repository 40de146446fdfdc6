"""The lane's concurrency helper collects exactly one result per request sent.

The mixed-traffic tests judge acceptance from what ``_concurrently`` returns; if it
dropped a failed or repeated request, a test could pass on fewer requests than it sent.
A stand-in server (no SGLang) makes each failure mode happen on purpose.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Case, _concurrently


class _Server:
    def __init__(self, fail: tuple[int, ...] | None = None) -> None:
        self.fail = fail
        self.sent: list[tuple[int, ...]] = []

    def generate(self, ids: list[int], n: int, **params: Any) -> dict[str, Any]:
        self.sent.append(tuple(ids))
        if tuple(ids) == self.fail:
            raise ConnectionError("the server dropped the request")
        return {"output_ids": ids[:n], "params": params}


CASES: list[Case] = [((i, i + 1), 4) for i in range(12)]


def test_every_case_comes_back_once() -> None:
    server = _Server()
    got = _concurrently(server, CASES, lambda c: {"tag": c[0][0]}, workers=4)  # type: ignore[arg-type]
    assert sorted(got) == sorted(CASES)
    assert sorted(server.sent) == sorted(c[0] for c in CASES)  # each sent once
    assert all(got[c]["params"] == {"tag": c[0][0]} for c in CASES)


def test_a_failed_request_fails_the_helper() -> None:
    with pytest.raises(AssertionError, match="dropped the request"):
        _concurrently(_Server(fail=CASES[3][0]), CASES, workers=4)  # type: ignore[arg-type]


def test_repeated_cases_are_refused() -> None:
    with pytest.raises(AssertionError, match="repeated cases"):
        _concurrently(_Server(), [CASES[0], CASES[1], CASES[0]])  # type: ignore[arg-type]
