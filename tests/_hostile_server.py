"""A loopback HTTP server that misbehaves on purpose, and an FTP server that drops data.

URLs are ``http://127.0.0.1:<port>/<mode>/<path>``: ``<path>`` is a file of the served
directory and ``<mode>`` (a key of :data:`MODES`) says how to misbehave. Body misbehaviours hit
only *artifacts* (kernels and initrds, see :data:`ARTIFACTS`) so that identification still works
and the fetch meets the problem; metadata misbehaviours hit only metadata files. Every request is
logged (method, path, headers) for assertions such as "the second run sent a Range header".

Handlers that never end wait on the server's stop event, so ``close()`` always returns and no
thread outlives the test.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ARTIFACTS = ("vmlinuz", "linux", "initrd.img", "initrd.gz", "initrd")
METADATA = (".treeinfo", "treeinfo", "MANIFEST", "content", "info", "Release", "InRelease")

Handler = Callable[["HostileHandler", Path, str], None]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class ServerState:
    root: Path
    stop: threading.Event = field(default_factory=threading.Event)
    log: list[Request] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    drip_interval: float = 0.3
    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_sent: int = 0
    # A slow mode for interruption tests: bytes per second of artifact bodies.
    rate: int = 0

    def requests_for(self, suffix: str, method: str = "GET") -> list[Request]:
        return [r for r in self.log if r.method == method and r.path.endswith(suffix)]


class HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean; the state log records requests

    @property
    def state(self) -> ServerState:
        return self.server.state

    # -- dispatch
    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        with self.state.lock:
            self.state.log.append(Request(self.command, self.path, dict(self.headers.items())))
            n = self.state.counts.get(self.path, 0) + 1
            self.state.counts[self.path] = n
        self.nth = n
        mode, _, rel = self.path.lstrip("/").partition("/")
        rel = rel.split("?", 1)[0]
        file = self.state.root / rel
        handler = MODES.get(mode)
        if handler is None:
            self.plain(404, b"unknown mode\n")
            return
        wanted = {"artifacts": ARTIFACTS, "metadata": METADATA, "treeinfo": (".treeinfo",)}.get(
            handler.applies_to
        )
        if wanted is not None and file.name not in wanted:
            serve_file(self, file, rel)  # this mode leaves other files alone
        else:
            handler.func(self, file, rel)

    # -- primitives
    def plain(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.send(body)

    def send(self, data: bytes) -> None:
        self.wfile.write(data)
        with self.state.lock:
            self.state.bytes_sent += len(data)

    def head(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()

    def hang(self) -> None:
        """Keep the connection open, sending nothing, until the server stops."""
        self.close_connection = True
        self.state.stop.wait()


def etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def serve_file(h: HostileHandler, file: Path, rel: str, *, data: bytes | None = None) -> None:
    """A correct server: 200/206/416, ETag, If-Range, HEAD; optionally rate-limited."""
    if data is None:
        if not file.is_file():
            h.plain(404, b"not found\n")
            return
        data = file.read_bytes()
    tag = etag(data)
    start, end, code = 0, len(data), 200
    m = _RANGE.match(h.headers.get("Range", ""))
    if_range = h.headers.get("If-Range")
    if m and (if_range is None or if_range == tag):
        start = int(m.group(1))
        end = int(m.group(2)) + 1 if m.group(2) else len(data)
        if start >= len(data):
            h.plain(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            return
        end = min(end, len(data))
        code = 206
    headers = {"Content-Length": str(end - start), "ETag": tag, "Accept-Ranges": "bytes"}
    if code == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
    h.head(code, headers)
    if h.command == "HEAD":
        return
    body = data[start:end]
    if h.state.rate and file.name in ARTIFACTS:
        send_slowly(h, body, h.state.rate)
    else:
        h.send(body)


def send_slowly(h: HostileHandler, body: bytes, rate: int) -> None:
    chunk = max(1, rate // 20)
    for i in range(0, len(body), chunk):
        if h.state.stop.is_set():
            return
        h.send(body[i : i + chunk])
        h.wfile.flush()
        time.sleep(chunk / rate)


# --- misbehaviours --------------------------------------------------------------------------


def _data(h: HostileHandler, file: Path) -> bytes | None:
    if not file.is_file():
        h.plain(404, b"not found\n")
        return None
    return file.read_bytes()


def truncated(h: HostileHandler, file: Path, rel: str) -> None:
    """Content-Length is right, the connection closes after half the body."""
    if (data := _data(h, file)) is None:
        return
    h.close_connection = True
    h.head(200, {"Content-Length": str(len(data)), "ETag": etag(data)})
    if h.command != "HEAD":
        h.send(data[: len(data) // 2])


def length_larger(h: HostileHandler, file: Path, rel: str) -> None:
    """Content-Length promises more bytes than the body has."""
    if (data := _data(h, file)) is None:
        return
    h.close_connection = True
    h.head(200, {"Content-Length": str(len(data) + 4096)})
    if h.command != "HEAD":
        h.send(data)


def length_smaller(h: HostileHandler, file: Path, rel: str) -> None:
    """Content-Length is smaller than the body: the client gets a short file (and garbage)."""
    if (data := _data(h, file)) is None:
        return
    h.close_connection = True
    h.head(200, {"Content-Length": str(len(data) - 1000)})
    if h.command != "HEAD":
        h.send(data)


def endless(h: HostileHandler, file: Path, rel: str) -> None:
    """No Content-Length, the body never ends (until the client gives up)."""
    h.close_connection = True
    h.head(200, {"Connection": "close", "Content-Type": "application/octet-stream"})
    if h.command == "HEAD":
        return
    block = b"\0" * 65536
    try:  # ~2 MB/s: endless, but a hung client does not fill the disk during the test
        while not h.state.stop.wait(0.03):
            h.send(block)
    except OSError:
        pass


def endless_metadata(h: HostileHandler, file: Path, rel: str) -> None:
    endless(h, file, rel)


def drip(h: HostileHandler, file: Path, rel: str) -> None:
    """One byte at a time, a pause between bytes shorter than the client's timeout."""
    if (data := _data(h, file)) is None:
        return
    h.close_connection = True
    h.head(200, {"Content-Length": str(len(data))})
    try:
        for i in range(len(data)):
            if h.state.stop.wait(h.state.drip_interval):
                return
            h.send(data[i : i + 1])
            h.wfile.flush()
    except OSError:
        pass


def stall_after_headers(h: HostileHandler, file: Path, rel: str) -> None:
    if (data := _data(h, file)) is None:
        return
    h.head(200, {"Content-Length": str(len(data))})
    h.hang()


def stall_before_headers(h: HostileHandler, file: Path, rel: str) -> None:
    h.hang()


def close_at_once(h: HostileHandler, file: Path, rel: str) -> None:
    h.close_connection = True
    h.connection.shutdown(socket.SHUT_RDWR)


def garbage_status(h: HostileHandler, file: Path, rel: str) -> None:
    h.close_connection = True
    h.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\nthis is not http\r\n")


def bad_content_length(h: HostileHandler, file: Path, rel: str) -> None:
    h.close_connection = True
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\nabc")


def bad_chunked(h: HostileHandler, file: Path, rel: str) -> None:
    h.close_connection = True
    h.head(200, {"Transfer-Encoding": "chunked"})
    if h.command != "HEAD":
        h.wfile.write(b"10\r\n0123456789abcdef\r\nZZZ\r\nnot a chunk\r\n")


def redirect_self(h: HostileHandler, file: Path, rel: str) -> None:
    h.plain(302, b"", {"Location": h.path})


def redirect_pingpong(h: HostileHandler, file: Path, rel: str) -> None:
    other = (
        "redirect-pingpong-b" if h.path.startswith("/redirect-pingpong/") else "redirect-pingpong"
    )
    h.plain(302, b"", {"Location": f"/{other}/{rel}"})


def redirect_chain(h: HostileHandler, file: Path, rel: str) -> None:
    """An endless chain of distinct redirects: /redirect-chain/x?1 -> ?2 -> ?3 ..."""
    n = int(h.path.rsplit("?", 1)[1]) + 1 if "?" in h.path else 1
    h.plain(301, b"", {"Location": f"/redirect-chain/{rel}?{n}"})


def redirect_file(h: HostileHandler, file: Path, rel: str) -> None:
    h.plain(301, b"", {"Location": "file:///etc/passwd"})


def redirect_scheme(h: HostileHandler, file: Path, rel: str) -> None:
    h.plain(302, b"", {"Location": "gopher://127.0.0.1:70/1/" + rel})


def redirect_ftp(h: HostileHandler, file: Path, rel: str) -> None:
    h.plain(302, b"", {"Location": "ftp://127.0.0.1:9/" + rel})


def redirect_ok(h: HostileHandler, file: Path, rel: str) -> None:
    """A well-behaved redirect to the same file on the plain path (control case)."""
    h.plain(302, b"", {"Location": f"/ok/{rel}"})


def status(code: int, headers: dict[str, str] | None = None) -> Handler:
    def handler(h: HostileHandler, file: Path, rel: str) -> None:
        h.plain(code, f"error {code}\n".encode(), headers)

    return handler


def flaky_503(h: HostileHandler, file: Path, rel: str) -> None:
    """503 Retry-After: 1 on the first request of each artifact, then a correct answer."""
    if h.nth == 1:
        h.plain(503, b"busy\n", {"Retry-After": "1"})
    else:
        serve_file(h, file, rel)


def _first_truncated_then(then: Handler) -> Handler:
    def handler(h: HostileHandler, file: Path, rel: str) -> None:
        if h.nth == 1 and h.command == "GET":
            truncated(h, file, rel)
        else:
            then(h, file, rel)

    return handler


def range_ignored(h: HostileHandler, file: Path, rel: str) -> None:
    """Answers every Range request with 200 and the whole file."""
    if (data := _data(h, file)) is None:
        return
    h.plain(200, data, {"ETag": etag(data)})


def range_wrong(h: HostileHandler, file: Path, rel: str) -> None:
    """Answers a Range request with 206 for another range than asked (always from byte 0)."""
    if (data := _data(h, file)) is None:
        return
    if not h.headers.get("Range"):
        h.plain(200, data, {"ETag": etag(data)})
        return
    half = len(data) // 2
    h.plain(
        206, data[:half], {"Content-Range": f"bytes 0-{half - 1}/{len(data)}", "ETag": etag(data)}
    )


def changing_file(h: HostileHandler, file: Path, rel: str) -> None:
    """Every request sees another version of the file (new bytes, new ETag), and If-Range is
    ignored: a resume glues two versions together unless the client checks the ETag."""
    if (data := _data(h, file)) is None:
        return
    version = bytes([h.nth % 256]) * 64 + data[64:]
    serve_file(h, file, rel, data=version) if not h.headers.get("Range") else _ranged(h, version)


def _ranged(h: HostileHandler, data: bytes) -> None:
    m = _RANGE.match(h.headers.get("Range", ""))
    start = int(m.group(1)) if m else 0
    body = data[start:]
    h.plain(
        206,
        body,
        {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}", "ETag": etag(data)},
    )


def gzip_encoding(h: HostileHandler, file: Path, rel: str) -> None:
    """Content-Encoding: gzip on a binary, though the client asked for identity."""
    if (data := _data(h, file)) is None:
        return
    packed = gzip.compress(data, compresslevel=1)
    h.plain(200, packed, {"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"})


def huge_metadata(h: HostileHandler, file: Path, rel: str) -> None:
    """A 512 MiB metadata file (generated, never stored), with an honest Content-Length."""
    size = 512 * 1024 * 1024
    h.close_connection = True
    h.head(200, {"Content-Length": str(size)})
    _stream_zeros(h, size, prefix=b"[general]\nfamily = Fedora\n; ")


def huge_metadata_unannounced(h: HostileHandler, file: Path, rel: str) -> None:
    """The same without Content-Length: the client must stop reading by itself."""
    h.close_connection = True
    h.head(200, {"Connection": "close"})
    _stream_zeros(h, 512 * 1024 * 1024, prefix=b"[general]\nfamily = Fedora\n; ")


def _stream_zeros(h: HostileHandler, size: int, prefix: bytes) -> None:
    if h.command == "HEAD":
        return
    block = b"x" * 65536
    try:
        h.send(prefix)
        sent = len(prefix)
        while sent < size and not h.state.stop.is_set():
            h.send(block[: size - sent])
            sent += len(block)
    except OSError:
        pass


def non_utf8(h: HostileHandler, file: Path, rel: str) -> None:
    if (data := _data(h, file)) is None:
        return
    h.plain(200, data.replace(b"Fedora", b"F\xe9d\xf3r\xff\xfe") + b"\n; \xc3\x28 \xa0\xa1\n")


def soft_404(h: HostileHandler, file: Path, rel: str) -> None:
    """Every path answers 200 with an HTML page (a captive portal or a misconfigured mirror)."""
    h.plain(
        200, b"<html><body>Welcome to the portal</body></html>\n", {"Content-Type": "text/html"}
    )


def empty_body(h: HostileHandler, file: Path, rel: str) -> None:
    h.plain(200, b"")


@dataclass(frozen=True)
class Mode:
    func: Handler
    applies_to: str  # "artifacts" | "metadata" | "treeinfo" | "all"


MODES: dict[str, Mode] = {
    "ok": Mode(serve_file, "all"),
    "truncated": Mode(truncated, "artifacts"),
    "length-larger": Mode(length_larger, "artifacts"),
    "length-smaller": Mode(length_smaller, "artifacts"),
    "endless": Mode(endless, "artifacts"),
    "endless-metadata": Mode(endless_metadata, "metadata"),
    "drip": Mode(drip, "artifacts"),
    "stall-after-headers": Mode(stall_after_headers, "artifacts"),
    "stall-before-headers": Mode(stall_before_headers, "artifacts"),
    "stall-metadata": Mode(stall_after_headers, "metadata"),
    "close-at-once": Mode(close_at_once, "artifacts"),
    "garbage-status": Mode(garbage_status, "artifacts"),
    "bad-content-length": Mode(bad_content_length, "artifacts"),
    "bad-chunked": Mode(bad_chunked, "artifacts"),
    "redirect-self": Mode(redirect_self, "artifacts"),
    "redirect-pingpong": Mode(redirect_pingpong, "artifacts"),
    "redirect-pingpong-b": Mode(redirect_pingpong, "artifacts"),
    "redirect-chain": Mode(redirect_chain, "artifacts"),
    "redirect-file": Mode(redirect_file, "artifacts"),
    "redirect-file-metadata": Mode(redirect_file, "metadata"),
    "redirect-scheme": Mode(redirect_scheme, "artifacts"),
    "redirect-ftp": Mode(redirect_ftp, "artifacts"),
    "redirect-ok": Mode(redirect_ok, "all"),
    "status-404": Mode(status(404), "artifacts"),
    "status-403": Mode(status(403), "artifacts"),
    "status-500": Mode(status(500), "artifacts"),
    "status-503": Mode(status(503, {"Retry-After": "3600"}), "artifacts"),
    "status-503-metadata": Mode(status(503, {"Retry-After": "3600"}), "metadata"),
    "flaky-503": Mode(flaky_503, "artifacts"),
    "range-ignored": Mode(_first_truncated_then(range_ignored), "artifacts"),
    "range-wrong": Mode(_first_truncated_then(range_wrong), "artifacts"),
    "changing-file": Mode(_first_truncated_then(changing_file), "artifacts"),
    "gzip": Mode(gzip_encoding, "artifacts"),
    "huge-metadata": Mode(huge_metadata, "metadata"),
    "huge-metadata-unannounced": Mode(huge_metadata_unannounced, "metadata"),
    "non-utf8": Mode(non_utf8, "metadata"),
    "soft-404": Mode(soft_404, "all"),
    "empty-body": Mode(empty_body, "artifacts"),
}


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, root: Path, *, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), HostileHandler)
        self.state = ServerState(root)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, mode: str, path: str = "") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{mode}/{path}"

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.state.stop.set()
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-body are the point of this server


def make_tls_context(workdir: Path) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1, made with openssl in the test."""
    import subprocess

    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


# --- FTP ------------------------------------------------------------------------------------


def start_ftp(root: Path, behaviour: str) -> tuple[Any, threading.Thread, int]:
    """A pyftpdlib server on 127.0.0.1 whose data connections misbehave on artifacts.

    ``behaviour``: "drop" closes the data connection after 64 KiB of an artifact (the control
    connection then says 426); "ok" behaves.
    """
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import DTPHandler, FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    limit = 64 * 1024

    class BrokenDTP(DTPHandler):  # type: ignore[misc]
        sent_bytes = 0

        def send(self, data: bytes) -> int:
            artifact = getattr(self.file_obj, "name", "")
            if behaviour == "ok" or os.path.basename(str(artifact)) not in ARTIFACTS:
                return int(super().send(data))
            if self.sent_bytes >= limit:
                self.close()
                return 0
            n = int(super().send(data[: limit - self.sent_bytes]))
            self.sent_bytes += n
            return n

    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(str(root))
    attrs = {"authorizer": authorizer, "dtp_handler": BrokenDTP, "use_sendfile": False}
    handler = type("Handler", (FTPHandler,), attrs)
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    port = int(server.address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    return server, thread, port
