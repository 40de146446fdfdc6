"""English prompts from the docstrings of Python's standard library, the same on every
machine with the same Python: real prose about real things, no download."""

from __future__ import annotations

import importlib
import inspect
import json
import random
import re
from pathlib import Path

MODULES = (
    "argparse", "array", "base64", "bisect", "calendar", "collections", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fnmatch", "fractions",
    "functools", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "inspect",
    "io", "itertools", "json", "logging", "math", "operator", "os", "os.path", "pathlib",
    "pprint", "queue", "random", "re", "secrets", "select", "shutil", "socket", "sqlite3",
    "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "time", "traceback", "typing", "unittest", "urllib.parse", "uuid", "warnings",
    "weakref", "zipfile",
)  # fmt: skip
TEMPLATES = (
    "Explain in simple words what this Python documentation says:\n\n{doc}",
    "Summarize the following in one or two sentences:\n\n{doc}",
    "Give a short example of when you would use this:\n\n{doc}",
    "Rewrite this for a beginner:\n\n{doc}",
)
_PROSE = re.compile(r"^[A-Z][^`>{}|\[\]]{80,400}[.]$")


def paragraphs() -> list[str]:
    """First paragraphs of standard-library docstrings that read as plain prose."""
    found: set[str] = set()
    for name in MODULES:
        module = importlib.import_module(name)
        for _attr, obj in sorted(vars(module).items()):
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            first = " ".join(doc.split("\n\n", 1)[0].split())
            if _PROSE.match(first):
                found.add(first)
    return sorted(found)


def prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct prompts, a seeded choice of paragraphs and instructions."""
    rng = random.Random(seed)
    docs = paragraphs()
    rng.shuffle(docs)
    if n > len(docs):
        raise ValueError(f"only {len(docs)} paragraphs; ask for fewer prompts")
    return [rng.choice(TEMPLATES).format(doc=d) for d in docs[:n]]


def write_prompts(path: Path, texts: list[str]) -> Path:
    """A distill prompt file, one ``{"id", "text", "lang": "en"}`` per line."""
    path.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "text": t, "lang": "en"}) + "\n" for i, t in enumerate(texts)
        )
    )
    return path
