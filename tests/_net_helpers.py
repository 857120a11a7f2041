"""Loopback HTTP and FTP servers for tests (reusable by every area).

    with serve_http(root, latency=0.05) as srv:      # threaded, 127.0.0.1, ephemeral port
        srv.url                                       # "http://127.0.0.1:PORT/"
        srv.route("/moved", redirect("/elsewhere"))   # custom behaviour for one path
        ...
        srv.requests(method="GET", path="/x")         # the request log

    with serve_ftp(root) as ftp:                      # pyftpdlib, anonymous, read-only
        ftp.url, ftp.retrieved                         # "ftp://127.0.0.1:PORT/", RETR log

The HTTP server serves ``root`` like a mirror: GET and HEAD, keep-alive, single byte ranges
(206/416), If-Range, ETag/Last-Modified, a 301 to the trailing-slash form of directories.
Route helpers make the hostile or broken servers tests need: :func:`redirect`, :func:`stall`,
:func:`endless`, :func:`drip`, :func:`drop_after`, :func:`ignore_range`.
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHUNK = 64 * 1024


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    headers: dict[str, str]
    conn: int
    t0: float
    t1: float = 0.0
    status: int = 0
    bytes: int = 0


Route = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.conns += 1
            self.conn_id = self.server.conns

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:
        self.rec = Request(
            self.command,
            urllib.parse.unquote(urllib.parse.urlsplit(self.path).path),
            self.headers.get("Range"),
            dict(self.headers.items()),
            self.conn_id,
            time.time(),
        )
        with self.server.lock:
            self.server.log.append(self.rec)
        try:
            if self.server.latency:
                time.sleep(self.server.latency)
            route = self.server.routes.get(self.rec.path)
            if route is not None:
                route(self)
            else:
                self.serve_path()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.rec.t1 = time.time()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.rec.status = code
        super().send_response(code, message)

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.rec.bytes += len(data)

    def send_simple(
        self, code: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.write(body)

    def serve_path(self) -> None:
        fspath = self.server.root / self.rec.path.lstrip("/")
        if ".." in Path(self.rec.path).parts or not fspath.exists():
            self.send_simple(404, b"not found\n")
        elif fspath.is_dir():
            if not self.rec.path.endswith("/"):
                self.send_simple(301, headers={"Location": self.rec.path + "/"})
            else:
                names = "\n".join(sorted(os.listdir(fspath))).encode()
                self.send_simple(200, names, {"Content-Type": "text/plain"})
        else:
            self.send_file(fspath)

    def send_file(
        self, fspath: Path, *, honour_range: bool = True, limit: int | None = None
    ) -> None:
        """Serve a file like a mirror; stop (and drop the connection) after ``limit`` bytes."""
        st = fspath.stat()
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        lastmod = email.utils.formatdate(st.st_mtime, usegmt=True)
        start, end = 0, st.st_size - 1
        rng = _parse_range(self.headers.get("Range"), st.st_size) if honour_range else None
        if_range = self.headers.get("If-Range")
        if rng is not None and if_range is not None and if_range not in (etag, lastmod):
            rng = None
        common = {"ETag": etag, "Last-Modified": lastmod, "Accept-Ranges": "bytes"}
        if rng == (-1, -1):
            self.send_simple(416, headers={"Content-Range": f"bytes */{st.st_size}", **common})
            return
        code = 200
        if rng is not None:
            start, end, code = rng[0], rng[1], 206
        self.send_response(code)
        self.send_header("Content-Length", str(end - start + 1))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{st.st_size}")
        for k, v in common.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(fspath, "rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                n = min(CHUNK, remaining)
                if limit is not None:
                    n = min(n, limit - self.rec.bytes)
                    if n <= 0:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                buf = f.read(n)
                if not buf:
                    break
                self.write(buf)
                remaining -= len(buf)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive, (-1, -1) if unsatisfiable, None to ignore."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].partition("-")
    try:
        if first == "":
            return (max(0, size - int(last)), size - 1) if size else (-1, -1)
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    return (-1, -1) if start >= size else (start, end)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, latency: float) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.latency = latency
        self.lock = threading.Lock()
        self.log: list[Request] = []
        self.routes: dict[str, Route] = {}
        self.conns = 0
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (TLS refused, aborted transfers) are expected: keep stderr clean.
        import traceback

        with self.lock:
            self.errors.append(traceback.format_exc(limit=1))


@dataclass
class LoopbackHTTP:
    """Handle on a running :func:`serve_http` server."""

    server: _Server
    url: str
    thread: threading.Thread = field(repr=False)

    @property
    def log(self) -> list[Request]:
        with self.server.lock:
            return list(self.server.log)

    def route(self, path: str, handler: Route) -> None:
        self.server.routes[path] = handler

    def requests(self, method: str | None = None, path: str | None = None) -> list[Request]:
        return [
            r
            for r in self.log
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    def clear(self) -> None:
        with self.server.lock:
            self.server.log.clear()

    @property
    def stopping(self) -> threading.Event:
        return self.server.stopping


@contextmanager
def serve_http(root: Path, *, latency: float = 0.0) -> Iterator[LoopbackHTTP]:
    """Serve ``root`` on 127.0.0.1 (ephemeral port); ``latency`` s is added to each request."""
    server = _Server(Path(root), latency)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield LoopbackHTTP(server, f"http://127.0.0.1:{server.server_address[1]}/", thread)
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- route helpers -----------------------------------------------------------------------


def redirect(location: str, code: int = 302) -> Route:
    def route(h: Handler) -> None:
        h.send_simple(code, headers={"Location": location})

    return route


def stall(seconds: float = 30.0) -> Route:
    """Accept the request and say nothing (until the server stops)."""

    def route(h: Handler) -> None:
        h.server.stopping.wait(seconds)
        h.close_connection = True

    return route


def endless(chunk: bytes = b"x" * CHUNK, *, declare_length: int | None = None) -> Route:
    """A body that never ends (chunked, or with a huge Content-Length if ``declare_length``)."""

    def route(h: Handler) -> None:
        h.send_response(200)
        if declare_length is not None:
            h.send_header("Content-Length", str(declare_length))
        else:
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.close_connection = True
        while not h.server.stopping.is_set():
            if declare_length is not None:
                h.write(chunk)
            else:
                h.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    return route


def drip(body: bytes, interval: float) -> Route:
    """Send ``body`` one byte every ``interval`` seconds (never long enough for a timeout)."""

    def route(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        for i in range(len(body)):
            if h.server.stopping.wait(interval):
                break
            h.write(body[i : i + 1])

    return route


def drop_after(fspath: Path, nbytes: int, times: int = 1) -> Route:
    """Serve ``fspath`` but cut the connection after ``nbytes`` of body, the first ``times``."""
    left = [times]

    def route(h: Handler) -> None:
        if h.command == "GET" and left[0] > 0:
            left[0] -= 1
            h.send_file(fspath, limit=nbytes)
        else:
            h.send_file(fspath)

    return route


def ignore_range(fspath: Path) -> Route:
    """Serve ``fspath`` with 200 whatever the Range header says (an old server)."""

    def route(h: Handler) -> None:
        h.send_file(fspath, honour_range=False)

    return route


# -- FTP ---------------------------------------------------------------------------------


@dataclass
class LoopbackFTP:
    url: str
    retrieved: list[str]  # paths of every RETR


@contextmanager
def serve_ftp(root: Path) -> Iterator[LoopbackFTP]:
    """Anonymous read-only FTP server (pyftpdlib) for ``root`` on 127.0.0.1."""
    with warnings.catch_warnings():  # pyftpdlib 2 still imports asyncore/asynchat
        warnings.simplefilter("ignore", DeprecationWarning)
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.servers import ThreadedFTPServer

    ftplog = logging.getLogger("pyftpdlib")
    if not ftplog.handlers:  # else pyftpdlib installs its own stderr handler at INFO
        ftplog.addHandler(logging.NullHandler())
    ftplog.setLevel(logging.WARNING)
    retrieved: list[str] = []
    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(str(root))

    class _Handler(FTPHandler):  # type: ignore[misc]
        def ftp_RETR(self, file: str) -> Any:
            retrieved.append(file)
            return super().ftp_RETR(file)

    _Handler.authorizer = authorizer
    server = ThreadedFTPServer(("127.0.0.1", 0), _Handler)
    stop = threading.Event()

    def loop() -> None:  # close_all() from the loop's own thread: no poll on a closed fd
        while not stop.is_set():
            server.serve_forever(timeout=0.05, blocking=False)
        server.close_all()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield LoopbackFTP(f"ftp://127.0.0.1:{server.address[1]}/", retrieved)
    finally:
        stop.set()
        thread.join(5)
