"""``distill`` against a small OpenAI-compatible server on 127.0.0.1 (no SGLang needed).

The server answers each prompt as its text asks (the first word picks the behaviour):
``ok`` answers, ``error`` sends a 200 ``{"object": "error"}`` as vLLM and SGLang do,
``flaky`` sends that once and then answers, ``dict``, ``nochoices``, ``html`` and
``list`` send malformed replies, ``huge``/``hugestream`` send a 12 MiB answer (with and
without Content-Length), ``hang`` never answers and ``trickle`` sends a byte at a time.
tests/real_model/test_chain.py runs distill against real SGLang.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from fastmtp_export._util.atomic import run_lock
from fastmtp_export.cli import app
from fastmtp_export.train.distill import DistillOptions, _Client

from ..conftest import assert_one_line_error

#: bytes of a "huge" answer: over the cap for --max-tokens 8 (4 MiB + 8 KiB)
HUGE = 12 << 20


class FakeOpenAI(ThreadingHTTPServer):
    """``/v1/models`` and ``/v1/chat/completions``, behaving as each prompt asks."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: dict[str, int] = {}  #: prompt text -> chat requests for it
        self.models_mode = "ok"  #: "ok" or "hang"
        self.stop = threading.Event()  #: releases hanging handlers
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up on a huge or slow reply is what these tests do


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, body: bytes, *, length: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.server.models_mode == "hang":
            self.server.stop.wait(60)
            return
        self._send(json.dumps({"object": "list", "data": [{"id": "base"}]}).encode())

    def do_POST(self) -> None:
        text = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][-1][
            "content"
        ]
        with self.server.lock:
            n = self.server.calls[text] = self.server.calls.get(text, 0) + 1
        mode = text.split()[0]
        if mode == "flaky":
            mode = "error" if n == 1 else "ok"
        if mode == "hang":
            self.server.stop.wait(60)
            return
        content: Any = f"answer to {text}"
        if mode == "dict":
            content = {"x": 1}
        elif mode.startswith("huge"):
            content = "a" * HUGE
        reply = {
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content},
                 "finish_reason": "stop"}
            ],
            "usage": {"completion_tokens": 3},
        }  # fmt: skip
        body = json.dumps(reply).encode()
        if mode == "error":
            body = b'{"object": "error", "message": "boom", "type": "InternalServerError"}'
        elif mode == "nochoices":
            body = b'{"id": "cmpl-1", "object": "chat.completion"}'
        elif mode == "html":
            body = b"<html>502 bad gateway</html>"
        elif mode == "list":
            body = b"[1, 2]"
        elif mode == "trickle":  # whitespace a byte at a time for 12 s, then a good reply
            self.send_response(200)
            self.end_headers()
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline and not self.server.stop.is_set():
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(body)
            return
        self._send(body, length=mode != "hugestream")


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    srv = FakeOpenAI()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()


def write_prompts(path: Path, texts: list[str]) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return path


def run(prompts: Path, url: str, out: Path, *extra: str) -> Result:
    args = ["distill", str(prompts), "--server", url, "--out", str(out), "--max-tokens", "8"]
    return CliRunner().invoke(app, [*args, *extra])


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def record(ident: str, text: str) -> bytes:
    """One line exactly as distill writes it."""
    rec = {
        "id": ident,
        "messages": [
            {"role": "user", "content": text},
            {"role": "assistant", "content": f"answer to {text}"},
        ],
        "finish_reason": "stop",
    }
    return json.dumps(rec).encode() + b"\n"


def test_answers_are_appended_as_chat_records(server: FakeOpenAI, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0", "ok 1"])
    out = tmp_path / "d.jsonl"
    r = run(prompts, server.url, out, "--json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["written"] == 2
    assert sorted(out.read_bytes().splitlines(keepends=True)) == [
        record("p0", "ok 0"),
        record("p1", "ok 1"),
    ]


# --- --out is checked before it is touched -------------------------------------------

NOT_DISTILL = {
    "notes": b"first line\nlast line without newline",
    "notes-with-newline": b"some notes\n",
    "prompts": b'{"id": "p0", "text": "ok 0"}\n',
    "record-without-finish-reason": b'{"id": "p0", "messages": [{"role": "assistant", '
    b'"content": "x"}]}\n',
    "answer-not-a-string": b'{"id": "p0", "messages": [{"role": "assistant", "content": 5}], '
    b'"finish_reason": "stop"}\n',
    "binary": bytes(range(256)),
    "record-then-notes": record("p0", "ok 0") + b"a note, no newline",
}


@pytest.mark.parametrize("content", NOT_DISTILL.values(), ids=NOT_DISTILL.keys())
def test_an_out_that_is_not_distill_output_is_refused_untouched(
    server: FakeOpenAI, tmp_path: Path, content: bytes
) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0", "ok 1"])
    out = tmp_path / "notes.txt"
    out.write_bytes(content)
    os.utime(out, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = out.stat()
    r = run(prompts, server.url, out)
    assert_one_line_error(r, f"{out}:", "is not a distill record", "pass another --out")
    assert out.read_bytes() == content
    assert out.stat().st_mtime_ns == before.st_mtime_ns
    assert out.stat().st_size == before.st_size
    assert server.calls == {}


def test_an_out_directory_is_one_line(server: FakeOpenAI, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0"])
    r = run(prompts, server.url, tmp_path)
    assert_one_line_error(r, f"cannot read --out {tmp_path}", "pass another --out")


def test_a_second_run_into_the_same_out_is_refused(server: FakeOpenAI, tmp_path: Path) -> None:
    """Two distills appending to one file would answer the same prompts twice."""
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0", "ok 1"])
    out = tmp_path / "d.jsonl"
    out.write_bytes(record("p0", "ok 0"))
    with run_lock(out):  # the first run, still writing
        r = run(prompts, server.url, out)
    assert_one_line_error(r, f"another run is writing --out {out}", "choose another --out")
    assert out.read_bytes() == record("p0", "ok 0")
    assert server.calls == {}
    assert run(prompts, server.url, out, "-q").exit_code == 0  # the lock is gone with it
    assert len(out.read_bytes().splitlines()) == 2


def test_a_cut_last_record_is_dropped_and_the_rest_kept(server: FakeOpenAI, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0", "ok 1"])
    out = tmp_path / "d.jsonl"
    kept = record("p0", "ok 0")
    out.write_bytes(kept + b'{"id": "p1", "messages": [{"ro')  # what a kill mid-write leaves
    r = run(prompts, server.url, out, "--json")
    assert r.exit_code == 0, r.output
    assert "dropped a partial last line" in r.stderr
    assert json.loads(r.stdout)["already_done"] == 1
    assert out.read_bytes() == kept + record("p1", "ok 1")


def test_a_whole_last_record_without_newline_is_kept(server: FakeOpenAI, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0", "ok 1"])
    out = tmp_path / "d.jsonl"
    kept = record("p0", "ok 0")
    out.write_bytes(kept.rstrip(b"\n"))  # complete; only its newline is missing
    r = run(prompts, server.url, out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["already_done"] == 1
    assert out.read_bytes() == kept + record("p1", "ok 1")
    assert server.calls == {"ok 1": 1}


def test_a_refused_out_is_refused_before_the_server_is_probed(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0"])
    out = tmp_path / "notes.txt"
    out.write_bytes(b"keep me")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens after close
    r = run(prompts, dead, out)
    assert_one_line_error(r, "is not a distill record")
    assert out.read_bytes() == b"keep me"


# --- the reply's shape and size ---------------------------------------------------------


def test_an_error_object_is_retried(server: FakeOpenAI, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["flaky 0", "flaky 1"])
    out = tmp_path / "d.jsonl"
    r = run(prompts, server.url, out, "--retries", "2")
    assert r.exit_code == 0, r.output
    assert server.calls == {"flaky 0": 2, "flaky 1": 2}
    assert sorted(rec["id"] for rec in records(out)) == ["p0", "p1"]
    assert all(rec["messages"][-1]["content"].startswith("answer to") for rec in records(out))


def test_an_error_object_every_time_is_one_line(server: FakeOpenAI, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["error 0"])
    out = tmp_path / "d.jsonl"
    r = run(prompts, server.url, out, "--retries", "2")
    assert_one_line_error(r, "every request failed", "the server answered with an error: boom")
    assert server.calls == {"error 0": 2}
    assert not out.exists() or out.read_bytes() == b""


MALFORMED = {
    "dict": "choices[0].message.content is {",
    "nochoices": "not a chat completion",
    "html": "not JSON",
    "list": "not a chat completion",
}


@pytest.mark.parametrize("mode", MALFORMED)
def test_a_malformed_reply_is_never_written(server: FakeOpenAI, tmp_path: Path, mode: str) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0", f"{mode} 1"])
    out = tmp_path / "d.jsonl"
    r = run(prompts, server.url, out, "--retries", "3")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], r.stderr
    assert lines[-1].startswith("error: 1 of 2 prompts failed (first: p1: "), lines[-1]
    assert MALFORMED[mode] in lines[-1]
    warnings = [line for line in lines if line.startswith("prompt p1 failed: ")]
    assert len(warnings) == 1, r.stderr
    assert MALFORMED[mode] in warnings[0]
    assert r.stdout.strip() == str(out)  # the answers that came are kept there
    assert [rec["id"] for rec in records(out)] == ["p0"]
    assert server.calls[f"{mode} 1"] == 1  # not retried: the same reply would come back


@pytest.mark.parametrize("mode", ["huge", "hugestream"])
def test_a_huge_reply_is_abandoned(server: FakeOpenAI, tmp_path: Path, mode: str) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", [f"{mode} 0"])
    out = tmp_path / "d.jsonl"
    r = run(prompts, server.url, out)
    assert_one_line_error(r, "every request failed", "4,202,496-byte cap for --max-tokens 8")
    assert not out.exists() or out.read_bytes() == b""
    assert server.calls == {f"{mode} 0": 1}


# --- timeouts ---------------------------------------------------------------------------


def test_a_server_that_never_answers_fails_within_timeout(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["hang 0"])
    started = time.monotonic()
    r = run(prompts, server.url, tmp_path / "d.jsonl", "--timeout", "1", "--retries", "1")
    assert_one_line_error(r, "every request failed", "ReadTimeout")
    assert time.monotonic() - started < 10


def test_a_reply_still_arriving_after_timeout_is_abandoned(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", ["trickle 0"])
    out = tmp_path / "d.jsonl"
    started = time.monotonic()
    r = run(prompts, server.url, out, "--timeout", "1", "--retries", "1")
    assert_one_line_error(r, "every request failed", "still arriving when its time ran out")
    assert time.monotonic() - started < 8
    assert not out.exists() or out.read_bytes() == b""


def test_a_models_probe_that_never_answers_fails_within_the_remote_timeout(
    server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTMTP_HUB_TIMEOUT", "1")
    server.models_mode = "hang"
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0"])
    started = time.monotonic()
    r = run(prompts, server.url, tmp_path / "d.jsonl")  # --timeout stays 600
    assert_one_line_error(r, "cannot reach an OpenAI-compatible server", "ReadTimeout")
    assert time.monotonic() - started < 10


class _FullBacklog:
    """A listener that answers one ``/v1/models`` and then accepts no connection: its
    backlog is full, so the kernel drops further SYNs and a connect waits."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.filler = socket.socket()
        threading.Thread(target=self._serve_once, daemon=True).start()

    def _serve_once(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            self.filler.connect(("127.0.0.1", self.port))  # fills the backlog first
            body = b'{"data": [{"id": "base"}]}'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

    def close(self) -> None:
        self.filler.close()
        self.sock.close()


def test_a_connect_that_hangs_fails_within_the_remote_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTMTP_HUB_TIMEOUT", "1")
    listener = _FullBacklog()
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0"])
    started = time.monotonic()
    try:
        url = f"http://127.0.0.1:{listener.port}"
        r = run(prompts, url, tmp_path / "d.jsonl", "--timeout", "20", "--retries", "1")
    finally:
        listener.close()
    assert_one_line_error(r, "every request failed", "ConnectTimeout")
    assert time.monotonic() - started < 10


def test_the_connect_timeout_is_the_remote_timeout_bounded_by_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTMTP_HUB_TIMEOUT", "7")
    client = _Client("http://127.0.0.1:9", DistillOptions(timeout=600), None)
    assert (client.http.timeout.connect, client.http.timeout.read) == (7, 600)
    client = _Client("http://127.0.0.1:9", DistillOptions(timeout=2), None)
    assert (client.http.timeout.connect, client.http.timeout.read) == (2, 2)


def test_a_bad_remote_timeout_is_one_line(
    server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTMTP_HUB_TIMEOUT", "soon")
    prompts = write_prompts(tmp_path / "p.jsonl", ["ok 0"])
    r = run(prompts, server.url, tmp_path / "d.jsonl")
    assert_one_line_error(r, "FASTMTP_HUB_TIMEOUT='soon' is not a positive number")
