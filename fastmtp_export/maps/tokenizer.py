"""A local Hugging Face fast tokenizer, plus the ids generation must be able to draft.

Loaded through ``tokenizers`` directly (``tokenizer.json``): it is the same Rust
tokenizer ``transformers`` wraps, without importing transformers, and its batch encode
runs on every core with the GIL released.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoints.checkpoint import language_config
from ..errors import TokenizerError
from .eos import model_eos_ids, read_json

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
#: files that hold a vocabulary (fast, byte-level BPE, sentencepiece)
VOCAB_FILES = (TOKENIZER_FILE, "vocab.json", "tokenizer.model")


@dataclass(frozen=True)
class LocalTokenizer:
    """A loaded tokenizer and what the token-map builder needs to know about it."""

    path: Path
    #: the ``tokenizer.json`` file (worker processes load it themselves)
    file: Path
    tokenizer: Tokenizer
    #: ids every map must contain (EOS / chat terminators), in discovery order
    eos_ids: tuple[int, ...]
    #: rows of the model's embedding / lm_head (>= the tokenizer's own size)
    vocab_size: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (BOS would skew counts)."""
        encs = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [e.ids for e in encs]


def load_tokenizer(
    path: Path,
    *,
    extra_eos: Iterable[str] = (),
    vocab_size: int | None = None,
) -> LocalTokenizer:
    """Load ``path/tokenizer.json`` and collect the EOS ids generation can emit.

    EOS ids come from ``tokenizer_config.json`` (``eos_token``), ``generation_config.json``
    and ``config.json`` (``eos_token_id``, int or list) in ``path``, and ``extra_eos``
    (token strings or ids). ``vocab_size`` defaults to ``config.json``'s (the model's
    embedding rows, e.g. 151680 for MiMo) or else the tokenizer's own size.

    Raises:
        TokenizerError: no ``tokenizer.json``, unparsable, or no EOS id found.
    """
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise TokenizerError(
            f"{path} is not a tokenizer: no {TOKENIZER_FILE} found; pass a local Hugging "
            "Face tokenizer directory (e.g. the model directory)"
        )
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise TokenizerError(
            f"{file} is not a valid fast tokenizer ({str(exc)[:120]}); pass a Hugging Face "
            "tokenizer directory"
        ) from exc
    root = file.parent
    config = read_json(root / "config.json")
    tok_config = read_json(root / "tokenizer_config.json")

    eos: list[int] = []
    token = tok_config.get("eos_token")
    if isinstance(token, dict):
        token = token.get("content")
    names = [token] if isinstance(token, str) else []
    for name in [*names, *extra_eos]:
        tid = int(name) if name.isdigit() else tok.token_to_id(name)
        if tid is None:
            raise TokenizerError(
                f"EOS token {name!r} is not in {file}'s vocabulary; check --eos or "
                "tokenizer_config.json"
            )
        eos.append(tid)
    eos = list(dict.fromkeys(eos + model_eos_ids(root, config)))
    if not eos:
        raise TokenizerError(
            f"no EOS token found for {path} (tokenizer_config.json eos_token, "
            "generation_config.json eos_token_id); pass --eos TOKEN"
        )
    own = tok.get_vocab_size(with_added_tokens=True)
    size = vocab_size or int(language_config(config).get("vocab_size") or own)
    if size < own or max(eos) >= size:
        raise TokenizerError(
            f"vocab size {size} is smaller than the tokenizer ({own} tokens, EOS ids "
            f"{eos}); pass the model's --vocab-size"
        )
    return LocalTokenizer(path, file, tok, tuple(eos), size)


def load_auto_tokenizer(path: Path, *, fix: str) -> Any:
    """transformers' tokenizer for ``path``, chat template included, never remote code.

    ``train`` and ``eval`` need what ``load_tokenizer`` leaves out (the chat template,
    ``apply_chat_template``), so they load through transformers; ``fix`` is the caller's
    advice for a directory without a usable tokenizer.

    Raises:
        TokenizerError: transformers is not installed, or ``path`` has no usable tokenizer.
    """
    try:
        import transformers
        from transformers import AutoTokenizer
    except ImportError:
        raise TokenizerError(
            "loading the model's tokenizer needs transformers: pip install 'fastmtp-export[eval]'"
        ) from None
    # transformers 5 builds an empty tokenizer from a config alone: ask for the files first
    if path.is_dir() and not any((path / name).is_file() for name in VOCAB_FILES):
        raise TokenizerError(
            f"no usable tokenizer in {path} (none of {', '.join(VOCAB_FILES)}); {fix}"
        )
    # transformers warns, with a traceback, that a custom model type (``mimo``) has no
    # config class while it looks for the tokenizer's: noise, since the tokenizer loads
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise TokenizerError(f"no usable tokenizer in {path} ({reason}); {fix}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
