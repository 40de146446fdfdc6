"""Tiny MiMo-architecture targets whose greedy output is known: ``fastmtp-export demo``'s
model, and the test lane's and the benchmarks' fixtures.

The *oracle* target is a deterministic token chain: its residual blocks are scaled
down (``RESIDUAL_SCALE``) so the final hidden state is essentially the current token's
embedding, and ``lm_head`` row ``perm[t]`` is token ``t``'s embedding direction, so
greedy decoding follows ``t -> perm[t]``. Attention still contributes a little, so the
KV cache is exercised. The oracle MTP head reproduces the chain from the embedding half
of its input (``input_proj = [0 | I]``, zero ``o_proj`` / ``down_proj``): draft step
``k`` predicts ``perm`` of the token it is given, so speculation accepts nearly all.

Two "languages" split the vocabulary, each closed under ``perm``: ``en`` = ids
0..127 (EOS = 0 is on its cycle), ``zh`` = ids 128..254 (255 is a fixed point no token
leads to). A prompt stays in its language, and the other language's hot-token map
makes every draft wrong.

The *random* target has full-strength random weights (output depends on the whole
context) and a random MTP head: acceptance is low and every verify rejects, the
other half of the parity check.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from .synthetic import TINY, mimo_config, mimo_tensor_shapes

VOCAB = 256
EOS = 0
EN = list(range(0, 128))
ZH = list(range(128, 255))
#: what the fixture tokenizer's ids decode to: one Latin letter per en id, one Han per zh id
LATIN = (
    [chr(c) for c in range(ord("a"), ord("z") + 1)]
    + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    + [chr(c) for c in range(0xC0, 0x100) if c not in (0xD7, 0xF7)]  # Latin-1 letters
    + [chr(c) for c in range(0x100, 0x10D)]  # Latin Extended-A
)
HAN = [chr(c) for c in range(0x4E00, 0x4E00 + len(ZH))]
RESIDUAL_SCALE = 0.05
HEAD_SCALE = 8.0


def chain_permutation(seed: int = 0, groups: Sequence[Sequence[int]] = (EN, ZH)) -> list[int]:
    """``perm[t]``: one cycle through each group (default ``EN`` with EOS, then ``ZH``);
    ids in no group (255) are fixed points."""
    rng = random.Random(seed)
    perm = list(range(VOCAB))
    for ids in groups:
        order = list(ids)
        rng.shuffle(order)
        for a, b in zip(order, order[1:] + order[:1], strict=True):
            perm[a] = b
    return perm


def greedy_chain(prompt_last: int, n: int, perm: list[int]) -> list[int]:
    """The oracle's greedy continuation: up to ``n`` tokens, ending at EOS if reached."""
    out, t = [], prompt_last
    for _ in range(n):
        t = perm[t]
        out.append(t)
        if t == EOS:
            break
    return out


def config() -> dict[str, object]:
    """A Qwen2 config SGLang loads as ``MiMoForCausalLM`` without remote code (ref. §14.3)."""
    cfg = mimo_config({**TINY, "vocab_size": VOCAB})
    cfg.pop("auto_map", None)
    cfg.update(
        model_type="qwen2",
        torch_dtype="float32",
        eos_token_id=EOS,
        bos_token_id=EOS,
        max_position_embeddings=1024,
    )
    return cfg


def _weights(
    cfg: dict[str, object],
    *,
    oracle: bool,
    seed: int,
    residual: float,
    groups: Sequence[Sequence[int]] = (EN, ZH),
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = mimo_tensor_shapes(cfg)
    h = int(cfg["hidden_size"])  # type: ignore[call-overload]
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            value = torch.ones(shape)  # [H]
        else:
            value = torch.randn(shape, generator=gen) * (shape[-1] ** -0.5)  # fan-in scaled
        out[name] = value
    embed = torch.randn(VOCAB, h, generator=gen)  # [V, H]
    out["model.embed_tokens.weight"] = embed
    if not oracle:
        return out
    perm = chain_permutation(seed, groups)
    unit = embed / embed.norm(dim=-1, keepdim=True)  # [V, H]
    head = torch.zeros(VOCAB, h)  # [V, H]
    for t in range(VOCAB):
        head[perm[t]] = unit[t] * HEAD_SCALE
    out["lm_head.weight"] = head
    for name in out:
        if name.startswith("model.layers.") and name.endswith(
            ("o_proj.weight", "down_proj.weight")
        ):
            out[name] = out[name] * residual
    p = "model.mtp_layers.0."
    proj = torch.zeros(h, 2 * h)  # [H, 2H]: input order is [hidden, token]
    proj[:, h:] = torch.eye(h)
    out[p + "input_proj.weight"] = proj
    out[p + "self_attn.o_proj.weight"] = torch.zeros(h, h)  # [H, Q]
    out[p + "mlp.down_proj.weight"] = torch.zeros(h, int(cfg["intermediate_size"]))  # type: ignore[call-overload]
    return out


def write_target(
    path: Path,
    *,
    oracle: bool,
    seed: int = 0,
    residual: float = RESIDUAL_SCALE,
    groups: Sequence[Sequence[int]] = (EN, ZH),
) -> Path:
    """A target checkpoint (trunk + MTP layer) in ``path``; returns ``path``.

    ``residual`` scales the oracle's residual blocks: larger values make the target
    stray from the chain (context matters more), so the copy draft is only partly right.
    ``groups``: the oracle's "languages", each closed under its chain (EOS in the first).
    """
    path.mkdir(parents=True, exist_ok=True)
    cfg = config()
    weights = _weights(cfg, oracle=oracle, seed=seed, residual=residual, groups=groups)
    tensors = {k: v.contiguous() for k, v in weights.items()}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": EOS}))
    return path


def write_char_tokenizer(path: Path) -> Path:
    """A fast tokenizer for the oracle vocabulary: ids 1..127 are Latin letters, 128..254 Han.

    Word-level over single characters (not BPE) so that every id is exactly one letter
    of one script: text in a language tokenizes into that language's half, which is
    what the plugin's detection-from-text test needs.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    assert len(LATIN) == len(EN) - 1
    vocab = {"<|endoftext|>": EOS, "<unk>": 255}
    vocab.update({ch: i for ch, i in zip(LATIN, EN[1:], strict=True)})
    vocab.update({ch: i for ch, i in zip(HAN, ZH, strict=True)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|endoftext|>",
                "unk_token": "<unk>",
                "model_max_length": 1024,
                # chat requests (the serving bench) send the bare content
                "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
            }
        )
    )
    return path


def text_of(ids: tuple[int, ...] | list[int]) -> str:
    """The fixture text whose tokenization is ``ids`` (no EOS inside)."""
    return "".join(LATIN[i - 1] if i in EN else HAN[i - ZH[0]] for i in ids)
