"""The SGLang side of ``record-hidden``: its settings checked, then one prompt's states.

SGLang 0.5.23's native ``/generate`` with ``"return_hidden_states": true`` (the server
launched with ``--enable-return-hidden-states``) answers ``meta_info.hidden_states``:
one list per forward pass of the request, the prefill's first, holding one row per
token *computed* in it. The rows are the model's final-normed last hidden state (what
its ``LogitsProcessor`` is given, the tensor every family's MTP layer consumes), as
JSON numbers of the model's dtype. With ``max_new_tokens`` 1 there is no decode pass,
so ``hidden_states[0]`` is [T, H] for a prompt of T tokens, exactly when all T are
computed in one prefill: a radix-cache hit leaves out the cached prefix's rows and
chunked prefill keeps only the last chunk's. Hence the server must also run with
``--disable-radix-cache`` and a ``--chunked-prefill-size`` of -1 or at least the
longest sample; both are checked in ``/server_info`` when it answers, and every reply
must have exactly T rows of width ``hidden_size``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch

from .._util.hashing import sha256_file
from .._util.remote import remote_timeout
from ..errors import TrainError
from .distill_reply import (
    MAX_SMALL_BODY,
    BadReplyError,
    RetryableError,
    post_retried,
    read_capped,
    snippet,
    why,
)
from .hidden_format import SourceIdentity

log = logging.getLogger(__name__)

LAUNCH = (
    "python -m sglang.launch_server --model-path SOURCE --enable-return-hidden-states "
    "--disable-radix-cache --chunked-prefill-size -1"
)
#: bytes a reply may take per hidden value (JSON text of a float), beyond a base
BYTES_PER_VALUE = 32
BODY_BASE = 4 << 20
#: SGLang's refusal of an out-of-range ``token_ids_logprob`` names its vocabulary size
_VOCAB_RANGE = re.compile(r"valid range is \[0, (\d+)\)")
_DTYPE_NAMES = {
    "float32": "float32", "float": "float32", "fp32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "half": "float16", "fp16": "float16",
}  # fmt: skip


class SGLangServer:
    """One SGLang server's native API, with bounded requests and retries."""

    def __init__(self, url: str, *, retries: int, timeout: float, api_key: str | None) -> None:
        import httpx

        self.url = url.rstrip("/").removesuffix("/v1")
        self.retries = retries
        self.timeout = timeout
        self.probe_seconds = min(remote_timeout(), timeout)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=self.probe_seconds), headers=headers
        )

    def close(self) -> None:
        self.http.close()

    def get_json(self, path: str) -> dict[str, Any] | None:
        """``GET path`` as a JSON object; None when the server has no such endpoint.

        Raises:
            TrainError: the server cannot be reached.
        """
        import httpx

        deadline = time.monotonic() + self.probe_seconds
        try:
            with self.http.stream(
                "GET", self.url + path, timeout=httpx.Timeout(self.probe_seconds)
            ) as r:
                if r.status_code >= 400:
                    return None
                body = read_capped(r, MAX_SMALL_BODY, deadline, f"for {path}")
        except (httpx.HTTPError, RetryableError) as exc:
            raise TrainError(
                f"cannot reach an SGLang server at {self.url} ({why(exc)}); start one "
                f"({LAUNCH}) or fix --server"
            ) from None
        except BadReplyError:
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def vocab_size(self, token: int, vocab: int) -> int | None:
        """The server's vocabulary size, read from its refusal of ``token_ids_logprob``
        [``vocab``] (out of range exactly when its vocabulary is not larger); None when
        the reply does not say."""
        import httpx

        body = {
            "input_ids": [token],
            "sampling_params": {"max_new_tokens": 1, "temperature": 0},
            "return_logprob": True,
            "token_ids_logprob": [vocab],
        }
        try:
            r = self.http.post(self.url + "/generate", json=body, timeout=self.probe_seconds)
        except httpx.HTTPError:  # a probe: its failure only skips the check
            return None
        if r.status_code == 200:
            return vocab + 1  # accepted: the server's vocabulary holds id `vocab`
        found = _VOCAB_RANGE.search(r.text[:4096])
        return int(found.group(1)) if found else None

    def hidden(self, ids: list[int], hidden_size: int) -> torch.Tensor:
        """The prompt's hidden states [T, H] (float32), retried with jittered backoff.

        Raises:
            TrainError: the server cannot return them at all (flags, another model).
            RetryableError: still failing after the retries.
            BadReplyError: a reply that holds no usable states for this prompt.
        """
        body = {
            "input_ids": ids,
            "return_hidden_states": True,
            "sampling_params": {"max_new_tokens": 1, "temperature": 0},
        }
        return post_retried(
            self.http, self.url + "/generate", body, retries=self.retries, timeout=self.timeout,
            cap=BODY_BASE + BYTES_PER_VALUE * len(ids) * hidden_size,
            limits=f"for {len(ids)} x {hidden_size} hidden values",
            refuse=lambda status, head: _refusal(self.url, status, head),
            parse=lambda data: parse_hidden(data, len(ids), hidden_size, self.url),
        )  # fmt: skip


def _refusal(url: str, status: int, head: str) -> Exception:
    if "hidden states" in head or "return_hidden_states" in head:
        return TrainError(
            f"the server at {url} does not return hidden states (it refuses "
            "return_hidden_states: launched without the flag); relaunch it with "
            "--enable-return-hidden-states"
        )
    return BadReplyError(f"HTTP {status}: {head}")


def parse_hidden(body: bytes, length: int, hidden_size: int, url: str) -> torch.Tensor:
    """``meta_info.hidden_states[0]`` of a ``/generate`` reply, checked: [T, H] float32."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        raise BadReplyError(f"the reply is not JSON: {snippet(body)}") from None
    if isinstance(doc, dict) and "error" in doc and "meta_info" not in doc:
        raise RetryableError(f"the server answered with an error: {snippet(str(doc['error']))}")
    meta = doc.get("meta_info") if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        raise BadReplyError(f"the reply is not a /generate result: {snippet(body)}")
    states = meta.get("hidden_states")
    if not isinstance(states, list) or not states or not isinstance(states[0], list):
        raise TrainError(
            f"the server at {url} sent no hidden states; relaunch it with "
            "--enable-return-hidden-states (SGLang's native server)"
        )
    rows = states[0]
    if len(rows) != length:
        cached = meta.get("cached_tokens")
        cause = (
            f"{cached} prompt tokens came from its radix cache: relaunch it with "
            "--disable-radix-cache"
            if isinstance(cached, int) and cached > 0
            else "it prefilled the prompt in chunks: relaunch it with --chunked-prefill-size -1"
        )
        raise TrainError(
            f"the server at {url} returned states for {len(rows)} of a prompt's {length} "
            f"tokens; {cause}"
        )
    try:
        hidden = torch.tensor(rows, dtype=torch.float32)  # [T, H]
    except (TypeError, ValueError):
        raise BadReplyError("meta_info.hidden_states[0] is not a matrix of numbers") from None
    if hidden.ndim != 2 or hidden.shape[1] != hidden_size:
        raise TrainError(
            f"the server at {url} returns hidden states of width "
            f"{hidden.shape[-1] if hidden.ndim else 0}, SOURCE's hidden_size is {hidden_size}: "
            "it serves another model (or captures EAGLE3's auxiliary layers: serve it without "
            "--speculative-algorithm); point --server at SOURCE's server"
        )
    if not bool(torch.isfinite(hidden).all()):
        raise BadReplyError("the hidden states hold NaN or infinity")
    return hidden


def check_server(
    server: SGLangServer,
    source: Path,
    ident: SourceIdentity,
    longest: int,
    probe: list[int],
) -> dict[str, Any]:
    """Refuse a server that cannot record SOURCE's states; returns what it says of itself.

    Checked where the server tells: hidden states enabled, radix cache off, prefill in
    one chunk, the same model (its ``config.json`` when the server's model path is a
    local directory, else architecture and model type), the same vocabulary size; then
    the states of one prompt, ``probe``, are asked for and checked as every reply is.
    """
    info = server.get_json("/server_info")
    model = server.get_json("/model_info") or server.get_json("/get_model_info") or {}
    if info is None:
        log.warning(
            "%s/server_info does not answer: the server's settings are checked on each reply",
            server.url,
        )
        info = {}
    if info and not (
        info.get("enable_return_hidden_states") or info.get("return_hidden_states_mode") == "full"
    ):
        raise TrainError(
            f"the server at {server.url} does not return hidden states; relaunch it with "
            "--enable-return-hidden-states"
        )
    if info.get("disable_radix_cache") is False:
        raise TrainError(
            f"the server at {server.url} runs with its radix cache, which leaves out the "
            "states of cached prefixes; relaunch it with --disable-radix-cache"
        )
    chunk = info.get("chunked_prefill_size")
    if isinstance(chunk, int) and 0 < chunk < longest:
        raise TrainError(
            f"the server at {server.url} prefills in chunks of {chunk} tokens and returns "
            f"only the last chunk's states, the longest sample has {longest}; relaunch it "
            f"with --chunked-prefill-size -1 (or at least {longest})"
        )
    _check_model(server.url, model or info, source, ident)
    vocab = server.vocab_size(probe[0], ident.vocab_size) if ident.vocab_size else None
    if vocab is None:
        log.warning("%s does not tell its vocabulary size; not checked", server.url)
    elif vocab != ident.vocab_size:
        got = f"more than {ident.vocab_size}" if vocab > ident.vocab_size else str(vocab)
        raise TrainError(
            f"the server at {server.url} serves a model with a vocabulary of {got} tokens, "
            f"SOURCE's has {ident.vocab_size}; point --server at SOURCE's server"
        )
    try:
        server.hidden(probe, ident.hidden_size)
    except (RetryableError, BadReplyError) as exc:
        raise TrainError(
            f"the server at {server.url} failed a first request for hidden states ({exc}); "
            "check its log, then re-run the command"
        ) from None
    return {
        "url": server.url,
        "model_path": model.get("model_path", info.get("model_path")),
        "dtype": info.get("dtype"),
        "version": info.get("version"),
    }


def _check_model(url: str, model: dict[str, Any], source: Path, ident: SourceIdentity) -> None:
    path = model.get("model_path")
    if not isinstance(path, str):
        return
    served = Path(path)
    if (served / "config.json").is_file():
        if sha256_file(served / "config.json") != ident.config_sha256:
            raise TrainError(
                f"the server at {url} serves {path}, whose config.json differs from "
                f"{source}'s; point --server at a server of {source}, or pass the served model"
            )
        return
    config = json.loads((source / "config.json").read_text())
    for key in ("architectures", "model_type"):
        theirs = model.get(key)
        if theirs is not None and config.get(key) is not None and theirs != config.get(key):
            raise TrainError(
                f"the server at {url} serves {path} ({key} {theirs}), {source} is "
                f"{config.get(key)}; point --server at a server of {source}"
            )


def store_dtype(requested: str, server_dtype: object, source: Path) -> str:
    """The dtype states are stored in: ``requested``, or (``auto``) the server's."""
    if requested != "auto":
        return _DTYPE_NAMES[requested]
    name = _DTYPE_NAMES.get(str(server_dtype))
    if name is None:  # the server's "auto": the model's own dtype, float32 when unknown
        try:
            config = json.loads((source / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
        name = _DTYPE_NAMES.get(str(config.get("torch_dtype", config.get("dtype"))), "float32")
    return name
