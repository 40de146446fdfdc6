"""One place that turns exceptions into one-line messages and exit codes.

Commands are wrapped with :func:`handle_errors` (rather than catching in ``main``) so
that ``typer.testing.CliRunner`` sees exactly what a user sees.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from ..errors import FastMTPError

F = TypeVar("F", bound=Callable[..., Any])

#: set to 1 to get the full traceback of any reported error.
DEBUG_ENV = "FASTMTP_DEBUG"


def fail(message: str, exc: BaseException | None = None, code: int = 1) -> typer.Exit:
    """Print ``error: message`` (traceback first under FASTMTP_DEBUG) and return Exit."""
    if exc is not None and os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)
    typer.echo(f"error: {' '.join(message.split())}", err=True)  # always one line
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Decorator: FastMTPError/OSError -> one line on stderr + exit 1; Ctrl-C -> 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FastMTPError as exc:
            raise fail(str(exc), exc) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise fail(f"{exc.strerror or exc}{where}", exc) from None
        except KeyboardInterrupt as exc:
            raise fail("interrupted; nothing was written", exc, code=130) from None

    return wrapper  # type: ignore[return-value]
