"""The HTTP/1.1 answering both of treeboot's file servers share (the guest server of
:mod:`~treeboot.boot.serve` and the PXE server of ``boot/backends/pxe``): resources that send
a byte range of themselves, safe request paths, one byte range per request (RFC 9110), and
error bodies. Each server keeps its own routes; this module knows no routes.
"""

from __future__ import annotations

import email.utils
import io
import mimetypes
import socket
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol


class HttpError(Exception):
    def __init__(self, status: int, note: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(note)
        self.status = status
        self.note = note
        self.headers = headers or {}


class Resource(Protocol):
    size: int
    mtime: float | None

    def send(
        self, sock: socket.socket, wfile: io.BufferedIOBase, start: int, length: int
    ) -> int: ...


@dataclass
class FileResource:
    path: Path
    size: int
    mtime: float | None

    def send(self, sock: socket.socket, wfile: io.BufferedIOBase, start: int, length: int) -> int:
        with open(self.path, "rb") as f:
            return sock.sendfile(f, start, length) if length else 0


@dataclass
class BytesResource:
    data: bytes
    size: int
    mtime: float | None = None

    def send(self, sock: socket.socket, wfile: io.BufferedIOBase, start: int, length: int) -> int:
        wfile.write(self.data[start : start + length])
        return length


def split_path(target: str) -> list[str]:
    """The request target as safe path components; HttpError for anything suspicious."""
    path = urllib.parse.urlsplit(target).path
    if not path.startswith("/"):
        raise HttpError(400, "not an absolute path")
    try:
        rel = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError as e:
        raise HttpError(400, "path is not UTF-8") from e
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in rel):
        raise HttpError(400, "control character or backslash in path")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HttpError(400, "'..' in path")
    return parts


class RangeHandler(BaseHTTPRequestHandler):
    """Answers with a resource (honouring one byte range) or an HttpError. Subclasses route."""

    protocol_version = "HTTP/1.1"
    send_last_modified = True  # Last-Modified (and so If-Range) from the resource's mtime
    _status: int
    _sent: int

    def _content_type(self, res: Any) -> str:
        ctype = getattr(res, "ctype", None)
        if ctype:
            return str(ctype)
        return mimetypes.guess_type(self.path.split("?", 1)[0])[0] or "application/octet-stream"

    def _fail(self, e: HttpError) -> None:
        self._status = e.status
        try:
            body = f"{e.status} {e.note}\n".encode()
            self.send_response(e.status)
            for k, v in e.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _send(self, res: Any, head: bool) -> None:
        start, length = parse_range(self.headers, res)
        partial = length != res.size or start != 0
        self._status = 206 if partial else 200
        self.send_response(self._status)
        self.send_header("Content-Type", self._content_type(res))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if self.send_last_modified and res.mtime is not None:
            self.send_header("Last-Modified", _http_date(res.mtime))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{res.size}")
        self.end_headers()
        if not head:
            self._sent = res.send(self.connection, self.wfile, start, length)


def _http_date(t: float) -> str:
    return email.utils.formatdate(t, usegmt=True)


def parse_range(headers: Any, res: Resource) -> tuple[int, int]:
    """(start, length) to send: the whole file unless one satisfiable byte range is asked.

    Several ranges, or an If-Range that does not match, get the whole file (RFC 9110 allows
    ignoring Range). An unsatisfiable range raises a 416.
    """
    size = res.size
    value = headers.get("Range")
    if not value or "," in value or not value.strip().startswith("bytes="):
        return 0, size
    if_range = headers.get("If-Range")
    if if_range and (res.mtime is None or if_range != _http_date(res.mtime)):
        return 0, size
    first, sep, last = value.strip()[6:].strip().partition("-")
    try:
        if not sep:
            return 0, size
        if not first:  # suffix: the last N bytes
            n = int(last)
            start = max(0, size - n)
            end = size - 1
            if n <= 0:
                raise _unsatisfiable(value, size)
        else:
            start, end = int(first), int(last) if last else size - 1
            if start < 0 or (last and end < start):
                return 0, size  # syntactically invalid: ignore
    except ValueError:
        return 0, size
    if start >= size:
        raise _unsatisfiable(value, size)
    end = min(end, size - 1)
    return start, end - start + 1


def _unsatisfiable(value: str, size: int) -> HttpError:
    return HttpError(416, f"range {value!r} not satisfiable", {"Content-Range": f"bytes */{size}"})
