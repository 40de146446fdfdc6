"""Executable layout rules (docs/architecture.md): the pipeline's stages and who may import whom.

Every import is checked, function-local ones included, relative or absolute.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "fastmtp_export"
#: the pipeline, in order; a stage imports only the stages listed for it, plus itself
#: and the shared top-level modules (errors, version)
ALLOWED: dict[str, set[str]] = {
    "_util": set(),
    "checkpoints": {"_util"},
    "heads": {"_util", "checkpoints"},
    "maps": {"_util", "checkpoints"},
    "artifact": {"_util", "checkpoints", "maps"},
    "evaluate": {"_util", "checkpoints", "heads", "maps", "artifact"},
    "train": {"_util", "checkpoints", "heads", "maps", "artifact", "evaluate"},
    "hub": {"_util", "checkpoints", "maps", "artifact"},
    "cli": {"_util", "checkpoints", "heads", "maps", "artifact", "evaluate", "train", "hub"},
}
SHARED = {"errors", "_version"}
#: top-level modules: the lazy public API, ``python -m``, and the shared ones
TOP_LEVEL = {"__init__", "__main__"} | SHARED
#: what the SGLang plugin may use at serve time: reading an artifact, never building one
PLUGIN_ALLOWED = {"_util", "checkpoints", "maps", "artifact"}
#: the only modules allowed to import sglang: the plugin's entry point and hook modules
SGLANG_IMPORTERS = {"sglang_patch/plugin.py"} | {
    f"sglang_patch/hooks/{m}.py"
    for m in ("__init__", "guard", "startup", "draft", "detect", "report", "targets")
}
MAX_LINES = 400


def _files(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def _module(path: Path) -> list[str]:
    """Dotted name parts of ``path`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path) -> Iterator[str]:
    """Absolute dotted names of every import in ``path`` (``from a import b`` gives ``a.b``)."""
    me = _module(path)
    package = me if path.name == "__init__.py" else me[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                parts = base + (node.module.split(".") if node.module else [])
            else:
                parts = (node.module or "").split(".")
            yield from (".".join([*parts, a.name]) for a in node.names)


def _stage(dotted: str) -> str | None:
    """The stage (or shared module) a ``fastmtp_export.*`` name belongs to."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == PKG and len(parts) > 1 else None


def test_stages_import_only_earlier_stages() -> None:
    offenders = []
    files = _files(PKG)
    assert len(files) > 40
    for f in files:
        here = _stage(".".join(_module(f)))
        if here is None or here not in ALLOWED:
            continue  # top-level modules; a stray one fails the next test
        allowed = ALLOWED[here] | SHARED | {here}
        for name in _imports(f):
            there = _stage(name)
            if there is not None and there not in allowed:
                offenders.append(f"{f.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_every_module_belongs_to_a_stage() -> None:
    """A new module lands in a stage package, not beside them."""
    top = {p.stem for p in (ROOT / PKG).glob("*.py")}
    packages = {p.parent.name for p in (ROOT / PKG).glob("*/__init__.py")}
    assert top == TOP_LEVEL
    assert packages == set(ALLOWED)


def test_stage_packages_import_nothing() -> None:
    """The plugin and the CLI import single modules; a package must not drag in its siblings."""
    heavy = {
        str(p.relative_to(ROOT)): sorted(_imports(p))
        for p in (ROOT / PKG).glob("*/__init__.py")
        if p.parent.name != "cli"
    }
    assert len(heavy) == len(ALLOWED) - 1
    assert {k: [n for n in v if n != "__future__.annotations"] for k, v in heavy.items()} == {
        k: [] for k in heavy
    }


def test_the_plugin_reads_artifacts_and_never_builds_them() -> None:
    offenders = [
        f"{f.relative_to(ROOT)} imports {name}"
        for f in _files("sglang_patch")
        for name in _imports(f)
        if (stage := _stage(name)) is not None and stage not in PLUGIN_ALLOWED | SHARED
    ]
    assert offenders == []


def test_sglang_is_imported_only_by_hook_modules() -> None:
    files = _files(PKG, "sglang_patch")
    offenders = [
        str(f.relative_to(ROOT))
        for f in files
        if any(n.split(".")[0] == "sglang" for n in _imports(f))
        and str(f.relative_to(ROOT)) not in SGLANG_IMPORTERS
    ]
    assert offenders == []


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(f.relative_to(ROOT)): n
        for f in _files(PKG, "sglang_patch")
        if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def _renames(path: Path) -> list[int]:
    """Lines that rename or replace a file: ``os.rename/replace``, ``shutil.move``,
    ``Path.rename/replace``.

    ``str.replace`` takes two arguments, ``Path.replace`` one, which tells them apart.
    """
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, nargs = node.func.attr, len(node.args) + len(node.keywords)
            on = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            if (
                attr == "rename"
                or (attr == "replace" and (nargs == 1 or on == "os"))
                or (attr == "move" and on == "shutil")
            ):
                lines.append(node.lineno)
    return lines


def test_one_atomic_write_implementation() -> None:
    """Publishing a file or directory goes through ``_util/atomic.py``, nowhere else."""
    found = {
        str(f.relative_to(ROOT)): lines
        for f in _files(PKG, "sglang_patch")
        if (lines := _renames(f))
    }
    assert set(found) == {f"{PKG}/_util/atomic.py"}


def test_no_click_imports() -> None:
    """typer vendors click since 0.26; importing click directly breaks the CLI."""
    offenders = [
        str(f) for f in _files(PKG) if any(n.split(".")[0] == "click" for n in _imports(f))
    ]
    assert offenders == []
