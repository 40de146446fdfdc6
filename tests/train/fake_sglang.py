"""A stand-in for SGLang's native API, computing real states with the tiny model's trunk.

It answers what ``record-hidden`` asks SGLang 0.5.23 (``/server_info``, ``/model_info``,
``/generate`` with ``return_hidden_states`` or a ``token_ids_logprob`` probe) the way
SGLang does (tests/real_model/test_record_hidden.py checks the real server), with
switches for each server setting and failure the recorder must handle. The states are
the transformers trunk's own, ``model.model(ids).last_hidden_state``.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from fastmtp_export.checkpoints.synthetic import TINY, mimo_config, write_synthetic_mimo
from fastmtp_export.evaluate.target import load_target_model
from fastmtp_export.maps.synthetic_corpus import records

from ..conftest import BPE_MODEL_VOCAB

#: SGLang 0.5.23's refusal of return_hidden_states by a server launched without the flag
NOT_ENABLED = (
    "The server is not configured to return hidden states. Please set "
    "`--return-hidden-states-mode last`, `--return-hidden-states-mode full`, or the legacy "
    "`--enable-return-hidden-states` flag."
)


def write_source(root: Path, bpe_tokenizer: Path) -> Path:
    """A tiny MiMo checkpoint whose directory also holds its BPE tokenizer."""
    gen = json.loads((bpe_tokenizer / "generation_config.json").read_text())
    cfg = mimo_config({**TINY, "vocab_size": BPE_MODEL_VOCAB})
    cfg["eos_token_id"] = gen["eos_token_id"][0]
    src = write_synthetic_mimo(root, cfg, seed=0, num_shards=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(bpe_tokenizer / name, src / name)
    return src


def write_data(path: Path, n: int = 16) -> Path:
    """``n`` chat records: a question, an answer in English or Russian."""
    rows = []
    half = n // 2
    for i, r in enumerate([*records("en", half, seed=1), *records("ru", n - half, seed=2)]):
        rows.append(
            {"messages": [{"role": "user", "content": f"question {i}"},
                          {"role": "assistant", "content": r["text"]}]}
        )  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def trunk_model(source: Path) -> Any:
    cfg = json.loads((source / "config.json").read_text())
    return load_target_model(source, cfg, "mimo", torch.device("cpu"), torch.float32)


class FakeSGLang(ThreadingHTTPServer):
    """``/server_info``, ``/model_info`` and ``/generate``, as SGLang answers them."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, source: Path, model: Any) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        cfg = json.loads((source / "config.json").read_text())
        self.model, self.vocab = model, int(cfg["vocab_size"])
        self.info: dict[str, Any] | None = {
            "model_path": str(source), "dtype": "float32", "version": "0.5.23",
            "enable_return_hidden_states": True, "return_hidden_states_mode": "full",
            "disable_radix_cache": True, "chunked_prefill_size": -1,
        }  # fmt: skip
        self.model_info: dict[str, Any] = {
            "model_path": str(source),
            "architectures": cfg["architectures"],
            "model_type": cfg["model_type"],
        }
        self.enabled = True  #: False: /generate refuses return_hidden_states (400)
        self.cached = 0  #: rows a radix-cache hit leaves out of each reply
        self.extra_width = 0  #: columns added to each row (another model's states)
        self.fail: set[tuple[int, ...]] = set()  #: prompts answered with HTTP 500
        self.calls: list[tuple[int, ...]] = []  #: prompts asked for states, in order
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

    def states(self, ids: list[int]) -> list[list[float]]:
        with self.lock, torch.no_grad():
            hidden = self.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        if self.extra_width:
            hidden = torch.cat([hidden, hidden[:, : self.extra_width]], dim=1)
        rows: list[list[float]] = hidden.tolist()
        return rows


class _Handler(BaseHTTPRequestHandler):
    server: FakeSGLang

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, doc: Any, status: int = 200) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send({"error": {"message": message}}, status)

    def do_GET(self) -> None:
        if self.path in ("/server_info", "/get_server_info") and self.server.info is not None:
            self._send(self.server.info)
        elif self.path in ("/model_info", "/get_model_info"):
            self._send(self.server.model_info)
        else:
            self._error(404, "Not Found")

    def do_POST(self) -> None:
        s = self.server
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = doc["input_ids"]
        for t in doc.get("token_ids_logprob") or []:
            if not 0 <= t < s.vocab:
                self._error(
                    400,
                    f"token_ids_logprob contains out-of-vocabulary token id {t}; valid range "
                    f"is [0, {s.vocab}).",
                )
                return
        if not doc.get("return_hidden_states"):
            self._send({"output_ids": [0], "meta_info": {"prompt_tokens": len(ids)}})
            return
        if not s.enabled:
            self._error(400, NOT_ENABLED)
            return
        with s.lock:
            s.calls.append(tuple(ids))
        if tuple(ids) in s.fail:
            self._error(500, "internal error")
            return
        rows = s.states(ids)[s.cached :]
        meta = {"prompt_tokens": len(ids), "cached_tokens": s.cached, "hidden_states": [rows]}
        self._send({"output_ids": [0], "meta_info": meta})


@contextmanager
def fake_sglang(source: Path, model: Any) -> Iterator[FakeSGLang]:
    server = FakeSGLang(source, model)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
