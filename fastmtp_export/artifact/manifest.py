"""``fastmtp.json``: the artifact's manifest, a typed and versioned record.

It is what makes an artifact checkable offline (every file's sha256 and size), traceable
(source name, config hash, layer, tool version) and servable (the SGLang flags). The
SGLang plugin, ``inspect`` and ``push`` all read it, so the schema is strict
(``extra="forbid"``) and carries a format version; docs/format.md describes each field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field, ValidationError

from .._util.atomic import atomic_write
from .._util.confine import PlainName
from .._util.schema import StrictModel
from ..errors import ArtifactError
from .eval_record import EvaluationInfo

MANIFEST_NAME = "fastmtp.json"
FORMAT_NAME: Literal["fastmtp-draft"] = "fastmtp-draft"
#: bump on any change a reader of older artifacts would misinterpret. 2 adds
#: ``token_maps.union``, 3 each language's ``ranking``; an artifact declares the oldest
#: version that describes it (:func:`format_version_for`), so one without them stays
#: readable by older readers.
FORMAT_VERSION = 3


class FileEntry(StrictModel):
    size: int = Field(description="File size in bytes.")
    sha256: str = Field(description="Hex sha256 of the file's bytes.")


class TensorEntry(StrictModel):
    dtype: str = Field(description="safetensors dtype code, e.g. BF16.")
    shape: list[int] = Field(description="Tensor shape.")
    file: PlainName = Field(description="The safetensors file holding it.")


class SourceInfo(StrictModel):
    path: str = Field(
        description="The source's name, never a local path: the Hub repo id, else the local "
        "directory's name."
    )
    config_sha256: str = Field(description="sha256 of the source config.json bytes.")
    architecture: str = Field(description="architectures[0] of the source config.")
    model_type: str | None = Field(description="model_type of the source config.")
    mtp_layer: int = Field(description="The source MTP layer exported (the draft's layer 0).")
    available_mtp_layers: list[int] = Field(description="MTP layers present in the source.")
    dtypes: list[str] = Field(description="safetensors dtype codes of the source MTP tensors.")
    trainer: str | None = Field(
        None,
        description="The trainer whose checkpoint was read (e.g. speculators); absent for a "
        "model release.",
    )
    repo_id: str | None = Field(
        None,
        description="The Hub repository the source was read from, or whose cache snapshot "
        "it was; absent for any other local one.",
    )
    revision: str | None = Field(
        None, description="The commit sha of that repository that was read."
    )

    omit_when_none = ("trainer", "repo_id", "revision")


#: huggingface_hub cache layout: .../models--ORG--NAME/snapshots/<commit>/
_CACHE_PATH = re.compile(
    r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{40})(?:/|$)"
)


def cache_snapshot(path: str) -> tuple[str | None, str | None]:
    """(Hub id, commit) of a huggingface_hub cache snapshot path, else (None, None)."""
    m = _CACHE_PATH.search(path)
    if m is None:
        return None, None
    return f"{m['org']}/{m['name']}", m["rev"]


def public_source(source: SourceInfo) -> SourceInfo:
    """``source`` as an artifact may publish it: no local path, which says nothing useful
    to a reader and may say too much (a user name, a private model's name above it).

    A Hub source is its repo id; a huggingface_hub cache snapshot becomes its repo id and
    commit; any other path its directory name. Export records this, and ``push`` applies
    it to a manifest an older version wrote with an absolute path.
    """
    if source.repo_id is None:
        repo, rev = cache_snapshot(source.path)
        if repo is not None:
            return source.model_copy(update={"path": repo, "repo_id": repo, "revision": rev})
        name = PurePosixPath(source.path).name or "source"
        return source if name == source.path else source.model_copy(update={"path": name})
    if source.path == source.repo_id:
        return source
    return source.model_copy(update={"path": source.repo_id})


class ConfigChangesEntry(StrictModel):
    removed: list[str] = Field(
        description="Source config keys dropped (training-only, remote code)."
    )
    set: dict[str, Any] = Field(description="Keys whose value the draft config sets or changes.")


class SGLangInfo(StrictModel):
    draft_class: str = Field(description="The SGLang class that loads this draft, e.g. MiMoMTP.")
    recommended_flags: list[str] = Field(
        description="Speculative flags for FastMTP K=3 chain speculation."
    )
    base_needs_trust_remote_code: bool = Field(
        description="Whether serving the base model needs --trust-remote-code."
    )


class RankingEntry(StrictModel):
    file: PlainName = Field(
        description="Ranking at the artifact root, rank_<lang>_<N>.json (ids, shares)."
    )
    size: int = Field(description="N: ids in the ranking, the draft rows it fills (K_u).")
    coverage: float | None = Field(
        description="Held-out token coverage of this language by its N ids (null: unknown)."
    )


class LanguageMapEntry(StrictModel):
    file: PlainName = Field(description="Map file at the artifact root, freq_<lang>_<K>.pt.")
    coverage: float | None = Field(
        description="Held-out token coverage of this language by its own map (null: unknown)."
    )
    tokens: int | None = Field(description="Corpus tokens the map was counted from.")
    ranking: RankingEntry | None = Field(
        default=None,
        description="The language's top N ids and token shares, for sglang_patch (absent: none).",
    )

    omit_when_none = ("ranking",)


class UnionMapEntry(StrictModel):
    file: PlainName = Field(description="Union map file at the artifact root, freq_union_<N>.pt.")
    size: int = Field(description="N: ids in the union map.")
    weights: dict[str, float] | None = Field(
        description="Share of the rows given to each language (null: a hand-made map)."
    )
    coverage: dict[str, float | None] | None = Field(
        description="coverage[text language] of held-out tokens by the union map (null: unknown)."
    )


class TokenMapsInfo(StrictModel):
    size: int = Field(description="K: ids per map, equal for every language.")
    default_lang: str = Field(description="Map used when a request's language is unknown.")
    languages: dict[str, LanguageMapEntry] = Field(description="One map per language.")
    required_ids: list[int] = Field(description="EOS ids every map contains.")
    coverage: dict[str, dict[str, float | None]] | None = Field(
        description="coverage[text language][map language] at K on held-out tokens."
    )
    union: UnionMapEntry | None = Field(
        default=None,
        description="One map of several languages for stock SGLang (absent: none shipped).",
    )

    omit_when_none = ("union",)


def referenced_files(manifest: Manifest) -> list[str]:
    """Every file name the manifest points at: listed files, tensor shards, maps."""
    names = [*manifest.files, *(t.file for t in manifest.tensors.values())]
    maps = manifest.token_maps
    if maps is not None:
        names += [e.file for e in maps.languages.values()]
        names += [e.ranking.file for e in maps.languages.values() if e.ranking]
        names += [maps.union.file] if maps.union else []
    return sorted(set(names))


def format_version_for(token_maps: TokenMapsInfo | None) -> int:
    """The oldest format version that describes an artifact with these maps."""
    if token_maps is None:
        return 1
    if any(e.ranking for e in token_maps.languages.values()):
        return 3
    return 2 if token_maps.union is not None else 1


class ToolInfo(StrictModel):
    name: str = Field(description="Always fastmtp-export.")
    version: str = Field(description="The fastmtp-export version that wrote the artifact.")


class Manifest(StrictModel):
    format: Literal["fastmtp-draft"] = Field(description="Marks a fastmtp-export artifact.")
    format_version: int = Field(description="Artifact format version; see FORMAT_VERSION.")
    family: str = Field(description="Checkpoint family (reader), e.g. mimo.")
    dtype: str = Field(description="Tensor dtype of the draft weights, or 'mixed'.")
    num_parameters: int = Field(description="Total parameters in the draft tensors.")
    tensors: dict[str, TensorEntry] = Field(description="Every draft tensor, by name.")
    files: dict[PlainName, FileEntry] = Field(
        description="Every artifact file except fastmtp.json itself, with size and sha256."
    )
    source: SourceInfo
    config_changes: ConfigChangesEntry
    sglang: SGLangInfo
    token_maps: TokenMapsInfo | None = Field(
        default=None, description="Per-language hot-token maps shipped at the root, if any."
    )
    tool: ToolInfo
    evaluation: EvaluationInfo | None = Field(
        default=None, description="Acceptance measured by fastmtp-export eval --write-manifest."
    )


def load(artifact: Path) -> Manifest:
    """Read and validate ``artifact/fastmtp.json``.

    Raises:
        ArtifactError: missing, unparsable, from a newer tool, or schema-invalid.
    """
    path = artifact / MANIFEST_NAME
    try:
        raw = path.read_text()
    except FileNotFoundError:
        raise ArtifactError(
            f"{artifact} has no {MANIFEST_NAME}; it is not a fastmtp-export artifact "
            "(create one with: fastmtp-export export SOURCE --out DIR)"
        ) from None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); re-export the artifact") from exc
    version = doc.get("format_version") if isinstance(doc, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format version {version}, newer than this tool's {FORMAT_VERSION}; "
            "upgrade fastmtp-export"
        )
    try:
        return Manifest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(
            f"{path} is invalid at {where or 'top level'}: {first['msg']}; re-export the artifact"
        ) from exc


def write_evaluation(artifact: Path, evaluation: EvaluationInfo) -> Manifest:
    """Store ``evaluation`` in ``artifact/fastmtp.json`` (atomically; other fields kept).

    The manifest lists no hash of itself, so the artifact stays valid.
    """
    manifest = load(artifact).model_copy(update={"evaluation": evaluation})
    atomic_write(artifact / MANIFEST_NAME, manifest.canonical_json().encode())
    return manifest
