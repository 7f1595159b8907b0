"""A stand-in of the Hugging Face Hub's HTTP API on 127.0.0.1, for tests that run the real download code.

``huggingface_hub``, ``transformers``, ``datasets`` and lm-eval reach the Hub through a handful of calls: a
repository's info (``/api/{models,datasets}/<id>[/revision/<rev>]``), its file tree (``.../tree/<rev>[/<path>]``),
``paths-info``, and file downloads (``/<id>/resolve/<rev>/<path>``, ``/datasets/<id>/resolve/...``). This
server answers those, from repositories held in memory as ``{path: bytes}``, with the headers the clients read
(``X-Repo-Commit``, ``ETag``, ``Content-Length``). Point ``HF_ENDPOINT`` at :attr:`HubStandIn.endpoint` in a
child process (the libraries read it when imported) with its own ``HF_HOME``.

An unknown repository or file answers 404 with the ``X-Error-Code`` the Hub sends, so the clients raise their
own "not found" errors. Every request is recorded in :attr:`HubStandIn.requests` (tests check what was fetched).
(olah, a self-hosted Hub mirror on PyPI, was considered: it proxies the real Hub and serves git repositories,
more machinery than a test needs.)
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

KINDS = {"models": "model", "datasets": "dataset"}


class Repo:
    """One repository: files by path, and a commit hash derived from their contents."""

    def __init__(self, kind: str, repo_id: str, files: dict[str, bytes]):
        self.kind, self.id, self.files = kind, repo_id, dict(files)
        digest = hashlib.sha1()
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + hashlib.sha1(self.files[path]).digest())
        self.sha = digest.hexdigest()

    def oid(self, path: str) -> str:
        return hashlib.sha1(self.files[path]).hexdigest()

    def entry(self, path: str) -> dict | None:
        """A tree entry (file or directory) for ``path``, or None."""
        if path in self.files:
            return {"type": "file", "path": path, "size": len(self.files[path]), "oid": self.oid(path)}
        if any(p.startswith(path + "/") for p in self.files):
            return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0}
        return None

    def tree(self, folder: str, recursive: bool) -> list[dict] | None:
        prefix = f"{folder}/" if folder else ""
        if folder and self.entry(folder) is None:
            return None
        below = {p[len(prefix):] for p in self.files if p.startswith(prefix)}
        names = below if recursive else {p.split("/", 1)[0] for p in below}
        dirs = {p.rsplit("/", 1)[0] for p in below if "/" in p} if recursive else set()
        for d in set(dirs):  # every parent of a nested directory
            while "/" in d:
                d = d.rsplit("/", 1)[0]
                dirs.add(d)
        return [self.entry(prefix + name) for name in sorted(names | dirs)]

    def info(self) -> dict:
        card = _card_data(self.files.get("README.md", b""))
        return {
            "id": self.id, "_id": self.sha[:24], "sha": self.sha, "private": False, "disabled": False, "gated": False,
            "downloads": 0, "likes": 0, "tags": [], "lastModified": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": p, "size": len(b)} for p, b in sorted(self.files.items())],
            "cardData": card,
        }


def _card_data(readme: bytes) -> dict:
    """The YAML front matter of a dataset or model card, as the Hub returns it in ``cardData``."""
    import yaml

    text = readme.decode()
    if not text.startswith("---\n"):
        return {}
    return yaml.safe_load(text[4:].split("\n---", 1)[0]) or {}


class HubStandIn:
    """The server: ``add`` repositories, ``start``, read :attr:`endpoint`, ``stop``."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._endpoint = ""

    def add(self, kind: str, repo_id: str, files: dict[str, bytes]) -> Repo:
        assert kind in KINDS.values(), kind
        repo = self.repos[(kind, repo_id)] = Repo(kind, repo_id, files)
        return repo

    @property
    def endpoint(self) -> str:
        """The server's URL; it stays known after ``stop`` (offline runs point at the stopped server)."""
        return self._endpoint

    def env(self, home) -> dict[str, str]:
        """Variables for a child process that uses this Hub online, with its own cache under ``home``."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "10",
                "HF_HUB_DISABLE_XET": "1"}

    def start(self) -> HubStandIn:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._endpoint = "http://{}:{}".format(*self._server.server_address[:2])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def find(self, kind: str, parts: list[str]) -> tuple[Repo, list[str]] | None:
        """The repository named by the first one or two of ``parts`` (``owner/name`` or a legacy ``name``)."""
        for n in (2, 1):
            repo = self.repos.get((kind, "/".join(parts[:n])))
            if repo is not None and len(parts) >= n:
                return repo, parts[n:]
        return None


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: requests are recorded in hub.requests
        pass

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self._answer(head=False, body=body)

    def _answer(self, head: bool, body: str | None = None):
        url = urlparse(self.path)
        self.hub.requests.append(f"{self.command} {url.path}")
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        query = parse_qs(url.query)
        try:
            if parts[:1] == ["api"] and len(parts) > 1 and parts[1] in KINDS:
                return self._api(KINDS[parts[1]], parts[2:], query, body)
            kind = "dataset" if parts[:1] == ["datasets"] else "model"
            found = self.hub.find(kind, parts[1:] if kind == "dataset" else parts)
            if found and len(found[1]) >= 2 and found[1][0] == "resolve":
                return self._file(found[0], "/".join(found[1][2:]), head)
            return self._missing("RepoNotFound", "Repository not found")
        except BrokenPipeError:
            pass

    def _api(self, kind, parts, query, body):
        found = self.hub.find(kind, parts)
        if found is None:
            return self._missing("RepoNotFound", "Repository not found")
        repo, rest = found
        if not rest or rest[0] == "revision":
            return self._json(repo.info())
        if rest[0] == "tree":  # tree/<rev>[/<path>]
            entries = repo.tree("/".join(rest[2:]), query.get("recursive", ["false"])[0].lower() == "true")
            return self._json(entries) if entries is not None else self._missing("EntryNotFound", "Entry not found")
        if rest[0] == "paths-info":
            paths = _posted_paths(body or "")
            return self._json([e for e in (repo.entry(p.strip("/")) for p in paths) if e])
        if rest[0] == "refs":
            return self._json({"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo.sha}],
                               "tags": [], "converts": []})
        return self._missing("EntryNotFound", "Not served by the stand-in")

    def _file(self, repo: Repo, path: str, head: bool):
        if path not in repo.files:
            return self._missing("EntryNotFound", "Entry not found", repo)
        data = repo.files[path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{repo.oid(path)}"')
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _json(self, value):
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _missing(self, code: str, message: str, repo: Repo | None = None):
        data = json.dumps({"error": message}).encode()
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if repo is not None:
            self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _posted_paths(body: str) -> list[str]:
    """``paths`` of a paths-info request: form-encoded (``paths=a&paths=b``) or JSON."""
    if body.lstrip().startswith("{"):
        paths = json.loads(body).get("paths", [])
        return [paths] if isinstance(paths, str) else list(paths)
    return parse_qs(body).get("paths", [])
