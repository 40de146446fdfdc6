"""All-or-nothing output directories.

An artifact is built in a hidden temporary sibling of the destination (same file
system, so the final ``rename`` is atomic) and moved into place only when complete.
Any failure, including running out of disk or Ctrl-C, removes the temporary directory
and leaves the destination exactly as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError


def current_umask() -> int:
    """The process umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


@contextmanager
def atomic_directory(
    out: Path, *, overwrite: bool, protect: Path | Iterable[Path] | None = None
) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``out`` on success.

    Args:
        out: the final directory.
        overwrite: replace an existing non-empty ``out``; refused otherwise.
        protect: paths that must never be modified or deleted (the export SOURCE,
            corpus files): ``out`` may be neither inside one nor contain one.

    Raises:
        OutputError: ``out`` is a file, exists non-empty without ``overwrite``,
            overlaps ``protect``, or cannot be created or written (incl. disk full).
    """
    out = Path(out).absolute()
    guarded = [protect] if isinstance(protect, Path) else list(protect or ())
    real = out.resolve()
    for path in guarded:
        path = path.resolve()
        if _inside(real, path) or _inside(path, real):
            raise OutputError(
                f"--out {out} overlaps the input {path}; inputs are never modified, "
                "choose an output directory outside it"
            )
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputError(f"--out {out} exists and is not a directory; choose another path")
        if any(out.iterdir()) and not overwrite:
            raise OutputError(
                f"--out {out} exists and is not empty; pass --overwrite to replace it"
            )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; publish like mkdir would
    except OSError as exc:
        raise OutputError(
            f"cannot create --out {out}: {exc.strerror or exc}; choose a writable location"
        ) from exc
    try:
        yield tmp
        _publish(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        hint = "free some space" if exc.errno == errno.ENOSPC else "check the location"
        raise OutputError(
            f"writing {out} failed: {exc.strerror or exc}; nothing was written, {hint} "
            "or choose another --out"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; an existing ``out`` is swapped away, then deleted."""
    if not out.exists():
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    out.rename(old / out.name)
    try:
        tmp.rename(out)
    except OSError:
        (old / out.name).rename(out)  # put the previous artifact back
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once: a crash leaves the old file or the new one.

    The new file keeps the old one's permission bits (or the umask's default).
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o666 & ~current_umask()
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
