"""All-or-nothing output directories, safe against a kill at any instant.

An artifact is built in a hidden temporary sibling of the destination (same file
system, so the final rename is atomic), fsynced, and moved into place only when
complete. An existing destination is swapped with the new tree in one atomic
``renameat2(RENAME_EXCHANGE)`` where the kernel has it (Linux >= 3.15), so the path
always names a complete artifact, the old one or the new one. Elsewhere the swap is two
renames, and a kill between them is repaired by the next run (the old tree is put
back). Any failure, including running out of disk or Ctrl-C, removes the temporary
directory and leaves the destination exactly as it was.

One run at a time writes a destination: each holds ``flock`` on a lock file next to it,
``.<name>.lock``, from before it looks at the parent until it has published, and a second
run into the same destination fails at once in one line. A ``kill -9`` cannot clean up;
the next run, holding that lock, deletes the temporary directories of our naming that no
live run holds. Holding the lock before recovery and ``mkdtemp`` leaves no window in
which one run's recovery could delete another's fresh directory.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError

log = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


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
    except OSError as exc:
        raise OutputError(
            f"cannot create --out {out}: {exc.strerror or exc}; choose a writable location"
        ) from exc
    with run_lock(out):
        try:
            _recover(out)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
            tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; publish like mkdir
            lock = _hold(tmp)
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
        finally:
            os.close(lock)


def lock_path(out: Path) -> Path:
    """The lock file a run into ``out`` holds: ``.<name>.lock`` next to it."""
    return out.parent / f".{out.name}.lock"


_NO_FLOCK_WARNING = (
    "cannot lock %s (%s): this file system has no flock, so a second run into %s at the "
    "same time is not detected and a killed run's temporary directory is not cleaned up"
)


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` (``flock``, exclusive) for the whole run into ``out``.

    The file is removed on the way out while still locked; a run that opened it just
    before then finds, once it holds the lock, that the path no longer names the file
    it locked, and starts again on a fresh one. A kill leaves the file behind: the next
    run locks and removes it (the kernel released the lock with the killed process).

    Raises:
        OutputError: another live run holds the lock, or the file cannot be created.
    """
    path = lock_path(out)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(
                f"cannot create the lock file {path}: {exc.strerror or exc}; choose a "
                "writable location for --out"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"another run is writing --out {out} (it holds {path.name}); wait for it "
                "to finish, or choose another --out"
            ) from None
        except OSError as exc:  # no flock here: run unguarded, and say so
            log.warning(_NO_FLOCK_WARNING, path, exc.strerror or exc, out)
            break
        try:
            same = os.path.samestat(os.fstat(fd), path.stat())
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed it after we opened it: retry
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still locked: nobody can hold this file now
        os.close(fd)


def _hold(directory: Path) -> int:
    """An fd holding an exclusive lock on ``directory`` while this run uses it (released
    by the kernel when the process dies, however it dies)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # only a process outside the run lock (an older version)
        log.warning("%s is locked by another process, which may delete it", directory)
    except OSError as exc:  # no flock on this file system: never cleaned up by others
        log.warning(
            "cannot lock %s (%s); it will not be cleaned up if this run is killed",
            directory, exc.strerror or exc,
        )  # fmt: skip
    return fd


def _abandoned(directory: Path) -> bool:
    """Whether no live run holds ``directory`` (we take the lock, so nobody else can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _recover(out: Path) -> None:
    """Repair what a killed run left next to ``out``: put back a previous tree that a kill
    between the two renames of the fallback swap left aside, and delete abandoned
    temporary directories of our naming."""
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if not _abandoned(old):
            continue
        kept = old / out.name
        if kept.is_dir() and not out.exists():
            kept.rename(out)
            log.warning("restored %s, which an interrupted run had moved aside", out)
        shutil.rmtree(old, ignore_errors=True)
    for tmp in sorted(out.parent.glob(f".{out.name}.tmp-*")):
        if tmp.is_dir() and _abandoned(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("removed %s, left by an interrupted run", tmp.name)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` (and ``root``) to disk, so a power
    loss after the publishing rename cannot leave a renamed tree of empty files."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap ``a`` and ``b`` with ``renameat2(RENAME_EXCHANGE)``; ``False`` where
    the kernel, libc or file system lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _publish(tmp: Path, out: Path) -> None:
    """Move the complete ``tmp`` to ``out``; an existing ``out`` is swapped out, then deleted."""
    _fsync_tree(tmp)
    if not out.exists():
        tmp.rename(out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous tree
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        lock = _hold(old)
        try:
            out.rename(old / out.name)
            try:
                tmp.rename(out)
            except OSError:
                (old / out.name).rename(out)  # put the previous artifact back
                raise
        finally:
            os.close(lock)
            shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out.parent)


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
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_via(path: Path, write: Callable[[Path], None]) -> None:
    """Replace ``path`` with the file ``write(tmp)`` creates at a temporary path beside it,
    all at once: a crash leaves the old file or the new one. For writers that take a
    path (safetensors' ``save_file``), so a large file is never held in memory as bytes.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.chmod(0o666 & ~current_umask())
        tmp.replace(path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
