"""Seams 7 and 8: language detection in the tokenizer manager.

7. ``TokenizerManager._create_tokenized_object`` (BEFORE): detect the language of the
   prompt text (or of its decoded ids, for chat requests) when the client gave no
   ``draft_lang``, and store it in the request's ``custom_params``.
8. ``TokenizerManager.__init__`` (AFTER): start fetching a repo-id draft's manifest and
   maps in a background thread, so that seam 7, on SGLang's event loop, never waits on
   the Hub: until the fetch is done, requests are not detected (one warning).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastmtp_export.errors import FastMTPError
from fastmtp_export.maps.lang import SCRIPT_LANGUAGES, LanguageDetector

from ..choice import PARAM
from ..draft_source import PendingError, resolve_draft, start_resolving
from ..settings import artifact_maps
from .report import failed_once

log = logging.getLogger("sglang_patch")

#: prompt ids decoded for detection when a request has no text (the detector reads the
#: last 4096 characters; 1024 ids cover that in every tokenizer we know)
DETECT_TAIL_IDS = 1024


def detect_before(manager: Any, obj: Any, input_text: Any, *args: Any, **kwargs: Any) -> None:
    """Fill ``custom_params["draft_lang"]`` from the prompt text when the client did not.

    Runs in the tokenizer manager, the last place that still has the text. A request that
    arrives as token ids (``/v1/chat/completions`` renders the chat template to ids, and
    clients may send ``input_ids``) is detected from its last ``DETECT_TAIL_IDS`` ids,
    decoded with the server's tokenizer. Without a tokenizer (``--skip-tokenizer-init``)
    or maps in the artifact, requests are left alone. Never fails a request.
    """
    try:
        _detect(manager, obj, input_text, *args, **kwargs)
    except Exception:
        failed_once("language detection")
    return None


def _detect(manager: Any, obj: Any, input_text: Any, *args: Any, **kwargs: Any) -> None:
    params = getattr(obj, "sampling_params", None)
    if not isinstance(params, dict):
        return
    custom = params.get("custom_params")
    if isinstance(custom, dict) and PARAM in custom:
        return  # the client's choice wins
    args_ = manager.server_args
    detector = _detector(
        getattr(args_, "speculative_draft_model_path", None),
        getattr(args_, "speculative_draft_model_revision", None),
    )
    if detector is None:
        return
    text = input_text if isinstance(input_text, str) and input_text else None
    ids = args[0] if args else kwargs.get("input_ids")
    tokenizer = getattr(manager, "tokenizer", None)
    if text is None and isinstance(ids, list) and ids and tokenizer is not None:
        text = tokenizer.decode(ids[-DETECT_TAIL_IDS:], skip_special_tokens=False)
    if not isinstance(text, str) or not text:
        return
    lang = detector(last_user_turn(text))
    if lang is not None:
        params["custom_params"] = {**(custom if isinstance(custom, dict) else {}), PARAM: lang}


#: the start of a user turn in the chat templates we know: ChatML (Qwen, MiMo, SmolLM),
#: Llama 3, GLM, DeepSeek, Llama 2 / Mistral
_USER_TURN = re.compile(
    r"<\|im_start\|>user|<\|start_header_id\|>user<\|end_header_id\|>|<\|user\|>"
    r"|<｜User｜>|\[INST\]"
)
#: special-token markup left in decoded text (with the role names that follow it):
#: <|im_start|>assistant, <|start_header_id|>...<|end_header_id|>, <|...|>, <｜...｜>, [/INST]
_MARKUP = re.compile(
    r"<\|im_start\|>\w*|<\|start_header_id\|>\w*<\|end_header_id\|>"
    r"|<\|[^|<>]{0,40}\|>|<｜[^｜<>]{0,40}｜>|\[/INST\]"
)


def last_user_turn(text: str) -> str:
    """The text of the last user turn of a rendered chat prompt (``text`` itself when
    it holds no turn marker), without special-token markup.

    A chat template's system prompt is usually English ("You are a helpful assistant"),
    and it outweighs a short Chinese question when the whole prompt is read: SmolLM2's
    Chinese chat requests were detected as Latin-script (measured, docs/sglang_patch.md).
    """
    turns = _USER_TURN.split(text)
    tail = turns[-1] if len(turns) > 1 else text
    return _MARKUP.sub(" ", tail)


def tokenizer_manager_init_after(result: Any, manager: Any, *args: Any, **kwargs: Any) -> Any:
    """Start fetching a repo-id draft's manifest and maps off the event loop; never fails."""
    try:
        args_ = manager.server_args
        if str(getattr(args_, "speculative_algorithm", None) or "").upper() in ("EAGLE", "NEXTN"):
            start_resolving(
                getattr(args_, "speculative_draft_model_path", None),
                getattr(args_, "speculative_draft_model_revision", None),
            )
    except Exception:
        failed_once("starting the draft's fetch")
    return result


#: detectors by (draft path, revision), once the draft's files are settled
_detectors: dict[tuple[str | None, str | None], LanguageDetector | None] = {}
_pending_said = False


def _detector(draft: str | None, revision: str | None) -> LanguageDetector | None:
    """The detector over the artifact's languages; ``None`` without maps, and while a
    repo-id draft's fetch is running (never waits: this runs on the event loop)."""
    global _pending_said
    key = (draft, revision)
    if key in _detectors:
        return _detectors[key]
    try:
        draft_dir = resolve_draft(draft, revision, wait=False)
        found = artifact_maps(draft_dir) if draft_dir is not None else None
    except PendingError as exc:
        if not _pending_said:
            _pending_said = True
            log.warning(
                "%s; requests are not language-detected until then (they draft with the "
                "default language; output unchanged)",
                exc,
            )
        return None
    except Exception:  # the scheduler reports a broken artifact; detection stays off
        found = None
    _detectors[key] = build_detector(sorted(found.maps)) if found is not None else None
    return _detectors[key]


def build_detector(langs: list[str]) -> LanguageDetector:
    """The detector over ``langs``: Unicode scripts, and py3langid among the Latin-script
    ones when the ``[langdetect]`` extra is installed (else every Latin-script request
    drafts as the first of them, ``en`` when mapped; said once)."""
    try:
        return LanguageDetector(langs, statistical=True, skip_unknown=True)
    except FastMTPError:
        latin = [lang for lang in langs if lang not in SCRIPT_LANGUAGES]
        if len(latin) > 1:
            log.warning(
                "fastmtp: %s share the Latin script and py3langid is not installed; "
                "Latin-script requests without draft_lang draft as %s (pip install "
                "'fastmtp-export[langdetect]' to tell them apart)",
                ",".join(latin),
                "en" if "en" in latin else latin[0],
            )
        return LanguageDetector(langs)
