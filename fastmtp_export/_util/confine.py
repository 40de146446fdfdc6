"""File names read from documents stay inside their directory.

A manifest or a map summary is data from elsewhere (an artifact downloaded from the
Hub); a name in it such as ``../../.ssh/id_rsa``, an absolute path or a symbolic link
pointing out of the directory must never make the tools read, hash, upload or serve a
file outside it. Names are checked twice: their form when the document is parsed
(:data:`PlainName`), and links on disk before any file is opened (:func:`escapes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from ..errors import ArtifactError


def plain_file_name(name: str) -> str:
    """``name`` when it is one plain path component; raises ``ValueError`` otherwise."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(
            f"file name {name!r} must be a plain file name inside the artifact "
            "(no '/', '..' or absolute path)"
        )
    return name


#: a ``str`` field or key that must be a plain file name (checked when parsed)
PlainName = Annotated[str, AfterValidator(plain_file_name)]


def escapes(root: Path, name: str) -> bool:
    """Whether ``root / name`` resolves (through symbolic links) outside ``root``.

    A Hugging Face cache snapshot (``models--ORG--NAME/snapshots/<sha>``) links its files
    to the repository's ``blobs`` folder: those links stay inside the repository's cache.
    """
    target = (root / name).resolve()
    return not any(target.is_relative_to(r) for r in _confines(root.resolve()))


def _confines(root: Path) -> list[Path]:
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith(
        ("models--", "datasets--", "spaces--")
    ):
        return [root, root.parent.parent / "blobs"]
    return [root]


def refuse_escaping_links(root: Path, names: Iterable[str]) -> None:
    """Raise when any of ``names`` is a link resolving outside ``root``.

    Raises:
        ArtifactError: naming the first such file.
    """
    for name in names:
        if escapes(root, name):
            raise ArtifactError(
                f"{name} in {root} links outside {root.name}; replace the link with the file itself"
            )
