"""sha256 of files and bytes: the one digest every manifest, summary and Hub upload uses."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: read size for hashing existing files; large enough that hashing runs at disk speed.
CHUNK_BYTES = 16 << 20


def sha256_file(path: Path) -> str:
    """sha256 of a whole file, read in chunks (for validating an existing artifact)."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """sha256 of bytes already in memory (a config, a card)."""
    return hashlib.sha256(data).hexdigest()
