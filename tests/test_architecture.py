"""Executable layout rules: sglang is imported only by the plugin's hook modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the only modules allowed to import sglang (added with the sglang_patch issue).
SGLANG_IMPORTERS = {"sglang_patch/hooks.py", "sglang_patch/plugin.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_sglang_is_imported_only_by_hook_modules() -> None:
    files = sorted((ROOT / "fastmtp_export").rglob("*.py")) + sorted(
        (ROOT / "sglang_patch").rglob("*.py")
    )
    assert files
    offenders = [
        str(f.relative_to(ROOT))
        for f in files
        if "sglang" in _imports(f) and str(f.relative_to(ROOT)) not in SGLANG_IMPORTERS
    ]
    assert offenders == []


def test_no_click_imports() -> None:
    """typer vendors click since 0.26; importing click directly breaks the CLI."""
    files = sorted((ROOT / "fastmtp_export").rglob("*.py"))
    assert [str(f) for f in files if "click" in _imports(f)] == []
