"""A small local Hugging Face Hub, over real HTTP on 127.0.0.1, for push and pull tests.

It implements the endpoints huggingface_hub's ``create_repo``, ``create_branch``,
``create_commit``, ``delete_repo`` and ``delete_branch`` call (repo creation, info and
deletion, YAML validation, preupload, branch creation and deletion, commit), keeps
repositories in memory and records every request. Every file is declared ``regular``
at preupload, so content arrives base64-encoded inside the commit and LFS/Xet
transfers are out of scope (docs/testing.md says so).

For reading (``model_info``, ``hf_hub_download``, ``snapshot_download`` and byte
ranges) it serves ``/api/models/{repo}[/revision/{rev}]`` with file sizes,
``/api/models/{repo}/tree/{rev}`` and ``/{repo}/resolve/{rev}/{path}`` (HEAD and GET,
``Range: bytes=a-b`` answered with 206) with the headers huggingface_hub reads
(``X-Repo-Commit``, ``ETag``, ``Content-Length``) and its error codes
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``).
:meth:`FakeHub.add_model` seeds a repository; :attr:`FakeHub.served` counts the file
bytes sent. Switches make it misbehave as a broken mirror or a hostile proxy would:
:attr:`~FakeHub.cut_ranges_after` (with :attr:`~FakeHub.cut_times`) breaks ranged
transfers mid-way (the connection closes), :attr:`~FakeHub.fail_ranges` answers ranged
GETs with an error status, :attr:`~FakeHub.sha_override` returns another commit id,
:attr:`~FakeHub.range_shift` serves (and declares) another range than asked,
:attr:`~FakeHub.oversize_ranges` sends more than asked (without a length), and
:attr:`~FakeHub.hang` accepts requests and never answers.

Users: tokens ``hf_alice`` and :data:`SENTINEL_TOKEN` are alice (writes ``alice/*``);
any other token is rejected with 401. ``bob/*`` repositories exist but belong to
someone else (403 on writes).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GOOD_TOKEN = "hf_alice"
#: a second good token for alice, unlikely to appear in any output by chance
SENTINEL_TOKEN = "hf_SENTINEL_b7e1c9d4a2f0"
USER = "alice"


@dataclass
class Commit:
    oid: str
    revision: str
    summary: str
    files: dict[str, Any]
    pr: int | None


def _size(data: bytes | Path) -> int:
    return data.stat().st_size if isinstance(data, Path) else len(data)


def _etag(name: str, data: bytes | Path) -> str:
    """sha256 of the content (of name and size for a file served from disk: cheap)."""
    if isinstance(data, Path):
        return hashlib.sha256(f"{name}:{_size(data)}".encode()).hexdigest()
    return hashlib.sha256(data).hexdigest()


def _chunks(data: bytes | Path, begin: int, end: int) -> Iterator[bytes]:
    if not isinstance(data, Path):
        yield data[begin:end]
        return
    with data.open("rb") as fh:
        fh.seek(begin)
        while begin < end:
            chunk = fh.read(min(8 << 20, end - begin))
            if not chunk:
                return
            begin += len(chunk)
            yield chunk


@dataclass
class Repo:
    owner: str
    private: bool
    branches: dict[str, dict[str, Any]] = field(default_factory=lambda: {"main": {}})
    commits: list[Commit] = field(default_factory=list)
    prs: dict[int, dict[str, bytes]] = field(default_factory=dict)
    gated: bool = False
    #: full file sets by commit oid (seeded repositories; a Path is served from disk)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    range: str | None = None


class FakeHub:
    """The server's state and behaviour switches (``fail_commit_with``)."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {"bob/taken": Repo(owner="bob", private=False)}
        self.requests: list[Request] = []
        self.fail_commit_with: int | None = None
        #: (path, bytes) of every file body sent by the resolve endpoint
        self.served: list[tuple[str, int]] = []
        #: send at most this many bytes of a ranged GET, then close the connection
        self.cut_ranges_after: int | None = None
        #: make only this many cuts (``None``: cut every ranged GET longer than that)
        self.cut_times: int | None = None
        self.cuts = 0
        #: (status, times): the first ``times`` ranged GETs answer ``status``, no body
        self.fail_ranges: tuple[int, int] | None = None
        #: the commit id ``model_info`` returns instead of the real one
        self.sha_override: str | None = None
        #: serve the range this many bytes later than asked (declared in Content-Range)
        self.range_shift = 0
        #: after a range, send this many extra bytes (no Content-Length: until close)
        self.oversize_ranges = 0
        #: ``"all"`` or ``"ranges"``: accept those requests and never answer them
        self.hang: str | None = None
        #: ranged GETs received (counted before any switch applies)
        self.range_gets = 0
        #: bytes of an oversized reply the client took before it closed the connection
        self.oversize_sent = 0
        self._stop = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()  # releases hanging handlers
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub._serve(self, "GET")

            def do_POST(self) -> None:
                hub._serve(self, "POST")

            def do_DELETE(self) -> None:
                hub._serve(self, "DELETE")

            def do_HEAD(self) -> None:
                hub._serve(self, "HEAD")

        return Handler

    # -- plumbing -------------------------------------------------------------------

    def add_model(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        gated: bool = False,
        owner: str = "bob",
    ) -> str:
        """Seed a public model repository with one commit on ``main``; its oid.

        A :class:`~pathlib.Path` value is served from disk, range by range (a benchmark's
        multi-GB shards need not sit in memory).
        """
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + str(_size(files[name])).encode())
        oid = digest.hexdigest()
        repo = Repo(owner=owner, private=False, gated=gated)
        repo.branches["main"] = dict(files)
        repo.commits.append(Commit(oid, "main", "seed", dict(files), None))
        repo.snapshots[oid] = dict(files)
        self.repos[repo_id] = repo
        return oid

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        auth = h.headers.get("Authorization")
        span = h.headers.get("Range")
        with self.lock:
            self.requests.append(Request(method, path, parse_qs(parts.query), auth, span))
        if self.hang == "all" or (self.hang == "ranges" and span and method == "GET"):
            self._stop.wait()  # accepted, never answered
            return
        if "/resolve/" in path:
            self._resolve(h, method, path, auth)
            return
        with self.lock:
            status, doc = self._route(method, path, parse_qs(parts.query), body, auth)
        data = json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        if status >= 400:
            h.send_header("X-Error-Message", str(doc.get("error", "")))
            if "code" in doc:
                h.send_header("X-Error-Code", doc["code"])
        h.end_headers()
        h.wfile.write(data)

    def _files_at(self, repo: Repo, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """(commit oid, files) of a branch name or a commit oid."""
        if revision in repo.branches:
            return self._head(repo), repo.branches[revision]
        if revision in repo.snapshots:
            return revision, repo.snapshots[revision]
        return None

    def _resolve(self, h: BaseHTTPRequestHandler, method: str, path: str, auth: str | None) -> None:
        """``/{org}/{name}/resolve/{rev}/{file}``: a file, or a byte range of it."""
        org, name, _resolve, revision, *rest = path.lstrip("/").split("/")
        repo_id, filename = f"{org}/{name}", "/".join(rest)
        with self.lock:
            repo = self.repos.get(repo_id)
            at = None if repo is None else self._files_at(repo, revision)
            user = self._user(auth)
        error: tuple[int, str, str] | None = None
        if repo is None:
            error = (404, "RepoNotFound", f"Repository {repo_id} not found")
        elif repo.gated and user is None:
            error = (401, "GatedRepo", f"Access to model {repo_id} is restricted")
        elif at is None:
            error = (404, "RevisionNotFound", f"Invalid rev id: {revision}")
        elif filename not in at[1]:
            error = (404, "EntryNotFound", f"{filename} does not exist at {revision}")
        if error is not None:
            h.send_response(error[0])
            h.send_header("X-Error-Code", error[1])
            h.send_header("X-Error-Message", error[2])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        assert at is not None
        oid, files = at
        data = files[filename]
        size = _size(data)
        status, first, last = 200, 0, size - 1
        span = h.headers.get("Range")
        nth = 0
        if span:
            first, last = (int(x) for x in span.removeprefix("bytes=").split("-"))
            first, last = first + self.range_shift, min(last + self.range_shift, size - 1)
            status = 206
            if method == "GET":
                with self.lock:
                    self.range_gets += 1
                    nth = self.range_gets
        if span and self.fail_ranges is not None and nth <= self.fail_ranges[1]:
            h.send_response(self.fail_ranges[0])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(status)
        h.send_header("X-Repo-Commit", oid)
        h.send_header("ETag", f'"{_etag(filename, data)}"')
        if not (status == 206 and self.oversize_ranges):
            h.send_header("Content-Length", str(last - first + 1))
        if status == 206:
            h.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        h.end_headers()
        if method == "HEAD":
            return
        cut = self.cut_ranges_after
        if status == 206 and cut is not None and last - first + 1 > cut:
            with self.lock:
                cutting = self.cut_times is None or self.cuts < self.cut_times
                self.cuts += cutting
            if cutting:
                last = first + cut - 1
                h.close_connection = True
        sent = 0
        for chunk in _chunks(data, first, last + 1):
            h.wfile.write(chunk)
            sent += len(chunk)
        with self.lock:
            self.served.append((f"{repo_id}/{filename}", sent))
        if status == 206 and self.oversize_ranges:
            self._oversize(h)

    def _oversize(self, h: BaseHTTPRequestHandler) -> None:
        """Zeros after the range until the client hangs up (or all were sent)."""
        h.close_connection = True
        block = bytes(1 << 16)
        try:
            for _ in range(0, self.oversize_ranges, len(block)):
                h.wfile.write(block)
                with self.lock:
                    self.oversize_sent += len(block)
        except OSError:  # the client closed the connection: what it refused stays here
            pass

    def _user(self, auth: str | None) -> str | None:
        return USER if auth in (f"Bearer {GOOD_TOKEN}", f"Bearer {SENTINEL_TOKEN}") else None

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, auth: str | None
    ) -> tuple[int, dict[str, Any]]:
        user = self._user(auth)
        if (
            method == "GET"
            and path.startswith("/api/models/")
            and (user is not None or auth is None)
        ):
            read = self._model_info(path)
            if read is not None:
                return read
        if user is None:
            return 401, {"error": "Invalid credentials in Authorization header"}
        if method == "POST" and path == "/api/repos/create":
            return self._create(json.loads(body), user)
        if method == "DELETE" and path == "/api/repos/delete":
            doc = json.loads(body)
            repo_id = f"{doc.get('organization') or user}/{doc['name']}"
            gone = self.repos.get(repo_id)
            if gone is None or gone.owner != user:
                return 404, {"error": f"Repository {repo_id} not found"}
            del self.repos[repo_id]
            return 200, {}
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if not path.startswith("/api/models/"):
            return 404, {"error": f"no route {method} {path}"}
        rest = path.removeprefix("/api/models/").split("/")
        repo_id, action, arg = "/".join(rest[:2]), rest[2:3], "/".join(rest[3:])
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"error": f"Repository {repo_id} not found"}
        if method == "GET":  # repo_info (optionally at a revision)
            return 200, {"id": repo_id, "sha": self._head(repo), "private": repo.private}
        if repo.owner != user:
            return 403, {"error": f"You don't have write access to {repo_id}"}
        if action == ["preupload"]:
            files = json.loads(body)["files"]
            return 200, {
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in files
                ]
            }
        if action == ["branch"] and method == "DELETE":
            if arg not in repo.branches or arg == "main":
                return 404, {"error": f"Branch {arg} not found"}
            del repo.branches[arg]
            return 200, {}
        if action == ["branch"]:
            if arg in repo.branches:
                return 409, {"error": f"Branch {arg} already exists"}
            repo.branches[arg] = dict(repo.branches["main"])
            return 200, {}
        if action == ["commit"]:
            return self._commit(repo_id, repo, arg, body, "create_pr" in query)
        return 404, {"error": f"no route {method} {path}"}

    def _model_info(self, path: str) -> tuple[int, dict[str, Any]] | None:
        """``model_info`` of a seeded repository (with file sizes), or ``None``."""
        rest = path.removeprefix("/api/models/").split("/")
        repo_id = "/".join(rest[:2])
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"error": f"Repository {repo_id} not found", "code": "RepoNotFound"}
        if not repo.snapshots:
            return None  # a repository made by push tests: their own route
        revision = rest[3] if rest[2:3] in (["revision"], ["tree"]) else "main"
        at = self._files_at(repo, revision)
        if at is None:
            return 404, {"error": f"Invalid rev id: {revision}", "code": "RevisionNotFound"}
        oid, files = at
        if rest[2:3] == ["tree"]:  # list_repo_tree (snapshot_download): one flat page
            tree = [
                {"type": "file", "path": f, "size": _size(b), "oid": _etag(f, b)[:40]}
                for f, b in sorted(files.items())
            ]
            return 200, tree  # type: ignore[return-value]
        return 200, {
            "id": repo_id,
            "sha": oid if self.sha_override is None else self.sha_override,
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "siblings": [{"rfilename": f, "size": _size(b)} for f, b in sorted(files.items())],
        }

    def _create(self, doc: dict[str, Any], user: str) -> tuple[int, dict[str, Any]]:
        org = doc.get("organization") or user
        repo_id = f"{org}/{doc['name']}"
        if org != user:
            return 403, {"error": f"You don't have the rights to create a model under {org}"}
        if repo_id in self.repos:
            return 409, {
                "error": "You already created this model repo",
                "url": f"{self.url}/{repo_id}",
            }
        self.repos[repo_id] = Repo(owner=user, private=doc.get("visibility") == "private")
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def _head(self, repo: Repo) -> str:
        return repo.commits[-1].oid if repo.commits else "0" * 40

    def _commit(
        self, repo_id: str, repo: Repo, revision: str, body: bytes, create_pr: bool
    ) -> tuple[int, dict[str, Any]]:
        if self.fail_commit_with is not None:
            return self.fail_commit_with, {"error": "Internal Error - We're working hard to fix"}
        if not create_pr and revision not in repo.branches:
            return 404, {"error": f"Invalid rev id: {revision}"}
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(x["value"] for x in lines if x["key"] == "header")
        files = {
            x["value"]["path"]: base64.b64decode(x["value"]["content"])
            for x in lines
            if x["key"] == "file"
        }
        unsupported = [x["key"] for x in lines if x["key"] not in ("header", "file")]
        if unsupported:
            return 400, {"error": f"unsupported commit operations {unsupported}"}
        oid = hashlib.sha1(body).hexdigest()
        pr = None
        if create_pr:
            pr = len(repo.prs) + 1
            repo.prs[pr] = {**repo.branches["main"], **files}
        else:
            repo.branches[revision].update(files)
        repo.commits.append(Commit(oid, revision, header["summary"], files, pr))
        doc: dict[str, Any] = {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid}
        if pr is not None:
            doc["pullRequestUrl"] = f"{self.url}/{repo_id}/discussions/{pr}"
        return 200, doc
