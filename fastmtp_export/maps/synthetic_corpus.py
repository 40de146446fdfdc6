"""Deterministic multilingual corpora and a real byte-level BPE tokenizer, offline.

Tests, benchmarks and the demo need self-distilled-looking data in several languages
and a Qwen2-style tokenizer, and nothing can be downloaded. Words are drawn from
per-language lists with a Zipf distribution (like real text: a few very frequent
tokens, a long tail), and the tokenizer is trained here with ``tokenizers`` using the
same byte-level BPE pipeline and chat special tokens as Qwen2 / MiMo.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: words per language; real vocabulary so BPE merges look like real merges
WORDS: dict[str, tuple[str, ...]] = {
    "en": _words(
        "the of and to in is that for it as was with be by on not he this are or his from at "
        "which but have an they you were her she there one all we their can has more when "
        "will would who so if no what out up time about into than them only other some new "
        "these may first then do any like my now over such our man me even most made after "
        "also did many before must through back years where much your way well down should "
        "because each just those people how too little state good very make world still own "
        "see men work long get here between both life being under never day same another know "
        "while last might us great old year off come since against go came right used take "
        "three model token draft decode speculative verify accept answer question reason "
        "proof number function value return list string python code data train test"
    ),
    "zh": tuple(
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之"
        "过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前"
        "所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全"
        "工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西"
        "再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目"
        "华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今"
        "京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃"
    ),
    "ru": _words(
        "и в не на я быть он с что а по это она этот к но они мы как из у который то за свой "
        "весь год от так о для ты же все тот мочь вы человек такой его сказать только или ещё "
        "бы себя один как уже до время если сам когда другой вот говорить наш мой знать стать "
        "при чтобы дело жизнь кто первый очень два день её новый рука даже во со раз где там "
        "под можно ну какой после их работа без самый потом надо хотеть ли слово идти большой "
        "должен место иметь ничто модель токен ответ вопрос код данные функция значение"
    ),
}


@functools.cache
def _cum_weights(n: int) -> list[float]:
    return list(itertools.accumulate(1.0 / (r + 1) for r in range(n)))


def zipf_words(lang: str, rng: random.Random, n: int) -> list[str]:
    """``n`` words of ``lang`` drawn with probability ~ 1/rank."""
    words = WORDS[lang]
    return rng.choices(words, cum_weights=_cum_weights(len(words)), k=n)


def sentence(lang: str, rng: random.Random, words: int = 12) -> str:
    sep = "" if lang == "zh" else " "
    end = "。" if lang == "zh" else "."
    return sep.join(zipf_words(lang, rng, words)) + end


def records(
    lang: str, n: int, *, seed: int = 0, chat: bool = False, sentences: int = 4
) -> Iterator[dict[str, object]]:
    """``n`` corpus records of ``lang``: ``{"text", "lang"}`` or chat form with a user turn."""
    rng = random.Random(f"{lang}:{seed}")
    for _ in range(n):
        text = " ".join(sentence(lang, rng) for _ in range(sentences))
        if chat:
            yield {
                "lang": lang,
                "messages": [
                    {"role": "user", "content": "QUESTION " + sentence(lang, rng, 6)},
                    {"role": "assistant", "content": text},
                ],
            }
        else:
            yield {"text": text, "lang": lang}


def write_jsonl(
    path: Path, rows: Iterator[dict[str, object]] | Sequence[dict[str, object]]
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


#: Qwen2 / MiMo special tokens, in Qwen2's order (ids right after the regular vocab)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: Qwen2's ChatML template without the system-prompt default (what chat records render to)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(
    out: Path, *, vocab_size: int = 2000, model_vocab_size: int | None = None, seed: int = 0
) -> Path:
    """Train a byte-level BPE tokenizer on :data:`WORDS` text and save an HF tokenizer dir.

    Writes ``tokenizer.json``, ``tokenizer_config.json`` (``eos_token: <|im_end|>``, a
    ChatML ``chat_template``),
    ``generation_config.json`` (``eos_token_id: [<|im_end|>, <|endoftext|>]``) and,
    with ``model_vocab_size``, a ``config.json`` whose ``vocab_size`` pads past the
    tokenizer like MiMo's 151680 > 151665.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [str(r["text"]) for lang in WORDS for r in records(lang, 300, seed=seed)]
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    config = {
        "eos_token": "<|im_end|>",
        "tokenizer_class": "Qwen2Tokenizer",
        "chat_template": CHATML,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]]}, indent=2)
    )
    if model_vocab_size is not None:
        (out / "config.json").write_text(json.dumps({"vocab_size": model_vocab_size}, indent=2))
    return out
