"""What the guest reaches over the network: treeboot's file server and the restricted netdev.

The guest never gets an open network. QEMU's user-mode network runs with ``restrict=on``
(no route out) and one ``guestfwd``: connections to 10.0.2.100:80 start
:mod:`treeboot.boot._relay`, which copies the bytes to a port on the host's loopback. There
:class:`GuestServer` serves one install tree (a directory, an ISO's files, or any
``Location``), and nothing else. A ``guestfwd`` to a ``tcp:`` chardev carries a single
connection only; the ``cmd:`` relay starts once per connection, so installers can open many.

    with GuestServer(Path("/srv/fedora")) as srv:
        netdev = guest_netdev_args(srv.port, "user")     # -netdev user,...,guestfwd=...
        repo = srv.guest_url                             # http://10.0.2.100/
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self, runtime_checkable

from treeboot.boot._http import BytesResource as _Bytes
from treeboot.boot._http import FileResource as _File
from treeboot.boot._http import HttpError as _HttpError
from treeboot.boot._http import RangeHandler
from treeboot.boot._http import Resource as _Resource
from treeboot.boot._http import split_path as _split_path
from treeboot.errors import BootError, LocationError, TreebootError, UsageError
from treeboot.prepare.cmdline import guest_iso_name

log = logging.getLogger("treeboot.boot.serve")

GUEST_HOST = "10.0.2.100"  # the address the guest connects to (slirp's 10.0.2.0/24)
GUEST_PORT = 80
GUEST_URL = f"http://{GUEST_HOST}/"
NETDEV_ID = "net0"
CHUNK = 1024 * 1024


@runtime_checkable
class TreeSource(Protocol):
    """The part of ``treeboot.locate.base.Location`` the server needs."""

    def size(self, path: str) -> int | None: ...

    def read_range(self, path: str, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class AccessRecord:
    """One request, as written (one JSON object per line) to the access log."""

    time: float  # host wall clock, seconds since the epoch
    method: str
    path: str
    status: int
    bytes: int  # body bytes sent
    range: str | None
    ms: float  # time to answer, in milliseconds
    note: str | None = None  # why a request was refused


# -- resources ------------------------------------------------------------------------------


@dataclass
class _LocFile:
    loc: TreeSource
    rel: str
    size: int
    mtime: float | None = None

    def send(self, sock: socket.socket, wfile: io.BufferedIOBase, start: int, length: int) -> int:
        sent = 0
        while sent < length:
            data = self.loc.read_range(self.rel, start + sent, min(CHUNK, length - sent))
            if not data:
                raise LocationError(f"{self.rel}: short read at {start + sent}")
            wfile.write(data)
            sent += len(data)
        return sent


# -- the server -----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: GuestServer

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.owner._lock:
            self.owner._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.owner._lock:
            self.owner._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("guest server: connection error", exc_info=True)


class _Handler(RangeHandler):
    server: _Server
    timeout = 300.0  # an idle keep-alive connection (and its relay process) goes away

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("guest server: " + format, *args)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        t0 = time.monotonic()
        self._status, self._sent = 0, 0
        note = None
        try:
            self._send(self.server.owner._resolve(self.path), head)
        except _HttpError as e:
            note = e.note
            self._fail(e)
        except OSError as e:  # the guest (or its relay) went away mid-answer
            note, self.close_connection = f"connection lost: {e}", True
        except TreebootError as e:  # a Location that cannot read
            note, self.close_connection = e.message, True
            if not self._status:
                self._fail(_HttpError(502, e.message))
        rec = AccessRecord(
            time.time(), self.command, self.path, self._status, self._sent,
            self.headers.get("Range"), round((time.monotonic() - t0) * 1000, 3), note,
        )  # fmt: skip
        self.server.owner._record(rec)

def _open_source(
    source: Path | str | TreeSource,
) -> tuple[Path | None, TreeSource | None, Path | None]:
    """(directory root, location, ISO image file) for what to serve."""
    if isinstance(source, (str, Path)):
        spec = str(source)
        parts = urllib.parse.urlsplit(spec)
        if isinstance(source, Path) or parts.scheme in ("", "file"):
            path = Path(urllib.parse.unquote(parts.path) if parts.scheme == "file" else spec)
            path = path.expanduser()
            if path.is_dir():
                return path.resolve(), None, None
            if not path.is_file():
                raise UsageError(f"{path}: no such directory or ISO image to serve")
            spec = str(path.resolve())
        from treeboot.locate.open import open_location

        loc = open_location(spec)
        image = Path(spec) if Path(spec).is_file() else None
        return None, loc, image
    if isinstance(source, TreeSource):
        return None, source, None
    raise UsageError(f"cannot serve {source!r}: not a directory, ISO or location")


class GuestServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 (ephemeral port) for one install tree.

    ``host`` binds another address instead: a libvirt network's bridge address, for guests
    on that network (``--connect``).

    ``source`` is a directory, a local ISO (its files are served, and the image itself at
    ``/<name>.iso``), a URL or path string, or an open ``Location``. GET and HEAD with one
    byte range; no directory listings; ``..``, absolute paths and symlinks leaving the tree are
    refused. Every request goes to :attr:`requests` and, as JSON lines, to ``access_log``.
    """

    def __init__(
        self,
        source: Path | str | TreeSource,
        *,
        access_log: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._connections: set[Any] = set()
        self._extra: dict[str, _Resource] = {}
        self.requests: list[AccessRecord] = []
        self._root, self._loc, image = _open_source(source)
        self._owns_loc = not isinstance(source, TreeSource)
        self._log_file: IO[str] | None = None
        try:
            if access_log is not None:
                self._log_file = open(access_log, "a", encoding="utf-8")  # noqa: SIM115
            self._httpd = _Server((host, 0), _Handler)
        except OSError as e:
            self._close_source()
            raise BootError(f"cannot start the server for the guest: {e}") from e
        self._httpd.owner = self
        self.port: int = self._httpd.server_address[1]
        self.guest_url = GUEST_URL
        self.url = f"http://{host}:{self.port}/"  # the same server, seen from the host
        if image is not None:
            self.add_file("/" + guest_iso_name(str(image)), image)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"treeboot-serve-{self.port}", daemon=True
        )
        self._thread.start()

    def add_file(self, url_path: str, local_path: Path) -> str:
        """Serve ``local_path`` at ``url_path`` too (e.g. the ISO image for casper's url=).

        Returns the URL the guest uses for it.
        """
        st = Path(local_path).stat()
        return self._add(url_path, _File(Path(local_path).resolve(), st.st_size, st.st_mtime))

    def add_bytes(self, url_path: str, data: bytes) -> str:
        """Serve ``data`` at ``url_path`` (a generated preseed or kickstart file)."""
        return self._add(url_path, _Bytes(bytes(data), len(data)))

    def _add(self, url_path: str, res: _Resource) -> str:
        try:
            key = "/".join(_split_path("/" + url_path.lstrip("/")))
        except _HttpError as e:
            raise UsageError(f"cannot serve a file at {url_path!r}: {e.note}") from e
        if not key:
            raise UsageError(f"cannot serve a file at {url_path!r}")
        with self._lock:
            self._extra[key] = res
        return self.guest_url + urllib.parse.quote(key)

    def _resolve(self, target: str) -> _Resource:
        parts = _split_path(target)
        key = "/".join(parts)
        with self._lock:
            extra = self._extra.get(key)
        if extra is not None:
            return extra
        if self._root is not None:
            return self._resolve_file(parts)
        assert self._loc is not None
        try:
            size = self._loc.size(key) if key else None
        except LocationError as e:
            raise _HttpError(502, e.message) from e
        except TreebootError as e:
            raise _HttpError(400, e.message) from e
        if size is None:
            raise _HttpError(404, "not found")
        return _LocFile(self._loc, key, size)

    def _resolve_file(self, parts: list[str]) -> _File:
        assert self._root is not None
        real = Path(os.path.realpath(self._root.joinpath(*parts)))
        if real != self._root and self._root not in real.parents:
            raise _HttpError(403, "symlink leaves the tree")
        try:
            st = real.stat()
        except OSError as e:
            raise _HttpError(404, "not found") from e
        if not real.is_file():
            raise _HttpError(404, "not a file")
        return _File(real, st.st_size, st.st_mtime)

    def _record(self, rec: AccessRecord) -> None:
        with self._lock:
            self.requests.append(rec)
            if self._log_file is not None:
                self._log_file.write(json.dumps(asdict(rec)) + "\n")
                self._log_file.flush()

    def close(self) -> None:
        """Stop serving, drop open connections (their relays exit), close the log."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        self._close_source()

    def _close_source(self) -> None:
        if self._loc is not None and self._owns_loc:
            self._loc.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- the guest's network --------------------------------------------------------------------


def relay_argv(port: int, *, python: str | None = None) -> list[str]:
    """The per-connection relay command: ``python -I -S .../_relay.py 127.0.0.1 PORT``.

    ``-I -S`` skip ``site`` and the environment: the relay starts in about half the time of
    ``python -m treeboot.boot._relay`` (it imports only C modules, so it needs no sys.path).
    """
    relay = Path(__file__).with_name("_relay.py")
    return [python or sys.executable, "-I", "-S", str(relay), "127.0.0.1", str(port)]


def _qemu_opt(value: str) -> str:
    """A value inside a QEMU ``key=value,...`` option string: commas are doubled."""
    return value.replace(",", ",,")


def guest_netdev_args(
    server_port: int | None,
    mode: str,
    *,
    device_model: str | None = None,
    python: str | None = None,
) -> list[str]:
    """QEMU arguments for the guest's network.

    ``mode`` "user": restricted user-mode networking (DHCP, no route out) plus, with a
    ``server_port``, the guestfwd 10.0.2.100:80 -> 127.0.0.1:``server_port``. "none": no NIC.
    ``device_model`` (a QEMU device string such as "virtio-net-pci,romfile=" or "e1000") adds
    ``-device MODEL,netdev=net0``;
    None leaves the device to the caller (the QEMU backend knows the bus, MAC and ROM).
    """
    if mode == "none":
        if server_port is not None:
            raise UsageError("a server for the guest needs a network (mode 'user'), not 'none'")
        return ["-nic", "none"]
    if mode != "user":
        raise UsageError(
            f"network mode {mode!r} is not supported",
            hint="use 'user' (restricted user-mode networking) or 'none'",
        )
    netdev = f"user,id={NETDEV_ID},restrict=on"
    if server_port is not None:
        if not 0 <= server_port < 65536:  # 0: a placeholder in dry runs
            raise UsageError(f"invalid server port {server_port}")
        # libslirp runs the command with g_shell_parse_argv: quote for a shell, then escape
        # for QEMU's option parser.
        cmd = shlex.join(relay_argv(server_port, python=python))
        netdev += f",guestfwd=tcp:{GUEST_HOST}:{GUEST_PORT}-cmd:{_qemu_opt(cmd)}"
    args = ["-netdev", netdev]
    if device_model:
        args += ["-device", f"{device_model},netdev={NETDEV_ID}"]
    return args


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rewrite_for_guest(url: str) -> tuple[str, int | None]:
    """(the URL the guest uses, the host port to forward or None).

    A URL on the host's loopback (127.0.0.0/8, ::1, localhost) becomes
    ``http://10.0.2.100/...`` and its port is returned for :func:`guest_netdev_args`. Other
    URLs come back unchanged with None: under ``restrict=on`` the guest cannot reach them, so
    serve such a tree through ``GuestServer(open_location(url))`` instead.
    """
    parts = urllib.parse.urlsplit(url)
    if not _is_loopback(parts.hostname):
        return url, None
    if parts.scheme != "http":
        raise BootError(
            f"the guest cannot reach {url}: only plain http on the host's loopback is"
            " forwarded to it",
            hint="serve the tree over http, or pass it as a directory/ISO so treeboot serves it",
        )
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{GUEST_HOST}" if userinfo else GUEST_HOST
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), parts.port or 80


def reachable_check(url: str, *, timeout: float = 10.0) -> None:
    """Probe ``url`` from the host before boot; BootError if the host cannot fetch it.

    HEAD first, then a one-byte GET for servers that refuse HEAD. Only http(s) is probed.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return
    import httpx

    from treeboot.locate.http import tls_verify

    verify = tls_verify(parts.scheme)  # as the tree's own reader does it
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True, verify=verify) as client:
            r = client.head(url)
            if r.status_code in (405, 501):
                r = client.get(url, headers={"Range": "bytes=0-0"})
    except httpx.HTTPError as e:
        raise BootError(
            f"the installer would fetch {url}, but the host itself cannot: {e}",
            hint="check that the server is running and the URL is right",
        ) from e
    if r.status_code >= 400:
        raise BootError(
            f"the installer would fetch {url}, but the server answers {r.status_code}"
            f" {r.reason_phrase}",
            hint="check the URL (a tree URL ends with '/'; ISO URLs name the image)",
        )
