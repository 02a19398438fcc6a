"""A small but real Hugging Face Hub look-alike, served over HTTP on loopback.

Why this exists: the project pushes to and pulls from the Hub through the *real* ``huggingface_hub`` client
(and through ``transformers``, which uses it). Mocking that client would only prove that our mocks agree with
our code. Instead, tests point the unmodified client at this server (``HF_ENDPOINT=http://127.0.0.1:<port>``)
and exercise the same HTTP conversation the client has with huggingface.co: repo creation, the
preupload -> LFS batch -> PUT -> verify -> commit upload dance, and HEAD/GET ``/resolve`` downloads.

The routes, headers and JSON shapes below were taken from reading the client source
(``hf_api.py``, ``_commit_api.py``, ``lfs.py``, ``file_download.py``, ``utils/_http.py``). Xet storage is not
implemented: the client must run with ``HF_HUB_DISABLE_XET=1`` so it falls back to the plain LFS protocol.

Storage lives in memory and is git-like: every commit gets a 40-hex sha and keeps the full file tree it
produced, so an old commit sha still resolves its files after the branch has moved on.

Only the standard library is used, so the server starts in milliseconds and needs no extra dependency.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LOOPBACK_HOST = "127.0.0.1"
DEFAULT_BRANCH = "main"
DEFAULT_USER = "test-user"
DEFAULT_TOKEN = "test-token"

# Files at least this large go through LFS, as do binary files and the extensions the Hub's default
# `.gitattributes` tracks. The real Hub's size limit is much higher; a small one makes tests exercise LFS cheaply.
LFS_SIZE_THRESHOLD_BYTES = 10 * 1024
LFS_TRACKED_EXTENSIONS = (
    ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gguf", ".gz", ".h5", ".joblib", ".mlmodel", ".model",
    ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth", ".rar",
    ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst",
)  # fmt: skip
INITIAL_GITATTRIBUTES = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_TRACKED_EXTENSIONS)

REPO_TYPE_BY_API_SEGMENT = {"models": "model", "datasets": "dataset", "spaces": "space"}
REPO_TYPE_BY_URL_PREFIX = {"datasets": "dataset", "spaces": "space"}
URL_PREFIX_BY_REPO_TYPE = {"model": "", "dataset": "datasets/", "space": "spaces/"}
PULL_REQUEST_REF_PREFIX = "refs/pr/"


class HubError(Exception):
    """An error answered the way the Hub shapes it, so the client maps it to its own exception classes.

    The client keys off the ``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``)
    to raise ``RepositoryNotFoundError`` and friends, and reads the message from the JSON ``{"error": ...}`` body.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}
        self.extra_body = extra_body or {}


def _utc_now_iso() -> str:
    """Timestamps in the exact format the client's `parse_datetime` expects ('%Y-%m-%dT%H:%M:%S.%fZ')."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob: the client compares it to detect unchanged regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    """One file's content as committed, either as a regular git blob or as an LFS object."""

    content: bytes
    is_lfs: bool

    @property
    def size(self) -> int:
        return len(self.content)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @cached_property
    def lfs_pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @cached_property
    def git_oid(self) -> str:
        """What git stores: the blob itself, or the small pointer file for LFS objects."""
        return git_blob_oid(self.lfs_pointer if self.is_lfs else self.content)

    @property
    def content_oid(self) -> str:
        """The oid the preupload endpoint reports: sha256 for LFS files, git blob oid otherwise."""
        return self.sha256 if self.is_lfs else self.git_oid

    @property
    def etag(self) -> str:
        """The Hub's ETag: the sha256 for LFS files, the git blob oid for regular ones."""
        return self.sha256 if self.is_lfs else self.git_oid


@dataclass
class Commit:
    """A snapshot of the whole tree, so any past commit can still be read by its sha."""

    sha: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    """A repository: its commits, its refs (branches, tags, pull-request refs) and its LFS objects."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)
    pull_request_count: int = 0

    @property
    def url_path(self) -> str:
        return URL_PREFIX_BY_REPO_TYPE[self.repo_type] + self.repo_id

    def resolve(self, revision: str) -> Commit:
        """A branch, tag, full commit sha or unambiguous sha prefix (7+ chars), like the Hub accepts."""
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and revision in self.commits:
            sha = revision
        if sha is None and len(revision) >= 7:
            matches = [known for known in self.commits if known.startswith(revision)]
            sha = matches[0] if len(matches) == 1 else None
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")
        return self.commits[sha]

    def add_commit(
        self, branch: str, title: str, message: str, files: dict[str, StoredFile], parent: str | None
    ) -> Commit:
        """Record a new commit on `branch` and move the branch to it."""
        tree = "".join(f"{path}\0{stored.git_oid}\n" for path, stored in sorted(files.items()))
        unique = f"{self.repo_type}/{self.repo_id}\n{parent}\n{title}\n{message}\n{tree}\n{next(_COMMIT_COUNTER)}"
        sha = hashlib.sha1(unique.encode()).hexdigest()
        commit = Commit(sha=sha, parent=parent, title=title, message=message, date=_utc_now_iso(), files=files)
        self.commits[sha] = commit
        self.branches[branch] = sha
        return commit

    def history(self, start: Commit) -> list[Commit]:
        """Commits from `start` back to the repo's first commit."""
        chain = [start]
        while chain[-1].parent is not None:
            chain.append(self.commits[chain[-1].parent])
        return chain

    def last_commit_touching(self, start: Commit, path: str) -> Commit:
        """The most recent commit (from `start`) that changed `path`, for `expand=True` listings."""
        chain = self.history(start)
        for newer, older in itertools.pairwise(chain):
            if _path_state(newer, path) != _path_state(older, path):
                return newer
        return chain[-1]


_COMMIT_COUNTER = itertools.count()


def _path_state(commit: Commit, path: str) -> tuple[tuple[str, str], ...]:
    """Everything under `path` in `commit`, to compare a file or folder across two commits."""
    prefix = path.rstrip("/") + "/"
    return tuple(
        (name, stored.git_oid)
        for name, stored in sorted(commit.files.items())
        if name == path or name.startswith(prefix)
    )


@dataclass
class Reply:
    """One HTTP answer; JSON by default."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    @classmethod
    def json(cls, payload: Any, status: int = 200, content_type: str = "application/json") -> Reply:
        return cls(status=status, body=json.dumps(payload).encode(), content_type=content_type)


@dataclass(frozen=True)
class RequestedRange:
    start: int
    end: int  # inclusive


def parse_range_header(value: str | None, size: int) -> RequestedRange | None:
    """Single byte ranges only ('bytes=a-b', 'bytes=a-', 'bytes=-n'): all the client ever sends."""
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[len("bytes=") :].partition("-")
    if first == "":
        length = int(last)
        return RequestedRange(max(size - length, 0), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return RequestedRange(start, end)


class HubServer:
    """The in-memory Hub plus the HTTP server that exposes it on 127.0.0.1.

    Use ``start()``/``stop()`` or ``with HubServer() as hub: ...``. ``url`` is the value for ``HF_ENDPOINT``.
    Writes require ``Authorization: Bearer <token>``; every request is appended to ``request_log`` as
    ``(method, path, status)`` so tests can check which protocol path the client took (e.g. an LFS PUT).
    """

    def __init__(self, port: int = 0, *, token: str = DEFAULT_TOKEN, user: str = DEFAULT_USER) -> None:
        self.token = token
        self.user = user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.request_log: list[tuple[str, str, int]] = []
        self.lock = threading.RLock()
        self._requested_port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("HubServer is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.port}"

    def start(self) -> HubServer:
        httpd = ThreadingHTTPServer((LOOPBACK_HOST, self._requested_port), _HubRequestHandler)
        httpd.daemon_threads = True  # idle keep-alive connections must not block shutdown
        httpd.hub = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- storage helpers used by the handler -------------------------------------------------------------

    def existing_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", error_code="RepoNotFound")
        return repo

    def find_repo(self, repo_type: str, repo_id: str, authorization: str | None) -> Repo:
        """The repo, or the errors the Hub gives: 404 RepoNotFound, or 401 for private repos without a token."""
        repo = self.existing_repo(repo_type, repo_id)
        if repo.private and not self.is_valid_authorization(authorization):
            raise HubError(401, "Repository not found", error_code="RepoNotFound")
        return repo

    def is_valid_authorization(self, authorization: str | None) -> bool:
        return authorization == f"Bearer {self.token}"

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        """New repos start with one commit adding `.gitattributes`, as on the Hub, so `main` always has a sha."""
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_utc_now_iso())
        initial = {".gitattributes": StoredFile(INITIAL_GITATTRIBUTES.encode(), is_lfs=False)}
        repo.add_commit(DEFAULT_BRANCH, "initial commit", "", initial, parent=None)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{repo.url_path}"


class _HubRequestHandler(BaseHTTPRequestHandler):
    """Maps each Hub route the client uses to a method returning a `Reply` (or raising `HubError`)."""

    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses pooled connections
    server_version = "EpicHfTestHub/1.0"
    body: bytes
    query: dict[str, list[str]]

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silent: `request_log` keeps a structured trace instead of noisy stderr lines."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- plumbing --------------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        # Read the whole body first, even on errors, so the next request on this keep-alive connection is intact.
        self.body = self._read_body()
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        segments = [segment for segment in url.path.split("/") if segment]  # still percent-encoded
        try:
            with self.hub.lock:
                reply = self._route(method, segments)
        except HubError as error:
            reply = Reply.json({"error": error.message, **error.extra_body}, status=error.status)
            reply.headers.update(error.headers)
            if error.error_code:
                reply.headers["X-Error-Code"] = error.error_code
            reply.headers["X-Error-Message"] = error.message
        except Exception as error:  # a bug in this test server must surface as a 500, not a hung client
            reply = Reply.json({"error": f"test hub crashed: {error!r}"}, status=500)
        with self.hub.lock:
            self.hub.request_log.append((method, url.path, reply.status))
        self._send(method, reply)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked_body(self) -> bytes:
        """Streamed uploads (the LFS PUT of a file object) may arrive chunked; http.server does not decode that."""
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline().strip():  # optional trailers, then the blank line
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # CRLF closing the chunk

    def _send(self, method: str, reply: Reply) -> None:
        self.send_response(reply.status)
        headers = {"Content-Type": reply.content_type, "Content-Length": str(len(reply.body)), **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(reply.body)

    def _authorization(self) -> str | None:
        return self.headers.get("Authorization")

    def _require_write_access(self) -> None:
        if not self.hub.is_valid_authorization(self._authorization()):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _check_read_token(self) -> None:
        """Like the Hub, a wrong token fails loudly even on public reads (a missing one is fine)."""
        authorization = self._authorization()
        if authorization is not None and not self.hub.is_valid_authorization(authorization):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from error

    def _query_flag(self, name: str) -> bool:
        values = self.query.get(name) or self.query.get(f"{name}[]") or []
        return any(value.lower() in ("1", "true") for value in values)

    # --- routing ---------------------------------------------------------------------------------------------

    def _route(self, method: str, segments: list[str]) -> Reply:
        if segments and segments[0] == "api":
            return self._route_api(method, segments[1:])

        repo_type = REPO_TYPE_BY_URL_PREFIX.get(segments[0], "model") if segments else "model"
        rest = segments[1:] if repo_type != "model" else segments
        if len(rest) >= 4 and rest[1].endswith(".git") and rest[2:4] == ["info", "lfs"]:
            repo_id = f"{unquote(rest[0])}/{unquote(rest[1][: -len('.git')])}"
            return self._route_lfs(method, repo_type, repo_id, rest[4:])
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            repo_id = f"{unquote(rest[0])}/{unquote(rest[1])}"
            return self._resolve_file(method, repo_type, repo_id, unquote(rest[3]), unquote("/".join(rest[4:])))
        raise HubError(404, f"Route not implemented by the test hub: {method} {self.path}")

    def _route_api(self, method: str, segments: list[str]) -> Reply:
        match method, segments:
            case "GET", ["whoami-v2"]:
                return self._whoami()
            case "POST", ["repos", "create"]:
                return self._create_repo()
            case "DELETE", ["repos", "delete"]:
                return self._delete_repo()
            case "POST", ["validate-yaml"]:
                return Reply.json({"errors": [], "warnings": []})
        if len(segments) < 3 or segments[0] not in REPO_TYPE_BY_API_SEGMENT:
            raise HubError(404, f"Route not implemented by the test hub: {method} {self.path}")

        repo_type = REPO_TYPE_BY_API_SEGMENT[segments[0]]
        repo_id = f"{unquote(segments[1])}/{unquote(segments[2])}"
        action = segments[3:]
        match method, action:
            case "GET", []:
                return self._repo_info(repo_type, repo_id, DEFAULT_BRANCH)
            case "GET", ["revision", revision]:
                return self._repo_info(repo_type, repo_id, unquote(revision))
            case "GET", ["tree", revision, *path]:
                return self._list_tree(repo_type, repo_id, unquote(revision), unquote("/".join(path)))
            case "POST", ["paths-info", revision]:
                return self._paths_info(repo_type, repo_id, unquote(revision))
            case "POST", ["preupload", revision]:
                return self._preupload(repo_type, repo_id, unquote(revision))
            case "POST", ["commit", revision]:
                return self._commit(repo_type, repo_id, unquote(revision))
            case "GET", ["refs"]:
                return self._list_refs(repo_type, repo_id)
            case "GET", ["commits", revision]:
                return self._list_commits(repo_type, repo_id, unquote(revision))
            case "POST", ["branch", branch]:
                return self._create_branch(repo_type, repo_id, unquote(branch))
            case "DELETE", ["branch", branch]:
                return self._delete_branch(repo_type, repo_id, unquote(branch))
            case "POST", ["tag", revision]:
                return self._create_tag(repo_type, repo_id, unquote(revision))
            case "DELETE", ["tag", tag]:
                return self._delete_tag(repo_type, repo_id, unquote(tag))
        raise HubError(404, f"Route not implemented by the test hub: {method} {self.path}")

    def _route_lfs(self, method: str, repo_type: str, repo_id: str, action: list[str]) -> Reply:
        match method, action:
            case "POST", ["objects", "batch"]:
                return self._lfs_batch(repo_type, repo_id)
            case "PUT", ["objects", oid]:
                return self._lfs_put_object(repo_type, repo_id, oid)
            case "POST", ["verify"]:
                return self._lfs_verify(repo_type, repo_id)
        raise HubError(404, f"Route not implemented by the test hub: {method} {self.path}")

    # --- account and repos -----------------------------------------------------------------------------------

    def _whoami(self) -> Reply:
        self._require_write_access()
        hub = self.hub
        return Reply.json(
            {
                "type": "user",
                "id": hashlib.sha1(hub.user.encode()).hexdigest()[:24],
                "name": hub.user,
                "fullname": hub.user,
                "email": f"{hub.user}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    def _create_repo(self) -> Reply:
        self._require_write_access()
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX_BY_REPO_TYPE:
            raise HubError(400, f"Unsupported repo type: {repo_type}")
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        existing = self.hub.repos.get((repo_type, repo_id))
        if existing is not None:
            # The client reads "url" from this 409 body too when called with exist_ok=True.
            raise HubError(
                409,
                f"You already created this {repo_type} repo",
                extra_body={"url": self.hub.repo_url(existing)},
            )
        repo = self.hub.create_repo(repo_type, repo_id, private)
        return Reply.json({"url": self.hub.repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> Reply:
        self._require_write_access()
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        self.hub.find_repo(repo_type, repo_id, self._authorization())
        del self.hub.repos[(repo_type, repo_id)]
        return Reply.json({})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> Reply:
        self._check_read_token()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        commit = repo.resolve(revision)
        with_blobs = self._query_flag("blobs")
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=stored.size, blobId=stored.git_oid)
                if stored.is_lfs:
                    sibling["lfs"] = {
                        "size": stored.size,
                        "sha256": stored.sha256,
                        "pointerSize": len(stored.lfs_pointer),
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(stored.size for stored in commit.files.values()),
        }
        expand = self.query.get("expand") or self.query.get("expand[]")
        if expand:  # only the requested properties come back, as on the Hub
            info = {key: value for key, value in info.items() if key in ("_id", "id", *expand)}
        return Reply.json(info)

    # --- listing ---------------------------------------------------------------------------------------------

    def _entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
        """A `/tree` or `/paths-info` item for a file or folder, in the shape `RepoFile`/`RepoFolder` parse."""
        stored = commit.files.get(path)
        if stored is not None:
            entry: dict[str, Any] = {"type": "file", "oid": stored.git_oid, "size": stored.size, "path": path}
            if stored.is_lfs:
                entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": len(stored.lfs_pointer)}
            if expand:
                entry["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
        else:
            tree_oid = hashlib.sha1(repr(_path_state(commit, path)).encode()).hexdigest()
            entry = {"type": "directory", "oid": tree_oid, "size": 0, "path": path}
        if expand:
            last = repo.last_commit_touching(commit, path)
            entry["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        return entry

    def _list_tree(self, repo_type: str, repo_id: str, revision: str, folder: str) -> Reply:
        self._check_read_token()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        commit = repo.resolve(revision)
        folder = folder.strip("/")
        prefix = f"{folder}/" if folder else ""
        below = [path for path in commit.files if path.startswith(prefix)]
        if folder and not below:
            raise HubError(404, f"Folder not found: {folder}", error_code="EntryNotFound")
        recursive = self._query_flag("recursive")
        listed: set[str] = set()
        for path in below:
            parts = path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for level in range(1, depth + 1):
                listed.add(prefix + "/".join(parts[:level]))
        expand = self._query_flag("expand")
        return Reply.json([self._entry(repo, commit, path, expand) for path in sorted(listed)])

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> Reply:
        """The client posts a form (`paths=a&paths=b&expand=false`); JSON is accepted too."""
        self._check_read_token()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        commit = repo.resolve(revision)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = self._json_body()
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(self.body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = any(value.lower() in ("1", "true") for value in form.get("expand", []))
        entries = []
        for path in dict.fromkeys(path.strip("/") for path in paths):
            exists = path in commit.files or any(name.startswith(f"{path}/") for name in commit.files)
            if path and exists:  # missing paths are skipped silently, as on the Hub
                entries.append(self._entry(repo, commit, path, expand))
        return Reply.json(entries)

    def _list_refs(self, repo_type: str, repo_id: str) -> Reply:
        self._check_read_token()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())

        def ref(name: str, full_ref: str, sha: str) -> dict[str, str]:
            return {"name": name, "ref": full_ref, "targetCommit": sha}

        branches = [
            ref(name, f"refs/heads/{name}", sha)
            for name, sha in repo.branches.items()
            if not name.startswith(PULL_REQUEST_REF_PREFIX)
        ]
        pulls = [
            ref(name, name, sha) for name, sha in repo.branches.items() if name.startswith(PULL_REQUEST_REF_PREFIX)
        ]
        tags = [ref(name, f"refs/tags/{name}", sha) for name, sha in repo.tags.items()]
        payload: dict[str, Any] = {"branches": branches, "converts": [], "tags": tags}
        if self._query_flag("include_prs"):
            payload["pullRequests"] = pulls
        return Reply.json(payload)

    def _list_commits(self, repo_type: str, repo_id: str, revision: str) -> Reply:
        self._check_read_token()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        return Reply.json(
            [
                {
                    "id": commit.sha,
                    "title": commit.title,
                    "message": commit.message,
                    "authors": [{"user": self.hub.user}],
                    "date": commit.date,
                }
                for commit in repo.history(repo.resolve(revision))
            ]
        )

    # --- refs ------------------------------------------------------------------------------------------------

    def _create_branch(self, repo_type: str, repo_id: str, branch: str) -> Reply:
        self._require_write_access()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        if branch.startswith("refs/"):
            raise HubError(400, f"Invalid reference for a branch: {branch}")
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        starting_point = self._json_body().get("startingPoint") or DEFAULT_BRANCH
        repo.branches[branch] = repo.resolve(starting_point).sha
        return Reply.json({})

    def _delete_branch(self, repo_type: str, repo_id: str, branch: str) -> Reply:
        self._require_write_access()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        if branch == DEFAULT_BRANCH:
            raise HubError(403, "Cannot delete the default branch")
        if repo.branches.pop(branch, None) is None:
            raise HubError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
        return Reply.json({})

    def _create_tag(self, repo_type: str, repo_id: str, revision: str) -> Reply:
        self._require_write_access()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        tag = self._json_body()["tag"]
        if tag in repo.tags:
            raise HubError(409, f"Tag already exists: {tag}")
        repo.tags[tag] = repo.resolve(revision).sha
        return Reply.json({})

    def _delete_tag(self, repo_type: str, repo_id: str, tag: str) -> Reply:
        self._require_write_access()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        if repo.tags.pop(tag, None) is None:
            raise HubError(404, f"Invalid rev id: {tag}", error_code="RevisionNotFound")
        return Reply.json({})

    # --- upload: preupload, LFS, commit ----------------------------------------------------------------------

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> Reply:
        """Tell the client, per file, whether to inline it in the commit ("regular") or push it through LFS.

        Also returns the oid of the file already at that path, which the client uses to drop unchanged files.
        """
        self._require_write_access()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        current = repo.resolve(revision).files if revision in repo.branches else {}
        answers = []
        for item in self._json_body().get("files", []):
            sample = base64.b64decode(item.get("sample") or "")
            path = item["path"]
            use_lfs = (
                item.get("size", 0) >= LFS_SIZE_THRESHOLD_BYTES
                or path.lower().endswith(LFS_TRACKED_EXTENSIONS)
                or b"\0" in sample
            )
            existing = current.get(path)
            answers.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if use_lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.content_oid if existing is not None else None,
                }
            )
        return Reply.json({"files": answers})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> Reply:
        """git-lfs Batch API: upload actions for unknown objects, none for objects already stored."""
        self._require_write_access()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(422, "The test hub only implements LFS uploads (downloads go through /resolve)")
        lfs_base = f"{self.hub.repo_url(repo)}.git/info/lfs"
        objects = []
        for item in payload.get("objects", []):
            oid, size = item["oid"], item["size"]
            stored = repo.lfs_objects.get(oid)
            if stored is not None and len(stored) == size:
                objects.append({"oid": oid, "size": size})
                continue
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        # Like a presigned S3 URL: the client PUTs there without the Hub token.
                        "upload": {"href": f"{lfs_base}/objects/{oid}"},
                        "verify": {"href": f"{lfs_base}/verify", "header": {}},
                    },
                }
            )
        return Reply.json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_put_object(self, repo_type: str, repo_id: str, oid: str) -> Reply:
        repo = self.hub.existing_repo(repo_type, repo_id)
        actual = hashlib.sha256(self.body).hexdigest()
        if actual != oid:
            raise HubError(400, f"Uploaded content has sha256 {actual}, expected {oid}")
        repo.lfs_objects[oid] = self.body
        return Reply(status=200, headers={"ETag": f'"{hashlib.md5(self.body).hexdigest()}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str) -> Reply:
        self._require_write_access()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        payload = self._json_body()
        stored = repo.lfs_objects.get(payload.get("oid", ""))
        if stored is None or len(stored) != payload.get("size"):
            raise HubError(404, f"LFS object {payload.get('oid')} was not uploaded")
        return Reply.json({"success": True})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> Reply:
        """Apply the client's NDJSON commit: a header line, then one line per file added or deleted."""
        self._require_write_access()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]

        pull_request_url = None
        if self._query_flag("create_pr"):
            repo.pull_request_count += 1
            number = repo.pull_request_count
            base_sha = repo.resolve(revision).sha
            revision = f"{PULL_REQUEST_REF_PREFIX}{number}"
            repo.branches[revision] = base_sha
            pull_request_url = f"{self.hub.repo_url(repo)}/discussions/{number}"
        if revision not in repo.branches:
            if revision in repo.tags or revision in repo.commits:
                raise HubError(400, f"Can only commit to a branch, not to {revision}")
            raise HubError(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")
        head = repo.commits[repo.branches[revision]]
        parent_commit = header.get("parentCommit")
        if parent_commit and parent_commit != head.sha:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")

        files = dict(head.files)
        for line in lines[1:]:
            self._apply_operation(repo, files, line["key"], line["value"])
        commit = repo.add_commit(
            revision, header.get("summary") or "", header.get("description") or "", files, parent=head.sha
        )
        return Reply.json(
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self.hub.repo_url(repo)}/commit/{commit.sha}",
                "pullRequestUrl": pull_request_url,
            }
        )

    @staticmethod
    def _apply_operation(repo: Repo, files: dict[str, StoredFile], key: str, value: dict[str, Any]) -> None:
        path = value.get("path", "")
        match key:
            case "file":
                raw = value["content"]
                content = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                files[path] = StoredFile(content, is_lfs=False)
            case "lfsFile":
                content = repo.lfs_objects.get(value["oid"])
                if content is None:
                    raise HubError(400, f"LFS object {value['oid']} for {path} was never uploaded")
                if "size" in value and value["size"] != len(content):
                    raise HubError(400, f"LFS object {value['oid']} has size {len(content)}, not {value['size']}")
                files[path] = StoredFile(content, is_lfs=True)
            case "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", error_code="EntryNotFound")
            case "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [name for name in files if name.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", error_code="EntryNotFound")
                for name in doomed:
                    del files[name]
            case _:
                raise HubError(400, f"Unsupported commit operation: {key}")

    # --- download --------------------------------------------------------------------------------------------

    def _resolve_file(self, method: str, repo_type: str, repo_id: str, revision: str, path: str) -> Reply:
        """Serve a file with the metadata headers `hf_hub_download` relies on.

        ``X-Repo-Commit`` pins the commit, ``ETag`` names the cached blob; LFS files also carry
        ``X-Linked-Etag``/``X-Linked-Size``, which the Hub sets on its CDN redirect. The content is served
        directly (no redirect) since there is no CDN here.
        """
        self._check_read_token()
        repo = self.hub.find_repo(repo_type, repo_id, self._authorization())
        commit = repo.resolve(revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(
                404, "Entry not found", error_code="EntryNotFound", headers={"X-Repo-Commit": commit.sha}
            )
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{stored.etag}"',
            "Accept-Ranges": "bytes",
        }
        if stored.is_lfs:
            headers["X-Linked-Etag"] = f'"{stored.sha256}"'
            headers["X-Linked-Size"] = str(stored.size)
        requested = parse_range_header(self.headers.get("Range"), stored.size)
        if requested is None:
            return Reply(status=200, body=stored.content, headers=headers, content_type="application/octet-stream")
        headers["Content-Range"] = f"bytes {requested.start}-{requested.end}/{stored.size}"
        body = stored.content[requested.start : requested.end + 1]
        return Reply(status=206, body=body, headers=headers, content_type="application/octet-stream")
