"""``eval --choose``: which deployable draft vocabulary serves a traffic mix best.

For an artifact, prompts (each with its language) and a traffic mix (request shares
per language), every option a user can deploy is scored from one greedy pass per
prompt (:mod:`.score`, exact for the static options):

- ``full``: stock SGLang with the whole vocabulary (V head rows: the reference, not a
  candidate at equal cost);
- ``map:LANG``: stock SGLang's ``--speculative-token-map`` with one language's map (K
  rows), served to every language;
- ``union:N``: stock SGLang with one union map of N = K_u rows (the artifact's union
  when its size is K_u, else one built here from the rankings with equal weights);
- ``plugin:N``: sglang_patch at K_u = N, each language alone (its set's slots);
- ``plugin:N@C``: sglang_patch with C requests in flight drawn from the mix: per
  step, the batch's set is chosen as the bank chooses it
  (:class:`~..maps.draft_sets.SetTable`) and the request drafts over that set. A
  Monte Carlo over batch compositions (``walks`` per prompt, seeded), so a model of
  the server, not a measurement of it: each step's companions are drawn afresh.

The expected tau of an option under the mix weighs each language's mean tokens and
verify steps per request by its share. The best option is the candidate (every option
but ``full``) with the highest expected tau.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._util.progress import progress
from ..errors import EvalError
from .evaluation import EvalPrompt
from .run import EvalOptions, Prepared

FULL = "full"


@dataclass(frozen=True)
class ChooseOptions:
    mix: Mapping[str, float] | None = None  # request shares; None: the prompts' own
    concurrency: int = 32
    rows: int | None = None  # K_u; None: the plugin's default
    walks: int = 8
    seed: int = 0


def parse_mix(spec: str) -> dict[str, float]:
    """``"en=0.6,zh=0.4"`` -> normalized shares.

    Raises:
        EvalError: a malformed item or a weight that is not a positive number.
    """
    from ..maps.lang import normalize_lang

    out: dict[str, float] = {}
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        lang = normalize_lang(name)
        try:
            w = float(value)
        except ValueError:
            w = -1.0
        if not sep or lang is None or not w > 0 or lang in out:
            raise EvalError(
                f"--mix {spec!r}: {item.strip()!r} is not LANG=SHARE with a positive share "
                "(each language once); write e.g. en=0.6,zh=0.3,fr=0.1"
            )
        out[lang] = w
    total = sum(out.values())
    return {lang: w / total for lang, w in out.items()}


def choose(
    p: Prepared,
    opts: EvalOptions,
    copts: ChooseOptions,
    traces: Mapping[int, Any] | None = None,
) -> dict[str, Any]:
    """Score every deployable option on ``p``'s prompts; the report (JSON-ready).

    ``traces``: :func:`.score.trace` per prompt line, computed here when absent (a
    caller comparing several artifacts of one head traces once).

    Raises:
        EvalError: an artifact without maps, a mix naming a language without prompts, a
            bad K_u or concurrency.
    """
    import torch

    from ..maps.draft_sets import SetTable, default_rows, set_label
    from ..maps.ranking import token_shares
    from ..maps.union import union_hot_ids
    from .score import accepted, trace, walk

    maps_info = p.manifest.token_maps
    if maps_info is None:
        raise EvalError("--choose compares token maps; export the draft with --token-maps")
    maps = {lang: ids for lang, ids in p.maps.items() if lang in maps_info.languages}
    default = maps_info.default_lang
    rows = copts.rows or default_rows(maps_info.size, len(maps), p.vocab)
    if not maps_info.size <= rows <= p.vocab:
        raise EvalError(f"--rows {rows} must lie in [K={maps_info.size}, V={p.vocab}]")
    if copts.concurrency < 1:
        raise EvalError("--concurrency must be at least 1")
    by_lang: dict[str, list[EvalPrompt]] = {}
    for prompt in p.prompts:
        by_lang.setdefault(prompt.lang, []).append(prompt)
    mix = dict(copts.mix) if copts.mix else {
        lang: len(ps) / len(p.prompts) for lang, ps in by_lang.items()
    }  # fmt: skip
    if missing := sorted(set(mix) - set(by_lang)):
        raise EvalError(
            f"--mix names {', '.join(missing)} but no prompt is in it; add prompts in "
            f"{missing[0]} or drop it from the mix (prompt languages: {', '.join(sorted(by_lang))})"
        )
    rankings = {lang: r.ids for lang, r in p.rankings.items()} or None
    shares = token_shares(p.rankings, maps)
    table = SetTable(maps, rows, rankings, shares, depth=opts.k)
    slots = dict(zip(table.sets, table.slots, strict=True))
    union_name, union_ids = _union(p, maps, rankings, rows, union_hot_ids)
    device = p.device
    vocabs: dict[str, Any] = {FULL: None}
    vocabs |= {f"map:{lang}": torch.tensor(ids, device=device) for lang, ids in maps.items()}
    vocabs[union_name] = torch.tensor(union_ids, device=device)
    set_vocab = {s: torch.tensor(ids, device=device) for s, ids in slots.items()}

    k, max_new, head = opts.k, opts.max_new_tokens, p.mtp.lm_head
    # per option: language -> [tokens, verifies, prompts]
    sums: dict[str, dict[str, list[float]]] = {}

    def add(option: str, lang: str, tokens: float, verifies: float) -> None:
        row = sums.setdefault(option, {}).setdefault(lang, [0.0, 0.0, 0])
        row[0] += tokens
        row[1] += verifies
        row[2] += 1

    plugin, mixed = f"plugin:{rows}", f"plugin:{rows}@{copts.concurrency}"
    langs, weights = list(mix), list(mix.values())
    with progress(len(p.prompts), "choose", unit="prompt", enabled=opts.show_progress) as advance:
        for prompt in p.prompts:
            t = (
                traces[prompt.line]
                if traces is not None
                else trace(p.target, p.mtp, prompt.ids, max_new, k)
            )
            for name, hot in vocabs.items():
                g = walk(t, accepted(t, head, hot), max_new, p.eos)
                add(name, prompt.lang, len(g.output), g.verifies)
            own = frozenset({prompt.lang if prompt.lang in maps else default})
            per_set: dict[frozenset[str], Any] = {}

            def acc_for(s: frozenset[str], t: Any = t, cache: dict = per_set) -> Any:
                if s not in cache:
                    cache[s] = accepted(t, head, set_vocab[s])
                return cache[s]

            g = walk(t, acc_for(own), max_new, p.eos)
            add(plugin, prompt.lang, len(g.output), g.verifies)
            rng = random.Random(f"{copts.seed}-{prompt.line}")
            me = prompt.lang if prompt.lang in maps else default
            for _ in range(copts.walks):
                current = [frozenset({default})]

                def step(
                    _n: int, rng: random.Random = rng, current: list = current, me: str = me
                ) -> Any:
                    others = rng.choices(langs, weights, k=copts.concurrency - 1)
                    counts = Counter(x if x in maps else default for x in [me, *others])
                    current[0] = table.choose(counts, current[0])
                    return acc_for(current[0])

                g = walk(t, step, max_new, p.eos)
                add(mixed, prompt.lang, len(g.output) / copts.walks, g.verifies / copts.walks)
            advance(1)

    options: dict[str, Any] = {}
    for name, per_lang in sums.items():
        taus = {lang: tok / ver for lang, (tok, ver, _) in sorted(per_lang.items()) if ver}
        num = sum(w * per_lang[lang][0] / per_lang[lang][2] for lang, w in mix.items())
        den = sum(w * per_lang[lang][1] / per_lang[lang][2] for lang, w in mix.items())
        options[name] = {
            "rows": _rows(name, maps_info.size, rows, p.vocab, len(union_ids)),
            "serve": _serve(name, maps_info, union_name),
            "languages": taus,
            "mix_tau": num / den if den else None,
        }
    best = max((n for n in options if n != FULL), key=lambda n: options[n]["mix_tau"] or 0)
    return {
        "k": k,
        "rows": rows,
        "concurrency": copts.concurrency,
        "walks": copts.walks,
        "mix": {lang: round(w, 6) for lang, w in mix.items()},
        "prompts": {lang: len(ps) for lang, ps in sorted(by_lang.items())},
        "choice": "coverage" if shares else "request counts",
        "sets": [set_label(s) for s in table.sets],
        "options": options,
        "best": best,
    }


def _union(
    p: Prepared,
    maps: Mapping[str, Sequence[int]],
    rankings: Mapping[str, Sequence[int]] | None,
    rows: int,
    union_hot_ids: Any,
) -> tuple[str, list[int]]:
    """The union option at ``rows``: the artifact's when its size matches, else built."""
    shipped = p.maps.get("union")
    if shipped is not None and len(shipped) == rows:
        return f"union:{rows}", list(shipped)
    source = {lang: list((rankings or {}).get(lang, ids)) for lang, ids in maps.items()}
    required = p.manifest.token_maps.required_ids
    ids = union_hot_ids(
        source, dict.fromkeys(source, 1 / len(source)), rows,
        required=required, fallback=[], vocab_size=p.vocab,
    )  # fmt: skip
    return f"union:{rows} (built)", ids


def _rows(name: str, k: int, rows: int, vocab: int, union_rows: int) -> int:
    if name == FULL:
        return vocab
    if name.startswith("map:"):
        return k
    if name.startswith("union"):
        return union_rows
    return rows


def _serve(name: str, maps_info: Any, union_name: str) -> str:
    """How to deploy an option, in a few words."""
    if name == FULL:
        return "stock SGLang, no token map"
    if name.startswith("map:"):
        return f"stock SGLang --speculative-token-map {maps_info.languages[name[4:]].file}"
    if name == union_name:
        shipped = maps_info.union.file if maps_info.union and "built" not in name else None
        return (
            f"stock SGLang --speculative-token-map {shipped}"
            if shipped
            else "stock SGLang with a union map (token-map build --union N)"
        )
    return "sglang_patch (FASTMTP_DRAFT_ROWS=N)"


def render_choice(report: Mapping[str, Any]) -> str:
    """The options table: tau per language and under the mix, the best named."""
    langs = list(report["prompts"])
    head = ["option", "rows", *langs, "mix"]
    rows = [head]
    for name, o in report["options"].items():
        cells = [f"{o['languages'][x]:.3f}" if x in o["languages"] else "-" for x in langs]
        mix = "-" if o["mix_tau"] is None else f"{o['mix_tau']:.3f}"
        rows.append([name, str(o["rows"]), *cells, mix])
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    mix = ", ".join(f"{lang} {w:.2f}" for lang, w in report["mix"].items())
    best = report["options"][report["best"]]
    lines += [
        f"mix: {mix}; plugin@{report['concurrency']}: {report['walks']} simulated walks per "
        f"prompt, sets chosen by {report['choice']}",
        f"best at K_u={report['rows']}: {report['best']} (expected tau "
        f"{best['mix_tau']:.3f}): {best['serve']}",
    ]
    return "\n".join(lines)
