"""Helpers for the detection tests: fixture paths, small tree builders, a batching HTTP server."""

from __future__ import annotations

import hashlib
import shutil
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
URLDETECT = SHARED / "fixtures" / "urldetect"


def fixture(rel: str) -> Path:
    """A directory of the shared urldetect fixtures (the test is skipped if they are absent)."""
    path = URLDETECT / rel
    if not path.exists():
        pytest.skip(f"shared fixture {path} not found")
    return path


def mirror_copy(dest: Path, rel: str) -> Path:
    """Copy fixture ``rel`` to ``dest/rel``, turning flattened symlinks back into symlinks.

    The shared fixtures store virtinst's ``installer-arm64 -> installer-amd64/`` symlinks as
    tiny files holding the target; a mirror has real symlinks there.
    """
    src = fixture(rel)
    out = dest / rel
    shutil.copytree(src, out, symlinks=True)
    for f in list(out.rglob("*")):
        if f.is_file() and f.stat().st_size < 64 and f.name.startswith("installer-"):
            target = f.read_text().strip().rstrip("/")
            f.unlink()
            f.symlink_to(target)
    return out


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Create ``root`` with ``files`` (relative path -> content)."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def treeinfo(
    family: str,
    version: str | None,
    arch: str,
    images: Mapping[str, tuple[str, str]],
    *,
    variant: str | None = None,
    checksums: Mapping[str, str] | None = None,
) -> str:
    """A productmd-style ``.treeinfo`` text."""
    lines = ["[header]", "type = productmd.treeinfo", "version = 1.2", "", "[general]"]
    lines += [f"family = {family}", f"arch = {arch}", f"name = {family} {version or ''}"]
    if version is not None:
        lines.append(f"version = {version}")
    if variant:
        lines.append(f"variant = {variant}")
    for section, (kernel, initrd) in images.items():
        lines += ["", f"[images-{section}]", f"kernel = {kernel}", f"initrd = {initrd}"]
    if checksums:
        lines += ["", "[checksums]", *(f"{p} = sha256:{h}" for p, h in checksums.items())]
    return "\n".join(lines) + "\n"


@dataclass
class BatchedRequest:
    batch: int
    method: str
    path: str
    status: int = 0
    timed_out: bool = False


class _BatchingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, root: Path, sizes: Sequence[int], timeout: float, soft_404: bytes | None
    ) -> None:
        super().__init__(("127.0.0.1", 0), _BatchingHandler)
        self.root = root
        self.soft_404 = soft_404
        self.sizes = list(sizes)
        self.timeout = timeout
        self.cond = threading.Condition()
        self.batch = 0
        self.arrived = 0
        self.log: list[BatchedRequest] = []

    def join_batch(self, method: str, path: str) -> BatchedRequest:
        """Hold the request until its whole batch has arrived, then answer.

        Batch ``k`` is the next ``sizes[k]`` requests (one request per batch after the
        listed ones). A client that sends a round's requests together fills the batch no
        matter how its threads are scheduled; one that waits for an answer before sending
        the next request leaves the batch unfilled, and the request is answered only after
        ``timeout`` seconds with ``timed_out`` set.
        """
        with self.cond:
            rec = BatchedRequest(self.batch, method, path)
            self.log.append(rec)
            self.arrived += 1
            size = self.sizes[rec.batch] if rec.batch < len(self.sizes) else 1
            if self.arrived >= size:
                self.batch, self.arrived = self.batch + 1, 0
                self.cond.notify_all()
            elif not self.cond.wait_for(lambda: self.batch > rec.batch, self.timeout):
                rec.timed_out = True
        return rec


class _BatchingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _BatchingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def _answer(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        rec = self.server.join_batch(self.command, path)
        fspath = self.server.root / path.lstrip("/")
        ok = ".." not in Path(path).parts and fspath.is_file()
        body = fspath.read_bytes() if ok else self.server.soft_404 or b"not found\n"
        rec.status = 200 if ok or self.server.soft_404 else 404
        self.send_response(rec.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)


@dataclass
class BatchingHTTP:
    url: str
    server: _BatchingServer

    @property
    def log(self) -> list[BatchedRequest]:
        with self.server.cond:
            return list(self.server.log)

    def batches(self) -> list[list[str]]:
        """Paths per batch, in arrival order."""
        out: dict[int, list[str]] = {}
        for r in self.log:
            out.setdefault(r.batch, []).append(r.path)
        return [out[k] for k in sorted(out)]

    def timed_out(self) -> list[str]:
        return [r.path for r in self.log if r.timed_out]


@contextmanager
def serve_batched(
    root: Path, sizes: Sequence[int] = (), *, timeout: float = 5.0, soft_404: bytes | None = None
) -> Iterator[BatchingHTTP]:
    """A loopback HTTP server answering in batches of ``sizes`` (see ``join_batch``).

    With ``soft_404``, a missing file is answered "200 OK" with that page, like some
    mirrors and captive portals do.
    """
    server = _BatchingServer(root, sizes, timeout, soft_404)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield BatchingHTTP(f"http://127.0.0.1:{server.server_address[1]}/", server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
