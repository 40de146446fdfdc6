"""Publish an artifact to the Hugging Face Hub in one commit (``fastmtp-export push``).

huggingface_hub does the talking (``create_repo``, ``create_branch``, ``create_commit``)
with its own retry policy; this module validates first, refreshes the model card, and
turns every Hub failure into one actionable line. A Hub commit is atomic: a failure
leaves the repository as it was.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util.hashing import sha256_bytes, sha256_file
from ..artifact import manifest as mf
from ..artifact.model_card import CARD_NAME, CardOptions, render_card
from ..errors import HubError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadFile:
    path_in_repo: str
    local: Path
    size: int
    sha256: str
    #: the bytes to upload when they are not the local file's (card, cleaned manifest)
    data: bytes | None = None


@dataclass(frozen=True)
class PushPlan:
    """What a push uploads: every artifact file, the manifest and the refreshed card."""

    artifact: Path
    repo_id: str
    files: list[UploadFile]
    card: str

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "files": [
                {"path": f.path_in_repo, "size": f.size, "sha256": f.sha256} for f in self.files
            ],
            "total_bytes": sum(f.size for f in self.files),
        }


@dataclass(frozen=True)
class PushResult:
    commit_url: str
    commit_oid: str
    pr_url: str | None
    repo_url: str
    plan: PushPlan

    def to_json(self) -> dict[str, Any]:
        return {
            "commit_url": self.commit_url,
            "commit_oid": self.commit_oid,
            "pr_url": self.pr_url,
            "repo_url": self.repo_url,
            **self.plan.to_json(),
        }


def check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo_id):
        raise HubError(f"--repo-id {repo_id!r} is not ORG/NAME (for example acme/mimo-fastmtp)")


def plan_push(artifact: Path, repo_id: str, card: CardOptions) -> PushPlan:
    """Validate the artifact as ``inspect`` does and list what would be uploaded.

    The card is rendered (not written): a dry run changes nothing.

    Raises:
        ArtifactError: the artifact is invalid.
        HubError: the repo id is malformed.
    """
    from ..artifact.inspect import inspect_artifact

    check_repo_id(repo_id)
    report = inspect_artifact(artifact)
    report.raise_for_problems()
    manifest = report.manifest
    files = [
        UploadFile(name, artifact / name, entry.size, entry.sha256)
        for name, entry in sorted(manifest.files.items())
    ]
    manifest_path = artifact / mf.MANIFEST_NAME
    public = mf.public_source(manifest.source)
    if public != manifest.source:  # written by an older version, with a local path
        # fastmtp.json lists no hash of itself, so the cleaned copy leaves every hash valid
        manifest = manifest.model_copy(update={"source": public})
        raw = manifest.canonical_json().encode()
        log.info("%s records a local source path; publishing its name only", mf.MANIFEST_NAME)
        files.append(UploadFile(mf.MANIFEST_NAME, manifest_path, len(raw), sha256_bytes(raw), raw))
    else:
        files.append(
            UploadFile(
                mf.MANIFEST_NAME,
                manifest_path,
                manifest_path.stat().st_size,
                sha256_file(manifest_path),
            )
        )
    if not card.engines:  # what this artifact's layout serves, as inspect found it
        card = dataclasses.replace(card, engines=report.engines)
    text = render_card(manifest, card, licence_from=artifact)
    data = text.encode()
    files.append(UploadFile(CARD_NAME, artifact / CARD_NAME, len(data), sha256_bytes(data), data))
    return PushPlan(artifact, repo_id, files, text)


def push(
    plan: PushPlan,
    *,
    revision: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Create the repo if needed and upload ``plan`` as one commit.

    The card (and a manifest cleaned of a local source path) is committed from memory
    and written into the artifact only after the commit succeeded, so a failed push
    leaves the artifact exactly as it was and a successful one matches the Hub. A repo or
    branch this push created is deleted again when the commit fails (the Hub's commit
    is atomic: nothing else can be left behind).

    Raises:
        HubError: authentication, permission, network or server failure (one line).
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from .._util.atomic import atomic_write

    api = HfApi(token=token)
    endpoint = api.endpoint
    message = commit_message or f"Upload FastMTP draft ({len(plan.files)} files, fastmtp-export)"
    operations = [
        CommitOperationAdd(f.path_in_repo, f.data if f.data is not None else str(f.local))
        for f in plan.files
    ]
    created_repo = created_branch = False
    with _hub_errors(plan.repo_id, endpoint):
        try:
            repo_url = str(api.create_repo(plan.repo_id, private=private))
            created_repo = True
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status not in (401, 402, 403, 409):
                raise
            if status != 409:  # a token may write to a repo it may not create
                try:
                    api.repo_info(plan.repo_id)
                except HfHubHTTPError:
                    raise exc from None
            repo_url = f"{endpoint}/{plan.repo_id}"  # it exists: push into it
        branch = str(revision) if revision not in (None, "main") and not create_pr else None
        try:
            if branch is not None:
                try:
                    api.create_branch(plan.repo_id, branch=branch)
                    created_branch = True
                except HfHubHTTPError as exc:
                    if exc.response is None or exc.response.status_code != 409:
                        raise
            info = api.create_commit(
                plan.repo_id,
                operations=operations,
                commit_message=message,
                revision=revision,
                create_pr=create_pr,
            )
        except BaseException:
            _undo(api, plan.repo_id, repo=created_repo, branch=branch if created_branch else None)
            raise
    for f in plan.files:
        if f.data is not None:
            atomic_write(f.local, f.data)
    return PushResult(info.commit_url, info.oid, info.pr_url, repo_url, plan)


def _undo(api: Any, repo_id: str, *, repo: bool, branch: str | None) -> None:
    """Delete what a failed push created (its repo, else its branch); never raises."""
    try:
        if repo:
            api.delete_repo(repo_id)
            log.info("deleted %s, which this failed push had created", repo_id)
        elif branch is not None:
            api.delete_branch(repo_id, branch=branch)
            log.info("deleted branch %s of %s, which this failed push had created", branch, repo_id)
    except Exception as exc:  # the push's own error is the one to report
        log.warning("could not delete what the failed push created in %s (%s)", repo_id,
                    type(exc).__name__)  # fmt: skip


@contextmanager
def _hub_errors(repo_id: str, endpoint: str) -> Iterator[None]:
    """Translate huggingface_hub and transport exceptions into :class:`HubError`."""
    try:
        yield
    except Exception as exc:
        message = describe_failure(exc, repo_id, endpoint)
        if message is None:
            raise
        raise HubError(message) from exc


def describe_failure(exc: BaseException, repo_id: str, endpoint: str) -> str | None:
    """One line for a Hub failure, or ``None`` when ``exc`` is not one."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    nothing = "nothing was published"
    if isinstance(exc, OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE is set, so the Hub cannot be reached; unset it to push ({nothing})"
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        detail = (exc.server_message or "").strip().splitlines()
        why = f": {detail[0][:160]}" if detail else ""
        if status == 401:
            return (
                f"the Hub rejected the token (401{why}); pass --token, set HF_TOKEN or run "
                f"`hf auth login` with a write token ({nothing})"
            )
        if status == 403:
            return (
                f"no write access to {repo_id} (403{why}): the namespace belongs to someone "
                f"else or the token lacks write permission; use your own ORG or a write "
                f"token ({nothing})"
            )
        if status == 404:
            return (
                f"{repo_id} or the revision was not found (404{why}); check --repo-id ({nothing})"
            )
        if status is not None and status >= 500:
            return (
                f"the Hub failed with a server error ({status}{why}); the commit is atomic, so "
                f"{nothing}; retry later"
            )
        return f"the Hub refused the upload ({status}{why}) ({nothing})"
    if isinstance(exc, httpx.TransportError):
        return (
            f"cannot reach the Hub at {endpoint} ({type(exc).__name__}: {exc}); check the "
            f"network or HF_ENDPOINT ({nothing})"
        )
    if isinstance(exc, ValueError) and str(exc).startswith("Invalid metadata in README.md"):
        return f"the Hub rejected the model card's metadata ({exc}) ({nothing})"
    if type(exc).__module__.startswith("huggingface_hub"):
        return f"the Hub client failed ({type(exc).__name__}: {exc}) ({nothing})"
    return None
