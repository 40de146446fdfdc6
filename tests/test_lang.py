"""Script-based language detection on real text."""

from __future__ import annotations

import pytest

from fastmtp_export.lang import normalize_lang, script_language


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
