"""``token_maps.json``: what ``token-map build`` measured, next to the maps it wrote.

``export --token-maps DIR`` reads it to record coverage and the default language in
the artifact manifest, and the model card (push) quotes it. Strict and versioned like
the manifest, for the same reason: other tools read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from .._util.confine import PlainName
from .._util.schema import StrictModel
from ..errors import TokenMapError

SUMMARY_NAME = "token_maps.json"
SUMMARY_FORMAT: Literal["fastmtp-token-maps"] = "fastmtp-token-maps"
#: 2 adds ``union``, 3 each language's ``ranking``; a summary is written with the oldest
#: version that describes it, so one without them stays readable by older tools
SUMMARY_VERSION = 3

#: coverage[size][text_lang][map_lang]: share of held-out tokens the map contains
CoverageMatrix = dict[str, dict[str, dict[str, float | None]]]


class RankingSummary(StrictModel):
    file: PlainName = Field(description="Ranking file name, rank_<lang>_<N>.json.")
    sha256: str = Field(description="sha256 of the ranking file.")
    size: int = Field(description="N: ids in the ranking (K_u, the plugin's draft rows).")
    coverage: float | None = Field(
        description="Held-out token coverage of this language by its N ids (null: unknown)."
    )


class LanguageSummary(StrictModel):
    file: PlainName = Field(description="Map file name, freq_<lang>_<K>.pt.")
    sha256: str = Field(description="sha256 of the map file.")
    records: int = Field(description="Corpus records counted (held-out ones excluded).")
    tokens: int = Field(description="Tokens counted (held-out ones excluded).")
    distinct_tokens: int = Field(description="Distinct token ids among the counted tokens.")
    padded: int = Field(description="Map entries filled from the all-language ranking.")
    heldout_records: int = Field(description="Records held out for the coverage report.")
    heldout_tokens: int = Field(description="Tokens in the held-out records.")
    coverage: float | None = Field(
        description="Share of this language's held-out tokens its own map covers (null: none)."
    )
    ranking: RankingSummary | None = Field(
        default=None,
        description="The language's top N ids with token shares (build --rank); absent if none.",
    )

    omit_when_none = ("ranking",)


class CorpusEntry(StrictModel):
    path: str = Field(description="Corpus file as given.")
    lang: str | None = Field(description="Language forced for the whole file (LANG=PATH).")
    size: int = Field(description="File size in bytes.")


class UnionSummary(StrictModel):
    file: PlainName = Field(description="Union map file name, freq_union_<N>.pt.")
    sha256: str = Field(description="sha256 of the union map file.")
    size: int = Field(description="N: ids in the union map (its own size, not K).")
    weights: dict[str, float] = Field(
        description="Share of the rows given to each language's ranking (sums to 1)."
    )
    coverage: dict[str, float | None] = Field(
        description="coverage[text language]: share of held-out tokens the union map holds."
    )


class TokenMapSummary(StrictModel):
    format: Literal["fastmtp-token-maps"] = Field(description="Marks a token-map summary.")
    format_version: int = Field(description="Summary format version.")
    size: int = Field(description="K: ids per map, equal for every language.")
    vocab_size: int = Field(description="Model vocabulary size the ids index into.")
    tokenizer: str = Field(description="Tokenizer directory used.")
    eos_ids: list[int] = Field(description="Ids forced into every map (EOS, terminators).")
    holdout: float = Field(description="Share of each language's records held out.")
    default_lang: str = Field(description="Language with the most counted tokens.")
    languages: dict[str, LanguageSummary] = Field(description="Per language, by code.")
    coverage: CoverageMatrix = Field(
        description="coverage[K][text language][map language] on held-out tokens."
    )
    corpora: list[CorpusEntry] = Field(description="The corpus files, in argument order.")
    skipped_bad_records: int = Field(description="Malformed records skipped.")
    skipped_undetected: int = Field(description="Records whose language was not detected.")
    tool_version: str = Field(description="fastmtp-export version that built the maps.")
    union: UnionSummary | None = Field(
        default=None,
        description="One map holding several languages (build --union); absent if none.",
    )

    omit_when_none = ("union",)


def load_summary(directory: Path) -> TokenMapSummary | None:
    """``directory/token_maps.json`` validated, or ``None`` when there is none.

    Raises:
        TokenMapError: the file exists but is not a valid summary.
    """
    path = directory / SUMMARY_NAME
    if not path.is_file():
        return None
    try:
        version = json.loads(path.read_bytes()).get("format_version")
    except (OSError, ValueError, AttributeError):
        version = None
    if isinstance(version, int) and version > SUMMARY_VERSION:
        raise TokenMapError(
            f"{path} has format version {version}, newer than this tool's {SUMMARY_VERSION}; "
            "upgrade fastmtp-export"
        )
    try:
        return TokenMapSummary.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise TokenMapError(
            f"{path} is not a valid token-map summary (at {where}: {first['msg']}); "
            "rebuild the maps with fastmtp-export token-map build"
        ) from exc
    except OSError as exc:
        raise TokenMapError(
            f"{path} is not a valid token-map summary ({exc}); "
            "rebuild the maps with fastmtp-export token-map build"
        ) from exc
