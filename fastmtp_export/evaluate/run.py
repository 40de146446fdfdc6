"""Run an evaluation end to end: checks, loading, decoding every prompt in every mode.

Everything that can be wrong with the input (artifact, base, prompts, modes) is
checked before the target is loaded, so a mistake costs seconds, not a model load.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util.hashing import sha256_file
from .._util.progress import progress
from .._version import __version__
from ..artifact.eval_record import AcceptanceStats, EvaluationInfo, Mismatch, ModeResult
from ..errors import EvalError
from .evaluation import EvalPrompt, first_difference, read_prompts, summarise, vocab_modes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    tokenizer: Path | None = None
    vocab: Sequence[str] = ()
    k: int = 3
    max_new_tokens: int = 128
    device: str = "auto"
    dtype: str = "auto"
    limit: int | None = None
    show_progress: bool | None = None


@dataclass
class Prepared:
    """Everything an evaluation reads, checked, with the target and draft loaded."""

    manifest: Any
    info: Any  # target.PairInfo
    vocab: int
    maps: dict[str, list[int]]  # language (and "union") -> ids
    prompts: list[EvalPrompt]
    eos: set[int]
    device: Any
    dtype: Any
    target: Any  # speculate.Target
    mtp: Any  # reference.DraftHead
    modes: list[str]  # the validated --vocab modes
    rankings: dict[str, Any]  # language -> maps.ranking.Ranking, where the artifact ships one


def prepare(artifact: Path, base: Path, prompts_file: Path, opts: EvalOptions) -> Prepared:
    """Check every input, then load the target and the draft (the slow part, last).

    Raises:
        ArtifactError: the artifact is invalid (as ``inspect`` reports it).
        EvalError: base, prompts or options unusable.
        TokenizerError: no usable tokenizer at ``--tokenizer`` or the base.
        SourceError: the base's weights cannot be loaded.
    """
    from ..artifact.inspect import inspect_artifact
    from ..checkpoints.checkpoint import language_config
    from ..heads.registry import has_head, no_head
    from ..maps.eos import model_eos_ids
    from ..maps.lang import SCRIPT_LANGUAGES, LanguageDetector
    from ..maps.tokenizer import load_auto_tokenizer
    from .reference import artifact_head
    from .speculate import Target
    from .target import check_pair, load_target_model, pick_device, pick_dtype

    if opts.k < 1 or opts.max_new_tokens < 1:
        raise EvalError("--k and --max-new-tokens must be at least 1")
    if not prompts_file.is_file():
        raise EvalError(f"--prompts {prompts_file} does not exist; pass a JSONL prompt file")
    report = inspect_artifact(artifact)
    report.raise_for_problems()
    manifest = report.manifest
    if not has_head(manifest.family):
        raise EvalError(no_head(manifest.family))
    info = check_pair(base, artifact, manifest)
    vocab = int(language_config(info.config)["vocab_size"])
    maps_info = manifest.token_maps
    langs = sorted(maps_info.languages) if maps_info else []
    modes = vocab_modes(opts.vocab, langs, union=bool(maps_info and maps_info.union))
    maps, rankings = artifact_maps(artifact, manifest, vocab)
    tokenizer = load_auto_tokenizer(
        opts.tokenizer or base, fix="pass the tokenizer directory with --tokenizer"
    )
    detector = LanguageDetector(langs or sorted({*SCRIPT_LANGUAGES, "en"}))
    prompts = read_prompts(prompts_file, tokenizer, detector, opts.limit)
    if bad := next((p for p in prompts if max(p.ids) >= vocab), None):
        raise EvalError(
            f"{prompts_file}:{bad.line} has token id {max(bad.ids)} >= the vocab size {vocab}; "
            "use the base model's tokenizer (--tokenizer)"
        )
    eos = set(model_eos_ids(base, info.config))
    if getattr(tokenizer, "eos_token_id", None) is not None:
        eos.add(int(tokenizer.eos_token_id))

    device = pick_device(opts.device)
    dtype = pick_dtype(opts.dtype, device)
    log.info("loading %s on %s (%s)", base, device, str(dtype).removeprefix("torch."))
    model = load_target_model(info.path, info.config, manifest.family, device, dtype)
    return Prepared(
        manifest, info, vocab, maps, prompts, eos, device, dtype,
        Target(model), artifact_head(model, artifact, dtype, manifest.family), modes, rankings,
    )  # fmt: skip


def artifact_maps(
    artifact: Path, manifest: Any, vocab: int
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """(``lang`` and ``"union"`` -> ids, ``lang`` -> ranking) of a checked artifact."""
    from ..maps.ranking import load_ranking
    from ..maps.token_map import load_token_map

    info = manifest.token_maps
    langs = info.languages.items() if info else []
    maps = {lang: load_token_map(artifact / e.file, vocab_size=vocab) for lang, e in langs}
    if info is not None and info.union is not None:
        maps["union"] = load_token_map(artifact / info.union.file, vocab_size=vocab)
    rankings = {
        lang: load_ranking(artifact / e.ranking.file, vocab_size=vocab)
        for lang, e in langs
        if e.ranking is not None
    }
    return maps, rankings


def evaluate(artifact: Path, base: Path, prompts_file: Path, opts: EvalOptions) -> EvaluationInfo:
    """Measure ``artifact`` against ``base`` on ``prompts_file``.

    Raises:
        ArtifactError, EvalError, TokenizerError, SourceError: see :func:`prepare`.
    """
    import torch

    from .speculate import Draft, greedy, speculate

    p = prepare(artifact, base, prompts_file, opts)
    modes, maps_info = p.modes, p.manifest.token_maps
    info, prompts, eos, device, dtype = p.info, p.prompts, p.eos, p.device, p.dtype
    target, mtp = p.target, p.mtp
    # [K] each; the union's [N]
    hot = {lang: torch.tensor(ids, device=device) for lang, ids in p.maps.items()}
    full = Draft(mtp)
    drafts = {lang: Draft(mtp, ids) for lang, ids in hot.items()}
    default = maps_info.default_lang if maps_info else None

    def draft_for(mode: str, prompt: EvalPrompt) -> Draft:
        if mode == "full":
            return full
        if mode == "auto":
            return drafts[prompt.lang if prompt.lang in drafts else str(default)]
        return drafts[mode]

    gens: dict[str, list[tuple[EvalPrompt, Any]]] = {m: [] for m in modes}
    greedy_s: dict[int, float] = {}
    mismatches: list[Mismatch] = []
    with progress(len(prompts), "eval", unit="prompt", enabled=opts.show_progress) as advance:
        for prompt in prompts:
            ref = greedy(target, prompt.ids, opts.max_new_tokens, eos)
            greedy_s[prompt.line] = ref.seconds
            for mode in modes:
                gen = speculate(
                    target, draft_for(mode, prompt), prompt.ids, opts.max_new_tokens, eos, opts.k
                )
                gens[mode].append((prompt, gen))
                if gen.output != ref.output:
                    at = first_difference(gen.output, ref.output)
                    mismatches.append(Mismatch(line=prompt.line, vocab=mode, position=at))
            advance(1)

    def stats(pairs: list[tuple[EvalPrompt, Any]]) -> AcceptanceStats:
        return summarise([g for _, g in pairs], opts.k, sum(greedy_s[p.line] for p, _ in pairs))

    results = {}
    for mode, pairs in gens.items():
        by_lang: dict[str, list[tuple[EvalPrompt, Any]]] = {}
        for pair in pairs:
            by_lang.setdefault(pair[0].lang, []).append(pair)
        results[mode] = ModeResult(
            all=stats(pairs),
            languages={lang: stats(by_lang[lang]) for lang in sorted(by_lang)},
        )
    return EvaluationInfo(
        base_model=str(base.absolute()),
        base_config_sha256=info.config_sha256,
        device=_device_name(device),
        dtype=str(dtype).removeprefix("torch."),
        k=opts.k,
        max_new_tokens=opts.max_new_tokens,
        prompts_file=prompts_file.name,
        prompts_sha256=sha256_file(prompts_file),
        prompts=len(prompts),
        lossless=not mismatches,
        mismatches=mismatches,
        modes=results,
        tool_version=__version__,
    )


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
