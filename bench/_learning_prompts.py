"""A varied English prompt set for the learning curve (bench/bench_learning_curve.py).

Three kinds, all generated here with no download, the same on every machine with the
same Python: explanations of standard-library docstrings, Python code tasks over
standard-library callables, and general instructions over a fixed topic list. Held-out
prompts come from held-out *items* (paragraphs, callables, topics), so no held-out
prompt shares its subject with a training prompt.
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.real_model.prompts import MODULES, TEMPLATES, paragraphs  # noqa: E402

CODE_TEMPLATES = (
    "Write a short Python example that uses {name} and explain what it prints.",
    "Show how to call {name} in Python, with a one-line comment per line.",
    "Write a small Python function that uses {name}, and a test for it.",
)
GENERAL_TEMPLATES = (
    "Explain {topic} to a ten-year-old.",
    "Give three practical tips about {topic}.",
    "Write a short paragraph about {topic}.",
    "What are the most common mistakes people make with {topic}?",
    "List the pros and cons of {topic}.",
    "Write a short story that involves {topic}.",
)
TOPICS = (
    "learning a new language", "saving money", "growing tomatoes", "public speaking",
    "time management", "writing a cover letter", "cooking rice", "training for a 5k run",
    "the water cycle", "photosynthesis", "black holes", "volcanoes", "the French Revolution",
    "the printing press", "electric cars", "solar panels", "recycling plastic",
    "sleeping well", "drinking enough water", "keeping a journal", "teamwork",
    "remote work", "job interviews", "making friends in a new city", "reading more books",
    "learning to play the guitar", "bird watching", "caring for a cat", "training a dog",
    "planning a birthday party", "travelling on a budget", "packing for a trip",
    "camping in the mountains", "baking bread", "making coffee", "meditation",
    "stretching after exercise", "climate change", "the human heart", "vaccines",
    "the moon landing", "ancient Egypt", "the Roman Empire", "chess openings",
    "learning mathematics", "studying for exams", "writing a poem", "painting with watercolors",
    "renting an apartment", "buying a used car", "fixing a flat tire", "home insulation",
    "password security", "backing up a computer", "email etiquette", "giving feedback",
    "running a meeting", "starting a small business", "volunteering", "composting",
)  # fmt: skip


def code_names() -> list[str]:
    """Public functions and classes of the standard-library modules, ``module.name``."""
    names = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj):
                names.append(f"{module_name}.{attr}")
    return sorted(set(names))


def _split(items: list[str], held: int, rng: random.Random) -> tuple[list[str], list[str]]:
    items = list(items)
    rng.shuffle(items)
    return items[held:], items[:held]


def build(held_per_kind: int = 16, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(training prompts, held-out prompts) as distill prompt records with ``kind``."""
    rng = random.Random(seed)
    train: list[dict] = []
    held: list[dict] = []
    docs_train, docs_held = _split(paragraphs(), held_per_kind, rng)
    names_train, names_held = _split(code_names(), held_per_kind, rng)
    topics_train, topics_held = _split(list(TOPICS), held_per_kind // 2, rng)
    for kind, items, templates in (
        ("doc", docs_train, TEMPLATES),
        ("code", names_train, CODE_TEMPLATES),
        ("general", topics_train, GENERAL_TEMPLATES),
    ):
        key = {"doc": "doc", "code": "name", "general": "topic"}[kind]
        if kind == "code":  # one template per callable: hundreds of callables already
            train += [
                {"kind": kind, "text": rng.choice(templates).format(**{key: it})} for it in items
            ]
        else:
            train += [
                {"kind": kind, "text": t.format(**{key: it})} for it in items for t in templates
            ]
    held += [{"kind": "doc", "text": rng.choice(TEMPLATES).format(doc=d)} for d in docs_held]
    held += [
        {"kind": "code", "text": rng.choice(CODE_TEMPLATES).format(name=n)} for n in names_held
    ]
    held += [
        {"kind": "general", "text": t.format(topic=topic)}
        for topic in topics_held
        for t in rng.sample(GENERAL_TEMPLATES, 2)
    ]
    rng.shuffle(train)
    for i, rec in enumerate(train):
        rec["id"], rec["lang"] = f"t{i}", "en"
    for i, rec in enumerate(held):
        rec["id"], rec["lang"] = f"h{i}", "en"
    return train, held


def write(path: Path, records: list[dict]) -> Path:
    """One JSON record per line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


if __name__ == "__main__":
    tr, he = build()
    kinds = {k: sum(r["kind"] == k for r in tr) for k in ("doc", "code", "general")}
    print(len(tr), len(he), kinds)
