"""Script-based language detection on real text."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fastmtp_export.errors import FastMTPError
from fastmtp_export.maps.lang import (
    SCRIPT_LANGUAGES,
    LanguageDetector,
    normalize_lang,
    script_language,
)


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Explain speculative decoding in two sentences.", "en"),
        ("请用两句话解释推测解码。", "zh"),
        ("推測デコードを二文で説明してください。", "ja"),
        ("추측 디코딩을 두 문장으로 설명해 주세요.", "ko"),
        ("Объясните спекулятивное декодирование.", "ru"),
        ("用 Python 写一个 quicksort 函数", "zh"),  # Chinese prompt quoting code
        ("東京", "zh"),  # kanji without kana reads as Chinese: scripts cannot tell
        ("def f(x): return x + 1  # 返回", "en"),  # one Han character in code
    ],
)
def test_script_language(text: str, lang: str) -> None:
    assert script_language(text) == lang


def test_nothing_to_say() -> None:
    assert script_language("12345 !!! ...") is None
    assert script_language("") is None
    assert script_language("Bonjour tout le monde", latin=None) is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("zh-CN", "zh"),
        ("ZH", "zh"),
        ("yue", "zh"),
        ("en_US", "en"),
        ("eng", "en"),
        ("", None),
        ("english!", None),
        (3, None),
        (None, None),
        (["zh"], None),
    ],
)
def test_normalize_lang_never_raises(raw: object, code: str | None) -> None:
    assert normalize_lang(raw) == code


PROMPTS = Path(__file__).parents[1] / "data" / "lang_prompts.jsonl"


def _labelled() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines()]
    return [(r["lang"], r["text"]) for r in rows]


def test_labelled_set_covers_six_languages() -> None:
    assert len({lang for lang, _t in _labelled()}) >= 6


def test_script_pass_is_exact_outside_latin_languages() -> None:
    rows = _labelled()
    detect = LanguageDetector(sorted({lang for lang, _t in rows}))
    for lang, text in rows:
        if lang in SCRIPT_LANGUAGES or lang == "en":
            assert detect(text) == lang, text
        else:  # Latin script alone cannot tell German from English
            assert detect(text) == "en", text


def test_statistical_detector_separates_latin_languages() -> None:
    rows = _labelled()
    detect = LanguageDetector(sorted({lang for lang, _t in rows}), statistical=True)
    right = sum(detect(text) == lang for lang, text in rows)
    assert right / len(rows) >= 0.95, right


def test_unconfigured_languages_are_none() -> None:
    detect = LanguageDetector(["en", "zh"])
    assert detect("추측 디코딩을 두 문장으로 설명해 주세요.") is None
    assert detect("12345") is None
    assert detect("请解释") == "zh"
    assert LanguageDetector(["zh"])("plain English text") is None  # no Latin language configured


def test_long_prompts_are_judged_by_their_end() -> None:
    text = "请解释这个问题。" * 2000 + "Now answer in English, please. " * 200
    assert len(text) > 4096
    assert script_language(text) == "en"


def test_missing_statistical_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "py3langid", None)
    monkeypatch.setitem(sys.modules, "py3langid.langid", None)
    with pytest.raises(FastMTPError, match=r"fastmtp-export\[langdetect\]"):
        LanguageDetector(["en", "de"], statistical=True)


def test_statistical_detection_skips_languages_it_cannot_tell() -> None:
    """Code (``py``) has no script and py3langid has no class for it: with skip_unknown it
    is left to the client's draft_lang, and the natural languages are still told apart."""
    with pytest.raises(FastMTPError, match=r"cannot detect \['py'\]"):
        LanguageDetector(["en", "fr", "py", "zh"], statistical=True)
    det = LanguageDetector(["en", "fr", "py", "zh"], statistical=True, skip_unknown=True)
    assert det("Explique le cycle de l'eau à un enfant de dix ans, s'il te plaît.") == "fr"
    assert det("Explain the water cycle to a ten-year-old, please.") == "en"
    assert det("请用简单的话解释水循环。") == "zh"
    assert det("def f(x):\n    return x + 1") != "py"  # code is never detected


def test_the_plugin_detector_tells_latin_languages_apart_or_says_why_not(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fastmtp_export.maps import lang as lang_mod
    from sglang_patch.hooks.detect import build_detector

    det = build_detector(["de", "en", "py", "zh"])
    assert det("Erkläre einem zehnjährigen Kind den Wasserkreislauf, bitte.") == "de"

    def missing(*_a: object, **_k: object) -> None:
        raise FastMTPError("statistical language detection needs py3langid")

    monkeypatch.setattr(lang_mod, "_py3langid", missing)
    with caplog.at_level("WARNING"):
        det = build_detector(["de", "en", "py", "zh"])
    assert det("Erkläre einem zehnjährigen Kind den Wasserkreislauf, bitte.") == "en"
    assert "py3langid is not installed" in caplog.text
    assert "fastmtp-export[langdetect]" in caplog.text


@pytest.mark.parametrize(
    "prompt",
    [
        # ChatML with SmolLM2's English default system prompt (measured: detected as Latin)
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\n请用简单的话解释水循环。<|im_end|>\n"
        "<|im_start|>assistant\n",
        # Llama 3
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful, "
        "respectful and honest assistant. Always answer as helpfully as possible.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n水循环是什么？<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ],
)
def test_chat_prompts_are_detected_from_the_last_user_turn(prompt: str) -> None:
    from sglang_patch.hooks.detect import last_user_turn

    det = LanguageDetector(["en", "zh"])
    assert det(prompt) == "en"  # the whole rendered prompt: the system prompt wins
    assert det(last_user_turn(prompt)) == "zh"
    assert "assistant" not in last_user_turn(prompt)
    assert last_user_turn("no markers here") == "no markers here"
