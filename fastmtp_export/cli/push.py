"""``fastmtp-export push DIR --repo-id ORG/NAME``: publish an artifact in one commit."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from ._errors import handle_errors
from ._options import ArtifactArg, JsonOpt, QuietOpt
from ._output import emit_json, human_bytes, setup_logging

if TYPE_CHECKING:
    from ..hub.push import PushPlan

log = logging.getLogger("fastmtp_export.cli")

EXAMPLES = """Examples:

\b
  fastmtp-export push ./mimo-fastmtp-draft --repo-id acme/mimo-7b-rl-fastmtp --dry-run
  fastmtp-export push ./mimo-fastmtp-draft --repo-id acme/mimo-7b-rl-fastmtp \\
      --base-model XiaomiMiMo/MiMo-7B-RL --private
  fastmtp-export push ./draft --repo-id acme/mimo-7b-rl-fastmtp --create-pr \\
      --commit-message "Maps from the v2 distillation set"
"""


def render_plan(plan: PushPlan) -> str:
    lines = [f"would upload to {plan.repo_id} in one commit:"]
    width = max(len(f.path_in_repo) for f in plan.files)
    lines += [
        f"  {f.path_in_repo:<{width}}  {human_bytes(f.size):>9}  sha256 {f.sha256}"
        for f in plan.files
    ]
    total = sum(f.size for f in plan.files)
    lines += [f"total {human_bytes(total)} in {len(plan.files)} files", "", "model card:", ""]
    lines.append(plan.card)
    return "\n".join(lines)


@handle_errors
def push(
    artifact: ArtifactArg,
    repo_id: Annotated[
        str,
        typer.Option(help="Hub repository, ORG/NAME (created if needed).", show_default=False),
    ],
    revision: Annotated[
        str | None, typer.Option(help="Branch to commit to (created if needed) [default: main].")
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="Create the repository as private.")
    ] = False,
    create_pr: Annotated[
        bool, typer.Option("--create-pr", help="Open a pull request instead of committing.")
    ] = False,
    commit_message: Annotated[str | None, typer.Option(help="The commit title.")] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Hub token; '-' reads it from stdin. A token on the command line lands in "
            "shell history: prefer HF_TOKEN or '-' [default: HF_TOKEN, else the stored "
            "`hf auth login`].",
            metavar="TOKEN|-",
        ),
    ] = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            help="Hub id of the base model, for the card [default: inferred from a Hub "
            "cache path of the export source]."
        ),
    ] = None,
    base_revision: Annotated[
        str | None, typer.Option(help="The base model's Hub revision, for the card.")
    ] = None,
    license: Annotated[
        str | None,
        typer.Option(help="Licence id for the card [default: the base model's]."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List the files (size, sha256) and the card; no network."),
    ] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Publish an artifact to the Hugging Face Hub: one commit, with a refreshed model card.

    Validates the artifact as `inspect` does and refuses an invalid one, creates the
    repository if needed, refreshes README.md (base model, launch commands, maps,
    evaluation, provenance) and uploads every file in a single commit. Prints the
    commit URL. A failed push changes neither the artifact nor the Hub (a repo or branch
    it created is deleted again).
    """
    from ..artifact.model_card import CardOptions
    from ..errors import FastMTPError
    from ..hub.push import plan_push
    from ..hub.push import push as do_push

    setup_logging(quiet)
    if token == "-":
        token = sys.stdin.readline().strip()
        if not token:
            raise FastMTPError("--token - read an empty line from stdin; pipe the token in")
    elif token is not None:
        log.warning(
            "a token given as --token TOKEN lands in shell history and process listings; "
            "use HF_TOKEN or --token - (stdin) instead"
        )
    card = CardOptions(
        repo_id=repo_id, base_model=base_model, base_revision=base_revision, license=license
    )
    plan = plan_push(artifact, repo_id, card)
    if dry_run:
        if json_out:
            emit_json({**plan.to_json(), "dry_run": True, "card": plan.card})
        else:
            typer.echo(render_plan(plan))
        return
    if not quiet:
        total = human_bytes(sum(f.size for f in plan.files))
        log.info("uploading %d files (%s) to %s", len(plan.files), total, repo_id)
    result = do_push(
        plan,
        revision=revision,
        private=private,
        create_pr=create_pr,
        commit_message=commit_message,
        token=token,
    )
    if json_out:
        emit_json(result.to_json())
    else:
        typer.echo(result.pr_url or result.commit_url)
