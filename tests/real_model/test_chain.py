"""The whole path on a real language model, SmolLM2-135M-Instruct, served by real SGLang.

distill (from the lane server) -> train -> token-map build -> export -> eval -> serve with
speculation. Sizes keep this under a few minutes on a 2-core CI machine; the full-size
run is bench/bench_train.py (docs/train.md).
"""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastmtp_export.cli import app

from ..conftest import assert_one_line_error
from ..sglang_lane.server import (
    CHAIN_FLAGS,
    REAL_MODEL_FLAGS,
    Server,
    sglang_server,
)
from .prompts import prompts, write_prompts

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "fastmtp_export"]


def _distill(
    prompts_file: Path, url: str, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    args = ["distill", str(prompts_file), "--server", url, "--out", str(out), "--json", "-q"]
    return subprocess.run(
        [*CLI, *args, "--temperature", "0", "--max-tokens", "24", *extra],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_distill_resumes_after_a_kill(plain: Server, tmp_path: Path) -> None:
    texts = prompts(10, seed=1)
    file = write_prompts(tmp_path / "prompts.jsonl", texts)
    out = tmp_path / "distilled.jsonl"
    args = ["distill", str(file), "--server", plain.url, "--out", str(out), "-q"]
    proc = subprocess.Popen(
        [*CLI, *args, "--temperature", "0", "--max-tokens", "24", "--concurrency", "1"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    before = out.read_bytes().count(b"\n")
    with out.open("ab") as fh:
        fh.write(b'{"id": "p9", "messages": [{"ro')  # what a kill mid-write leaves
    r = _distill(file, plain.url, out, "--concurrency", "3")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["already_done"] == before
    assert summary["written"] == 10 - before
    recs = _records(out)
    assert sorted(rec["id"] for rec in recs) == sorted(f"p{i}" for i in range(10))
    by_id = {rec["id"]: rec for rec in recs}
    assert by_id["p0"]["messages"][0] == {"role": "user", "content": texts[0]}
    # the answer is the served model's own greedy answer
    direct = plain.post(
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": texts[0]}], "max_tokens": 24,
         "temperature": 0},
        timeout=120,
    )  # fmt: skip
    assert by_id["p0"]["messages"][1]["content"] == direct["choices"][0]["message"]["content"]
    assert all(rec["lang"] == "en" for rec in recs)


class _Flaky(http.server.ThreadingHTTPServer):
    """A proxy in front of the real server that fails on purpose: SGLang cannot be made
    to return 500 on demand, so this stand-in does (the answers still come from SGLang)."""

    def __init__(self, upstream: str, always_bad: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream, self.always_bad = upstream, always_bad
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Flaky

    def log_message(self, *args: Any) -> None:
        pass

    def _forward(self, body: bytes | None) -> None:
        req = urllib.request.Request(
            self.server.upstream + self.path, data=body, method=self.command,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=120) as resp:
            data = resp.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fail(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"boom!")

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        content = json.loads(body)["messages"][-1]["content"]
        with self.server.lock:
            n = self.server.calls[content] = self.server.calls.get(content, 0) + 1
        if content == self.server.always_bad or n == 1:  # every prompt fails once
            self._fail()
            return
        self._forward(body)


def test_distill_retries_errors_and_reports_what_still_fails(plain: Server, tmp_path: Path) -> None:
    texts = prompts(4, seed=2)
    file = write_prompts(tmp_path / "prompts.jsonl", texts)
    proxy = _Flaky(plain.url, always_bad=texts[3])
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    out = tmp_path / "d.jsonl"
    try:
        r = _distill(file, proxy.url, out, "--retries", "3", "--concurrency", "2")
        assert r.returncode == 1
        assert r.stderr.strip().splitlines()[-1].startswith("error: 1 of 4 prompts failed")
        assert "p3: HTTP 500" in r.stderr
        assert "re-run the same command" in r.stderr
        assert sorted(rec["id"] for rec in _records(out)) == ["p0", "p1", "p2"]
        assert proxy.calls[texts[0]] == 2
        assert proxy.calls[texts[3]] == 3
        proxy.always_bad = ""
        r = _distill(file, proxy.url, out, "--retries", "3")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["written"] == 1
        assert sorted(rec["id"] for rec in _records(out)) == ["p0", "p1", "p2", "p3"]
    finally:
        proxy.shutdown()


def test_distill_checks_prompts_and_the_server_first(tmp_path: Path) -> None:
    runner = CliRunner()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens after close
    good = write_prompts(tmp_path / "p.jsonl", ["hello"])
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["distill", str(good), "--server", dead, "--out", str(out)])
    assert_one_line_error(r, "cannot reach an OpenAI-compatible server", "--server")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    r = runner.invoke(app, ["distill", str(bad), "--server", dead, "--out", str(out)])
    assert_one_line_error(r, f"{bad}:2", '{"text": ...}')
    assert not out.exists()


def _spec_run(server: Server, tok: Any, texts: list[str], n: int) -> tuple[list[list[int]], float]:
    """Greedy outputs and the mean spec_accept_length over ``texts`` (chat-rendered)."""
    outs, taus = [], []
    for text in texts:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        doc = server.generate(tok(ids, add_special_tokens=False)["input_ids"], n)
        outs.append(doc["output_ids"])
        taus.append(float(doc["meta_info"].get("spec_accept_length", 1.0)))
    return outs, sum(taus) / len(taus)


def test_distill_train_export_eval_serve(smollm2: Path, plain: Server, tmp_path: Path) -> None:
    """A head trained on the model's own answers drafts better than the untrained one, in
    the reference evaluator and in real SGLang, with output unchanged."""
    from transformers import AutoTokenizer

    texts = prompts(40, seed=3)
    train_file = write_prompts(tmp_path / "train_prompts.jsonl", texts[:32])
    data = tmp_path / "distilled.jsonl"
    done = _distill(train_file, plain.url, data, "--max-tokens", "64", "--concurrency", "8")
    assert done.returncode == 0, done.stderr
    runner = CliRunner()
    head = tmp_path / "head"
    r = runner.invoke(
        app,
        ["train", str(smollm2), "--data", str(data), "--out", str(head), "--epochs", "3",
         "--batch", "8", "--lr", "3e-4", "-q", "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    history = json.loads((head / "training.json").read_text())["history"]
    assert history[-1]["loss"][0] < history[0]["loss"][0]
    maps = tmp_path / "maps"
    r = runner.invoke(
        app,
        ["token-map", "build", str(data), "--tokenizer", str(smollm2), "--out", str(maps),
         "--size", "4096", "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    untrained, trained = tmp_path / "untrained", tmp_path / "trained"
    for src, out, extra in ((smollm2, untrained, []), (head, trained, ["--token-maps", str(maps)])):
        r = runner.invoke(app, ["export", str(src), "--out", str(out), "-q", *extra])
        assert r.exit_code == 0, r.output
    held = tmp_path / "held.jsonl"
    held.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": t}], "lang": "en"}) + "\n"
            for t in texts[32:]
        )
    )
    taus = {}
    for name, art in (("untrained", untrained), ("trained", trained)):
        r = runner.invoke(
            app,
            ["eval", str(art), "--base", str(smollm2), "--prompts", str(held), "--vocab", "full",
             "--max-new-tokens", "32", "--json", "-q"],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        taus[name] = json.loads(r.stdout)["modes"]["full"]["all"]["accept_length"]
    assert taus["trained"] > taus["untrained"] + 0.1, taus
    tok = AutoTokenizer.from_pretrained(str(smollm2))
    want, _ = _spec_run(plain, tok, texts[32:], 32)
    served = {}
    for name, art in (("untrained", untrained), ("trained", trained)):
        work = tmp_path / f"serve-{name}"
        with sglang_server(
            smollm2,
            work,
            *REAL_MODEL_FLAGS,
            *CHAIN_FLAGS,
            "--speculative-draft-model-path",
            str(art),
        ) as server:
            got, served[name] = _spec_run(server, tok, texts[32:], 32)
        assert got == want  # speculation never changes greedy output
    assert served["trained"] > served["untrained"] + 0.1, served
