"""The artifact's model card (``README.md``): Hub metadata plus how to serve the draft.

Written at export and refreshed at push (the repo id and the evaluation are known
then). The YAML comes from huggingface_hub's ``ModelCardData``. ``library_name`` is
deliberately not ``transformers`` and there is no ``pipeline_tag``: the Hub would then
offer "use this model" snippets serving the draft on its own, which cannot work for an
MTP head (docs/format.md).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util.units import human_bytes, percent, percents
from .launch import sglang_command, vllm_command
from .manifest import Manifest

CARD_NAME = "README.md"
LIBRARY_NAME = "fastmtp-export"
TAGS = ("speculative-decoding", "draft-model", "mtp", "fastmtp", "eagle", "sglang")
CITATION = """@article{fastmtp2025,
  title   = {FastMTP: Accelerating LLM Inference with Enhanced Multi-Token Prediction},
  author  = {Cai and others},
  journal = {arXiv preprint arXiv:2509.18362},
  year    = {2025}
}"""


@dataclass(frozen=True)
class CardOptions:
    """What the manifest cannot know: where things live on the Hub, and the licence."""

    repo_id: str | None = None
    base_model: str | None = None  # Hub id of the base; else the manifest's source.repo_id
    base_revision: str | None = None
    license: str | None = None  # inherited from the base's card or config when None
    #: engine -> draft class, from the reader (``export``) or ``inspect`` (``push``);
    #: adds a vLLM section when the draft's layout serves vLLM
    engines: Mapping[str, str] = field(default_factory=dict)


def inherited_license(base_dir: Path) -> str | None:
    """The licence the base declares: its README.md YAML, else its config.json."""
    from huggingface_hub import ModelCard

    from ..maps.eos import read_json

    readme = base_dir / CARD_NAME
    if readme.is_file():
        try:
            lic = ModelCard.load(readme).data.license
        except Exception:  # a malformed third-party card must not stop an export
            lic = None
        if isinstance(lic, str) and lic:
            return lic
    lic = read_json(base_dir / "config.json").get("license")
    return lic if isinstance(lic, str) and lic else None


def render_card(manifest: Manifest, opts: CardOptions, licence_from: Path | None = None) -> str:
    """The full README.md text: YAML front matter, then the body.

    ``licence_from`` is a directory whose card or config declares the licence when
    ``opts`` gives none: the source at export, the artifact itself (its card written at
    export) at push. The manifest names the source without its path, so it cannot say.
    """
    from huggingface_hub import ModelCard, ModelCardData

    base, revision = opts.base_model, opts.base_revision
    if base is None and manifest.source.repo_id is not None:  # a Hub or Hub-cache source
        base, revision = manifest.source.repo_id, revision or manifest.source.revision
    lic = opts.license or (inherited_license(licence_from) if licence_from else None)
    maps = manifest.token_maps
    data = ModelCardData(
        base_model=base,
        license=lic,
        language=sorted(maps.languages) if maps else None,
        library_name=LIBRARY_NAME,
        tags=[*TAGS, *(["vllm"] if "vllm" in opts.engines else []), manifest.family],
        model_name=opts.repo_id or "fastmtp-draft",
        eval_results=_eval_results(manifest) or None,
        base_model_revision=revision,
    )
    body = _body(manifest, opts, base, revision, lic)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _eval_results(manifest: Manifest) -> list[Any]:
    from huggingface_hub import EvalResult

    ev = manifest.evaluation
    if ev is None:
        return []
    out = []
    for mode, result in ev.modes.items():
        for lang, st in result.languages.items():
            if st.accept_length is None:
                continue
            out.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=ev.prompts_file,
                    dataset_name=f"{ev.prompts_file} ({lang})",
                    dataset_config=lang,  # one model-index entry per language
                    metric_type="acceptance_length",
                    metric_name=f"Acceptance length tau ({lang}, vocab {mode}, K={ev.k})",
                    metric_value=round(st.accept_length, 3),
                    verified=False,
                )
            )
    return out


def _launch(manifest: Manifest, draft: str, base: str, *, static: bool) -> str:
    """launch.sglang_command for a Hub repo or local dir, one ``--flag value`` per line."""
    # a repo id joins like a path: ORG/NAME/freq_<lang>_<K>.pt is the Hub path SGLang takes
    argv = sglang_command(Path(draft), manifest, base, static_map=static)
    return " \\\n  ".join(_pairs(argv))


def _source_ref(manifest: Manifest, base: str | None, revision: str | None) -> str:
    """Where the head came from, for a public card: the Hub id and commit when known, else
    the directory's name only (a local path says nothing useful and may say too much)."""
    if base is not None:
        return f"`{base}`" + (f" at `{revision}`" if revision else "")
    name = Path(manifest.source.path).name
    trainer = f", a {manifest.source.trainer} checkpoint" if manifest.source.trainer else ""
    return f"a local checkpoint `{name}`{trainer}"


def _pairs(argv: list[str]) -> list[str]:
    """Shell words grouped as ``--flag value`` per line."""
    out: list[str] = [shlex.join(argv[:3])]
    i = 3
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append(shlex.join(argv[i : i + 2]))
            i += 2
        else:
            out.append(shlex.quote(argv[i]))
            i += 1
    return out


def _body(
    manifest: Manifest, opts: CardOptions, base: str | None, revision: str | None, lic: str | None
) -> str:
    repo = opts.repo_id or "ORG/NAME"
    base_ref = base or "BASE_MODEL"
    maps = manifest.token_maps
    size = sum(f.size for f in manifest.files.values())
    lines = [
        f"# FastMTP draft for {base_ref}",
        "",
        f"The multi-token-prediction (MTP) head of `{base_ref}`"
        + (f" (revision `{revision}`)" if revision else "")
        + f", exported with fastmtp-export {manifest.tool.version} as an SGLang EAGLE draft:"
        f" {manifest.num_parameters:,} parameters ({manifest.dtype}, {human_bytes(size)}),"
        + (
            " no trunk, embedding or `lm_head` (the draft shares the base model's)."
            if "model.embed_tokens.weight" not in manifest.tensors
            else " no trunk (the embedding and the MTP layers' heads are the draft's own, as"
            " SGLang's draft class loads them)."
        )
        + " Serve it next to"
        " the unchanged base model; output is identical to the base model's, only faster"
        " ([FastMTP](https://arxiv.org/abs/2509.18362): K=3 chain speculation with one MTP"
        " layer).",
        "",
        "## Serve with SGLang",
        "",
        "Plain SGLang 0.5.23, K=3 chain (steps 3, topk 1, 4 draft tokens):",
        "",
        "```bash",
        _launch(manifest, repo, base_ref, static=False),
        "```",
    ]
    if maps is not None:
        lines += [
            "",
            (
                "Plain SGLang with the union hot-token map (the draft scores"
                f" {maps.union.size:,} ids holding every language's hot tokens):"
                if maps.union
                else "Plain SGLang with one static hot-token map (the draft scores only"
                f" {maps.size:,} ids; default language `{maps.default_lang}`):"
            ),
            "",
            "```bash",
            _launch(manifest, repo, base_ref, static=True),
            "```",
            "",
            "With the `sglang_patch` plugin (installed with `pip install fastmtp-export`), each"
            " batch is drafted with its requests' language map; the same command, the plugin"
            " reads the maps of the repo SGLang loads the draft from:",
            "",
            "```bash",
            "pip install fastmtp-export",
            _launch(manifest, repo, base_ref, static=False),
            "```",
            "",
            "A request can name its language (otherwise the plugin detects it from the prompt):",
            "",
            "```bash",
            "curl -s localhost:30000/generate -H 'Content-Type: application/json' -d '{",
            '  "text": "Explain speculative decoding in two sentences.",',
            '  "sampling_params": {"max_new_tokens": 128, "temperature": 0,',
            f'                      "custom_params": {{"draft_lang": "{maps.default_lang}"}}}}}}\'',
            "```",
            "",
            'OpenAI clients: `extra_body={"custom_params": {"draft_lang": "zh"}}`.',
            "",
            "## Hot-token maps",
            "",
            "| language | K | file | held-out coverage |",
            "|---|---|---|---|",
        ]
        for lang, e in sorted(maps.languages.items()):
            cov = percent(e.coverage)
            default = " (default)" if lang == maps.default_lang else ""
            lines.append(f"| {lang}{default} | {maps.size:,} | `{e.file}` | {cov} |")
        if maps.union:
            u = maps.union
            lines.append(f"| union | {u.size:,} | `{u.file}` | {percents(u.coverage) or '-'} |")
    if "vllm" in opts.engines:
        vllm = vllm_command(Path(repo), manifest, base_ref)
        lines += [
            "",
            "## Serve with vLLM",
            "",
            f"vLLM's `{opts.engines['vllm']}` loads this draft (`method: mtp`, over the full"
            " vocabulary: vLLM has no hot-token map for MTP drafts):",
            "",
            "```bash",
            " \\\n  ".join([shlex.join(vllm[:-2]), shlex.join(vllm[-2:])]),
            "```",
        ]
    lines += _evaluation_section(manifest)
    lines += [
        "",
        "## Provenance",
        "",
        f"- Source: {_source_ref(manifest, base, revision)} ({manifest.source.architecture},"
        f" MTP layer {manifest.source.mtp_layer}), config sha256"
        f" `{manifest.source.config_sha256}`.",
        f"- Licence: {lic or 'not declared by the base; check the base model card'}"
        + (" (inherited from the base)" if lic and not opts.license else "")
        + ".",
        f"- Tool: fastmtp-export {manifest.tool.version}; `fastmtp.json` lists every file's"
        " sha256. Check a download with `fastmtp-export inspect DIR`.",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
        *(f"| `{n}` | {f.size:,} | `{f.sha256}` |" for n, f in sorted(manifest.files.items())),
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def _evaluation_section(manifest: Manifest) -> list[str]:
    ev = manifest.evaluation
    if ev is None:
        return []
    k = ev.k
    lines = [
        "",
        "## Acceptance",
        "",
        f"Measured with `fastmtp-export eval` (reference K={k} chain decoder, SGLang's"
        f" semantics) on {ev.prompts} prompts (`{ev.prompts_file}`, sha256"
        f" `{ev.prompts_sha256[:16]}…`), up to {ev.max_new_tokens} new tokens, {ev.device},"
        f" {ev.dtype}. tau is accepted tokens per verify step (SGLang's `spec_accept_length`),"
        f" at most {k + 1}; acc@p is the share of verify steps accepting at least p drafts."
        + (" Every output equalled greedy decoding." if ev.lossless else ""),
        "",
        "| vocab | language | prompts | tau | "
        + " | ".join(f"acc@{p}" for p in range(1, k + 1))
        + " |",
        "|---|---|---|---|" + "---|" * k,
    ]
    for mode, result in ev.modes.items():
        for lang, st in result.languages.items():
            tau = "-" if st.accept_length is None else f"{st.accept_length:.2f}"
            accs = " | ".join(percent(v) for v in st.position_acceptance)
            lines.append(f"| {mode} | {lang} | {st.prompts} | {tau} | {accs} |")
    return lines


def write_card(
    artifact: Path, manifest: Manifest, opts: CardOptions, licence_from: Path | None = None
) -> str:
    """Render and write ``artifact/README.md`` atomically; returns the text."""
    from .._util.atomic import atomic_write

    text = render_card(manifest, opts, licence_from)
    atomic_write(artifact / CARD_NAME, text.encode())
    return text
