"""Token maps shipped inside a draft artifact (``export --token-maps/--token-map``).

Maps are validated against the *target's* vocabulary and EOS ids before anything is
written, then copied byte for byte to the artifact root under their canonical name
``freq_<lang>_<K>.pt``: SGLang resolves a Hub-hosted map as ``org/repo/<file>`` and
cannot reach subfolders, and stock SGLang can serve any one of them with
``--speculative-token-map`` even without our plugin.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._util.confine import refuse_escaping_links
from .._util.hashing import sha256_file
from ..errors import TokenMapError
from ..maps.lang import normalize_lang
from ..maps.ranking import load_ranking
from ..maps.summary import TokenMapSummary, load_summary
from ..maps.token_map import MAP_NAME, load_token_map
from ..maps.union import UNION
from . import manifest as mf

_MAP_FILE = re.compile(r"^freq_([a-z]{2,3})_(\d+)\.pt$")
_UNION_FILE = re.compile(rf"^freq_{UNION}_(\d+)\.pt$")


@dataclass(frozen=True)
class MapBundle:
    """Validated maps ready to ship: ``lang -> source path``, one K, a default language."""

    paths: dict[str, Path]
    size: int
    default_lang: str
    required_ids: tuple[int, ...]
    summary: TokenMapSummary | None
    #: languages whose map is the summary's own file (its figures describe that file)
    summarized: frozenset[str] = frozenset()
    #: the union map (:mod:`..maps.union`) and its size, if one ships
    union: Path | None = None
    union_size: int = 0
    #: whether ``union`` is the summary's own union file
    union_summarized: bool = False
    #: the ``token-map build`` directory the summary came from (its rankings ship too)
    source: Path | None = None

    def ship(self, out: Path) -> tuple[dict[str, mf.FileEntry], mf.TokenMapsInfo]:
        """Copy the maps into ``out`` and describe them for the manifest."""
        files: dict[str, mf.FileEntry] = {}
        langs: dict[str, mf.LanguageMapEntry] = {}
        s = self.summary
        for lang, src in sorted(self.paths.items()):
            name = MAP_NAME.format(lang=lang, size=self.size)
            files[name] = _copy(src, out / name)
            entry = s.languages.get(lang) if s and lang in self.summarized else None
            ranking = None
            if entry is not None and entry.ranking is not None and self.source is not None:
                r = entry.ranking
                files[r.file] = _copy(self.source / r.file, out / r.file)
                ranking = mf.RankingEntry(file=r.file, size=r.size, coverage=r.coverage)
            langs[lang] = mf.LanguageMapEntry(
                file=name,
                coverage=entry.coverage if entry else None,
                tokens=entry.tokens if entry else None,
                ranking=ranking,
            )
        coverage = None
        if s is not None and str(self.size) in s.coverage:
            coverage = {
                t: {m: v for m, v in row.items() if m in self.summarized}
                for t, row in s.coverage[str(self.size)].items()
            }
        union = None
        if self.union is not None:
            name = MAP_NAME.format(lang=UNION, size=self.union_size)
            files[name] = _copy(self.union, out / name)
            known = s.union if s is not None and self.union_summarized else None
            union = mf.UnionMapEntry(
                file=name,
                size=self.union_size,
                weights=known.weights if known else None,
                coverage=known.coverage if known else None,
            )
        info = mf.TokenMapsInfo(
            size=self.size,
            default_lang=self.default_lang,
            languages=langs,
            required_ids=list(self.required_ids),
            coverage=coverage,
            union=union,
        )
        return files, info


def _copy(src: Path, dst: Path) -> mf.FileEntry:
    """Copy a map byte for byte; its manifest entry (of the copy, as shipped)."""
    shutil.copyfile(src, dst)
    return mf.FileEntry(size=dst.stat().st_size, sha256=sha256_file(dst))


def _from_dir(directory: Path) -> tuple[dict[str, Path], Path | None, TokenMapSummary | None]:
    """(language maps, union map or ``None``, summary) of a ``token-map build`` directory."""
    if not directory.is_dir():
        raise TokenMapError(
            f"--token-maps {directory} is not a directory of freq_<lang>_<K>.pt maps"
        )
    summary = load_summary(directory)
    union = None
    if summary is not None:
        names = [e.file for e in summary.languages.values()]
        refuse_escaping_links(directory, [*names, *([summary.union.file] if summary.union else [])])
        paths = {lang: directory / e.file for lang, e in summary.languages.items()}
        union = directory / summary.union.file if summary.union else None
    else:
        paths = {}
        for f in sorted(directory.iterdir()):
            if _UNION_FILE.match(f.name):
                if union is not None:
                    raise TokenMapError(
                        f"{directory} holds two union maps ({union.name}, {f.name}); keep one"
                    )
                union = f
            m = _MAP_FILE.match(f.name)
            if m:
                if m.group(1) in paths:
                    raise TokenMapError(
                        f"{directory} holds two maps for {m.group(1)!r}; keep one per language"
                    )
                paths[m.group(1)] = f
    if not paths:
        raise TokenMapError(
            f"--token-maps {directory} holds no freq_<lang>_<K>.pt maps; build them with "
            "fastmtp-export token-map build"
        )
    return paths, union, summary


def parse_map_arg(arg: str) -> tuple[str, Path]:
    """``"zh=maps/freq_zh_16384.pt"`` -> ``("zh", Path(...))``; ``union=PATH`` names the
    union map (:data:`~..maps.union.UNION` is not a language code)."""
    lang, sep, path = arg.partition("=")
    code = UNION if lang.strip().lower() == UNION else normalize_lang(lang)
    if not sep or code is None or not path:
        raise TokenMapError(
            f"--token-map {arg!r} must look like LANG=PATH (or union=PATH), "
            "e.g. zh=freq_zh_16384.pt"
        )
    return code, Path(path)


def collect_maps(
    *,
    token_maps: Path | None,
    token_map: Sequence[str],
    vocab_size: int,
    required: Sequence[int],
    default_lang: str | None,
) -> MapBundle | None:
    """Gather, validate and size-check the maps to ship; ``None`` when none were given.

    Every map must load with ``torch.load(weights_only=True)`` as a flat list of ints,
    with ids in ``[0, vocab_size)``, no duplicates, every ``required`` id (EOS), and the
    same K as the others.

    Raises:
        TokenMapError: any problem, naming the file.
    """
    if token_maps is None and not token_map:
        if default_lang is not None:
            raise TokenMapError("--default-lang needs maps; pass --token-maps DIR or --token-map")
        return None
    paths: dict[str, Path] = {}
    union: Path | None = None
    summary = None
    if token_maps is not None:
        paths, union, summary = _from_dir(Path(token_maps))
    summarized = frozenset(paths) if summary is not None else frozenset()
    union_summarized = union is not None and summary is not None
    for arg in token_map:
        lang, path = parse_map_arg(arg)
        if lang == UNION:
            union, union_summarized = path, False
            continue
        paths[lang] = path  # an explicit --token-map overrides the directory's map
        summarized -= {lang}
    if not paths:
        raise TokenMapError(
            "a union map ships beside the language maps it serves; add --token-map LANG=PATH "
            "or --token-maps DIR"
        )
    need = list(dict.fromkeys([*required, *(summary.eos_ids if summary else ())]))
    sizes: dict[str, int] = {}
    for lang, path in sorted(paths.items()):
        if not path.is_file():
            raise TokenMapError(f"token map for {lang!r} not found: {path}")
        ids = load_token_map(path, vocab_size=vocab_size, required=need)
        if not ids:
            raise TokenMapError(f"token map {path} is empty; rebuild it")
        sizes[lang] = len(ids)
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{lang}={k}" for lang, k in sizes.items())
        raise TokenMapError(
            f"token maps have unequal sizes ({listing}); the SGLang plugin swaps maps in "
            "fixed-size buffers, rebuild them with one --size"
        )
    if default_lang is not None:
        default = normalize_lang(default_lang)
        if default not in paths:
            raise TokenMapError(
                f"--default-lang {default_lang!r} has no map; choose one of {sorted(paths)}"
            )
    elif summary is not None and summary.default_lang in paths:
        default = summary.default_lang
    elif len(paths) == 1:
        default = next(iter(paths))
    else:
        raise TokenMapError(
            f"no corpus summary tells which of {sorted(paths)} is the default language; "
            "pass --default-lang"
        )
    union_size = 0
    if union is not None:
        if not union.is_file():
            raise TokenMapError(f"union token map not found: {union}")
        union_size = len(load_token_map(union, vocab_size=vocab_size, required=need))
        if not union_size:
            raise TokenMapError(f"union token map {union} is empty; rebuild it")
    source = Path(token_maps) if token_maps is not None and summary is not None else None
    for lang in sorted(summarized):  # non-empty only with a summary, from --token-maps
        r = summary.languages[lang].ranking if summary is not None else None
        if r is None or source is None:
            continue
        refuse_escaping_links(source, [r.file])
        if not (source / r.file).is_file():
            raise TokenMapError(f"ranking for {lang!r} not found: {source / r.file}")
        load_ranking(source / r.file, vocab_size=vocab_size, size=r.size)
    return MapBundle(
        paths, next(iter(sizes.values())), default, tuple(need), summary, summarized,
        union, union_size, union_summarized, source,
    )  # fmt: skip
