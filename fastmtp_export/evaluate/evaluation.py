"""``fastmtp-export eval``: a draft's acceptance per language and vocabulary mode.

Every prompt is decoded greedily by the target alone (the reference output), then by
the chain speculative decoder (:mod:`.speculate`) once per vocabulary mode:

- ``full``: the draft scores the whole vocabulary;
- ``auto``: each prompt's language map, the default map for other languages (what
  sglang_patch does);
- ``LANG``: one static map for every prompt (what stock SGLang's
  ``--speculative-token-map`` does);
- ``union``: the artifact's union map for every prompt (stock SGLang with one map of
  several languages, :mod:`..maps.union`).

Figures use SGLang's definitions, so they predict ``meta_info``: tau is output tokens /
verify steps (``spec_accept_length``, bonus token included); position p's acceptance is
the share of verify steps that accepted at least p drafts (from the same counts as
``spec_correct_drafts_histogram``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifact.eval_record import AcceptanceStats
from ..errors import EvalError
from ..maps.lang import LanguageDetector, normalize_lang

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


def position_rates(hist: Sequence[int]) -> tuple[list[float | None], list[float | None]]:
    """(unconditional, conditional) acceptance per draft position from a histogram.

    ``hist[j]`` counts verify steps that accepted exactly j drafts (j = 0..K).
    """
    k = len(hist) - 1
    at_least = [sum(hist[j:]) for j in range(k + 1)]  # at_least[0]: every verify step
    uncond = [at_least[p] / at_least[0] if at_least[0] else None for p in range(1, k + 1)]
    cond = [at_least[p] / at_least[p - 1] if at_least[p - 1] else None for p in range(1, k + 1)]
    return uncond, cond


@dataclass(frozen=True)
class EvalPrompt:
    line: int
    lang: str  # a language code, or UNKNOWN
    ids: list[int]


def read_prompts(
    path: Path,
    tokenizer: Any,
    detector: LanguageDetector,
    limit: int | None = None,
) -> list[EvalPrompt]:
    """Parse ``{"prompt"|"messages"|"input_ids", "lang"?}`` JSONL into token ids.

    ``messages`` go through the tokenizer's chat template (with the generation prompt);
    ``prompt`` is encoded as is. Without ``lang``, the language is detected from the
    text as sglang_patch would.

    Raises:
        EvalError: unreadable file, a bad line (named by number), no prompts.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"cannot read --prompts {path} ({exc}); pass a UTF-8 JSONL file") from exc
    out: list[EvalPrompt] = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        if limit is not None and len(out) >= limit:
            break
        where = f"{path}:{n}"
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise EvalError(
                f"{where} is not JSON ({exc.args[0]}); fix or remove the line"
            ) from None
        if not isinstance(doc, dict):
            raise EvalError(f"{where} is not a JSON object; use {{'prompt': ..., 'lang': ...}}")
        ids, text = _prompt_ids(doc, tokenizer, where)
        out.append(EvalPrompt(n, _language(doc, text, detector, where), ids))
    if not out:
        raise EvalError(f"{path} has no prompts; add JSONL records such as {{'prompt': 'Hi'}}")
    return out


def _prompt_ids(doc: dict[str, Any], tokenizer: Any, where: str) -> tuple[list[int], str]:
    keys = [k for k in ("prompt", "messages", "input_ids") if k in doc]
    if len(keys) != 1:
        raise EvalError(f"{where} needs exactly one of 'prompt', 'messages', 'input_ids'")
    value = doc[keys[0]]
    if keys[0] == "prompt":
        if not isinstance(value, str) or not value:
            raise EvalError(f"{where}: 'prompt' must be a non-empty string")
        return list(tokenizer(value)["input_ids"]), value
    if keys[0] == "messages":
        ok = isinstance(value, list) and len(value) > 0
        if not ok or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in value
        ):
            raise EvalError(
                f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects"
            )
        try:
            rendered = tokenizer.apply_chat_template(
                value, add_generation_prompt=True, tokenize=True
            )
        except Exception as exc:  # jinja / missing template: report, never a traceback
            raise EvalError(
                f"{where}: the tokenizer's chat template failed ({exc}); use 'prompt' records "
                "or a tokenizer with a chat template (--tokenizer)"
            ) from exc
        ids = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
        return list(ids), " ".join(m["content"] for m in value)
    if not (
        isinstance(value, list)
        and value
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
    ):
        raise EvalError(f"{where}: 'input_ids' must be a non-empty list of token ids")
    return list(value), tokenizer.decode(value) if tokenizer is not None else ""


def _language(doc: dict[str, Any], text: str, detector: LanguageDetector, where: str) -> str:
    if "lang" in doc:
        code = normalize_lang(doc["lang"])
        if code is None:
            raise EvalError(
                f"{where}: 'lang' {doc['lang']!r} is not a language code such as en or zh"
            )
        return code
    return detector(text) or UNKNOWN


def summarise(gens: Sequence[Any], k: int, greedy_seconds: float) -> AcceptanceStats:
    """Stats over :class:`~.speculate.Generation` results."""
    hist = [0] * (k + 1)
    for g in gens:
        for j in g.accepted:
            hist[j] += 1
    tokens = sum(len(g.output) for g in gens)
    verifies = sum(g.verifies for g in gens)
    drafted = sum(g.drafted for g in gens)
    draft_s = sum(g.draft_seconds for g in gens)
    spec_s = sum(g.seconds for g in gens)
    uncond, cond = position_rates(hist)
    return AcceptanceStats(
        prompts=len(gens),
        output_tokens=tokens,
        verify_steps=verifies,
        accept_length=tokens / verifies if verifies else None,
        histogram=hist,
        position_acceptance=uncond,
        conditional_acceptance=cond,
        draft_tokens_per_s=drafted / draft_s if draft_s > 0 else None,
        speedup=greedy_seconds / spec_s if spec_s > 0 else None,
    )


def first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def vocab_modes(
    requested: Sequence[str], languages: Sequence[str], union: bool = False
) -> list[str]:
    """Validated modes; the default is ``full``, plus ``auto`` when the artifact has maps
    and ``union`` when it ships a union map.

    Raises:
        EvalError: an unknown mode, or a map mode on an artifact without that map.
    """
    if not requested:
        return ["full", "auto", *(["union"] if union else [])] if languages else ["full"]
    out: list[str] = []
    for raw in requested:
        mode = raw if raw in ("full", "auto", "union") else normalize_lang(raw)
        if mode is None or (mode not in ("full", "auto", "union") and mode not in languages):
            have = ", ".join(languages) if languages else "none: export with --token-maps"
            raise EvalError(
                f"--vocab {raw}: choose full, auto, union or a language with a map (maps: {have})"
            )
        if mode == "auto" and not languages:
            raise EvalError("--vocab auto needs token maps in the artifact (export --token-maps)")
        if mode == "union" and not union:
            raise EvalError(
                "--vocab union needs a union map in the artifact; build one with "
                "token-map build --union N and export with --token-maps DIR"
            )
        if mode not in out:
            out.append(mode)
    return out
