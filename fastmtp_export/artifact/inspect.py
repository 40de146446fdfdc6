"""Offline validation of an exported artifact (``fastmtp-export inspect``, ``push``).

Checks what would otherwise fail late or silently at serve time: files listed in the
manifest exist with the recorded size and sha256, the safetensors key set and shapes
are exactly SGLang's loader contract for the config, the config carries what
SGLang needs (base architecture, ``num_nextn_predict_layers: 1``), and every shipped
token map is servable (in range, no duplicates, EOS present, one K). A valid draft's
layout says which engines load it (``engines``: SGLang always, vLLM where its MTP class
reads that layout; docs/vllm.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util.confine import refuse_escaping_links
from .._util.hashing import sha256_file
from ..checkpoints.checkpoint import INDEX_NAME, language_config
from ..checkpoints.contract import contract_problems
from ..checkpoints.fp8 import FP8_CODE, block_fp8
from ..checkpoints.readers import READERS
from ..checkpoints.safetensors_io import read_header
from ..errors import ArtifactError, FastMTPError
from ..maps.ranking import load_ranking
from ..maps.token_map import load_token_map
from . import manifest as mf
from .launch import sglang_command, vllm_command
from .model_card import CARD_NAME


@dataclass
class ArtifactReport:
    """Summary of one artifact plus every problem found (empty = valid)."""

    path: Path
    manifest: mf.Manifest
    #: name -> (dtype, shape, file) as found in the safetensors headers
    tensors: dict[str, tuple[str, tuple[int, ...], str]] = field(default_factory=dict)
    hashes_checked: int = 0
    #: engine -> the class that loads this layout (``sglang``, ``vllm``; docs/vllm.md)
    engines: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise :class:`ArtifactError` with every problem on one line."""
        if self.problems:
            raise ArtifactError(
                f"artifact {self.path} is invalid ({'; '.join(self.problems)}); "
                "re-export it with fastmtp-export export"
            )

    def launch_command(self, base: str | None = None, *, static_map: bool = False) -> list[str]:
        return sglang_command(self.path, self.manifest, base, static_map=static_map)

    def vllm_command(self, base: str | None = None) -> list[str] | None:
        """``vllm serve`` for this draft, or ``None`` when vLLM cannot load its layout."""
        return vllm_command(self.path, self.manifest, base) if "vllm" in self.engines else None

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path),
            "ok": self.ok,
            "problems": self.problems,
            "warnings": self.warnings,
            "family": m.family,
            "dtype": m.dtype,
            "num_parameters": m.num_parameters,
            "hashes_checked": self.hashes_checked,
            "files": {k: v.model_dump() for k, v in m.files.items()},
            "tensors": {
                k: {"dtype": d, "shape": list(s), "file": f}
                for k, (d, s, f) in sorted(self.tensors.items())
            },
            "languages": sorted(m.token_maps.languages) if m.token_maps else [],
            "token_maps": m.token_maps.model_dump() if m.token_maps else None,
            "source": m.source.model_dump(),
            "engines": self.engines,
            "sglang_command": self.launch_command(),
            "sglang_command_static_map": (
                self.launch_command(static_map=True) if m.token_maps else None
            ),
            "vllm_command": self.vllm_command(),
        }


def inspect_artifact(path: Path, *, check_hashes: bool = True) -> ArtifactReport:
    """Validate the artifact at ``path`` without network or torch.

    Raises:
        ArtifactError: ``path`` is not an artifact at all (no directory, no or an
            unreadable manifest). Content problems are collected in the report instead.
    """
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a directory; pass an exported artifact directory")
    report = ArtifactReport(path.absolute(), mf.load(path))
    refuse_escaping_links(report.path, mf.referenced_files(report.manifest))
    _check_files(report, check_hashes)
    config = _load_config(report)
    _check_tensors(report, config)
    _check_maps(report, config)
    if report.problems:  # an invalid draft is served by no engine
        report.engines = {}
    return report


def _check_files(report: ArtifactReport, check_hashes: bool) -> None:
    listed = report.manifest.files
    for name, entry in listed.items():
        f = report.path / name
        if not f.is_file():
            report.problems.append(f"{name} is listed in {mf.MANIFEST_NAME} but missing")
            continue
        size = f.stat().st_size
        if size != entry.size:
            report.problems.append(f"{name} has {size} bytes, manifest says {entry.size}")
        elif check_hashes:
            if sha256_file(f) != entry.sha256:
                report.problems.append(f"{name} sha256 differs from the manifest (file changed)")
            report.hashes_checked += 1
    for f in sorted(report.path.iterdir()):
        unhashed = (mf.MANIFEST_NAME, CARD_NAME)  # both change after export (eval, push)
        if f.name not in listed and f.name not in unhashed and not f.name.startswith("."):
            report.warnings.append(f"{f.name} is not listed in {mf.MANIFEST_NAME}")


def _load_config(report: ArtifactReport) -> dict[str, Any]:
    try:
        config = json.loads((report.path / "config.json").read_bytes())
    except (OSError, ValueError) as exc:
        report.problems.append(f"config.json is unreadable ({exc})")
        return {}
    reader = READERS.get(report.manifest.family)
    if reader is None:
        report.problems.append(f"unknown family {report.manifest.family!r}")
        return config
    report.problems += reader.draft_layout(config).draft_config_problems(config)
    return config


def _check_tensors(report: ArtifactReport, config: dict[str, Any]) -> None:
    weight_files = sorted(n for n in report.manifest.files if n.endswith(".safetensors"))
    for name in weight_files:
        try:
            header = read_header(report.path / name)
        except (FastMTPError, OSError) as exc:
            report.problems.append(str(exc))
            continue
        if header.metadata.get("format") != "pt":
            report.problems.append(f"{name} lacks __metadata__ format 'pt'")
        for t in header.tensors.values():
            if t.name in report.tensors:
                report.problems.append(f"{t.name} appears in more than one file")
            report.tensors[t.name] = (t.dtype, t.shape, name)
    index = report.path / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_bytes())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            report.problems.append(f"{INDEX_NAME} is unreadable ({exc})")
        else:
            found = {k: v[2] for k, v in report.tensors.items()}
            if weight_map != found:
                report.problems.append(f"{INDEX_NAME} does not match the shard contents")
    for k, entry in report.manifest.tensors.items():
        seen = report.tensors.get(k)
        if seen is not None and (seen[0], list(seen[1]), seen[2]) != (
            entry.dtype,
            entry.shape,
            entry.file,
        ):
            report.problems.append(f"{k} differs from its manifest entry")
    reader = READERS.get(report.manifest.family)
    if reader is not None and config:
        try:
            reader = reader.draft_layout(config)
            shapes = {k: v[1] for k, v in report.tensors.items()}
            contract = reader.contract_for(config, shapes.keys())
            fp8 = sorted(k for k, v in report.tensors.items() if v[0] == FP8_CODE)
            scheme = block_fp8(config)
            report.problems += _fp8_config_problems(fp8, scheme is not None)
            block = scheme.block if scheme is not None else (128, 128)
            problems = contract_problems(contract, config, shapes, fp8=fp8, block=block)
            report.problems += problems
            if not problems:
                report.engines = reader.engines(config, shapes.keys())
                if fp8:  # vLLM's loading of a kept FP8 head is not checked here
                    report.engines.pop("vllm", None)
        except FastMTPError as exc:
            report.problems.append(str(exc))


def _fp8_config_problems(fp8: list[str], block_config: bool) -> list[str]:
    """SGLang quantizes a draft's layers by its config: fp8 tensors need a block-FP8
    ``quantization_config`` (else they load unscaled), and such a config needs fp8
    tensors (else bf16 weights are cast into fp8 layers whose scales nothing fills)."""
    if fp8 and not block_config:
        return [
            f"{fp8[0]} is {FP8_CODE} but config.json has no block-FP8 quantization_config "
            "(quant_method fp8, weight_block_size): SGLang would load it unscaled"
        ]
    if block_config and not fp8:
        return [
            "config.json has a block-FP8 quantization_config but no tensor is fp8: SGLang "
            "would build fp8 layers and fill them from unquantized weights"
        ]
    return []


def _check_maps(report: ArtifactReport, config: dict[str, Any]) -> None:
    """Each shipped map loads as SGLang loads it and is safe to serve (imports torch)."""
    maps = report.manifest.token_maps
    if maps is None:
        return
    if maps.default_lang not in maps.languages:
        report.problems.append(f"default language {maps.default_lang!r} has no map")
    vocab = language_config(config).get("vocab_size")
    if not isinstance(vocab, int):
        report.problems.append("config.json has no vocab_size to check the token maps against")
        return
    shipped = [(lang, e.file, maps.size) for lang, e in sorted(maps.languages.items())]
    if maps.union is not None:
        shipped.append(("union", maps.union.file, maps.union.size))
    for name, file, size in shipped:
        if file not in report.manifest.files:
            report.problems.append(f"token map {file} ({name}) is not listed in files")
            continue
        if not (report.path / file).is_file():
            continue  # already reported by _check_files
        try:
            load_token_map(
                report.path / file, vocab_size=vocab, required=maps.required_ids, size=size
            )
        except FastMTPError as exc:
            report.problems.append(str(exc))
    for lang, e in sorted(maps.languages.items()):
        r = e.ranking
        if r is None:
            continue
        if r.file not in report.manifest.files:
            report.problems.append(f"ranking {r.file} ({lang}) is not listed in files")
        elif (report.path / r.file).is_file():
            try:
                load_ranking(report.path / r.file, vocab_size=vocab, size=r.size)
            except FastMTPError as exc:
                report.problems.append(str(exc))
