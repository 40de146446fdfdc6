"""The transformers tokenizer ``train`` and ``eval`` share: chat template kept, no remote
code, and one line naming the caller's fix when a directory holds no tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastmtp_export.errors import TokenizerError
from fastmtp_export.maps.tokenizer import load_auto_tokenizer, load_tokenizer


def test_loads_the_same_ids_as_the_fast_tokenizer_and_the_chat_template(
    bpe_tokenizer: Path,
) -> None:
    tok = load_auto_tokenizer(bpe_tokenizer, fix="unused")
    text = "Hello world, the cat sat.\n"
    assert (
        tok(text, add_special_tokens=False)["input_ids"]
        == load_tokenizer(bpe_tokenizer).encode_batch([text])[0]
    )
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered.endswith("<|im_start|>assistant\n")


def test_no_tokenizer_is_one_line_with_the_callers_fix(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(TokenizerError) as err:
        load_auto_tokenizer(tmp_path, fix="pass --tokenizer DIR")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"no usable tokenizer in {tmp_path} (")
    assert msg.endswith("; pass --tokenizer DIR")


def test_a_broken_tokenizer_file_is_one_line(bpe_tokenizer: Path, tmp_path: Path) -> None:
    for name in ("tokenizer_config.json", "config.json"):
        (tmp_path / name).write_bytes((bpe_tokenizer / name).read_bytes())
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(TokenizerError) as err:
        load_auto_tokenizer(tmp_path, fix="fix it")
    assert "\n" not in str(err.value)
    assert str(err.value).endswith("; fix it")
