"""The ``fastmtp-export`` command: a thin typer adapter over the library.

Command modules import their heavy dependencies (torch, pydantic, safetensors)
inside the command body, so ``fastmtp-export --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .._version import __version__
from .demo import demo
from .distill import EXAMPLES as DISTILL_EXAMPLES
from .distill import distill
from .eval import EXAMPLES as EVAL_EXAMPLES
from .eval import eval_
from .export import EXAMPLES as EXPORT_EXAMPLES
from .export import export
from .families import families
from .inspect import inspect
from .push import EXAMPLES as PUSH_EXAMPLES
from .push import push
from .record_hidden import EXAMPLES as RECORD_HIDDEN_EXAMPLES
from .record_hidden import record_hidden
from .token_map import app as token_map_app
from .train import EXAMPLES as TRAIN_EXAMPLES
from .train import train

app = typer.Typer(
    name="fastmtp-export",
    help="Turn a trained FastMTP MTP head into a small SGLang speculative-decoding draft.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fastmtp-export {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Turn a trained FastMTP MTP head into a small SGLang speculative-decoding draft.

    Set FASTMTP_DEBUG=1 to see the traceback behind any error.
    """


app.command(epilog=DISTILL_EXAMPLES)(distill)
app.command(epilog=RECORD_HIDDEN_EXAMPLES)(record_hidden)
app.command(epilog=TRAIN_EXAMPLES)(train)
app.command(epilog=EXPORT_EXAMPLES)(export)
app.command()(inspect)
app.command()(families)
app.command(name="eval", epilog=EVAL_EXAMPLES)(eval_)
app.command(epilog=PUSH_EXAMPLES)(push)
app.command()(demo)
app.add_typer(token_map_app, name="token-map")


def main() -> None:
    """Console-script entry point."""
    app()
