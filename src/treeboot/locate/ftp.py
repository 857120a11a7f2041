"""An install tree over FTP (ftplib): a small pool of control connections, binary mode.

ftplib connections are not thread-safe, so each operation borrows one from the pool (opening a
new one if all are busy, for :meth:`read_many`). A transfer stopped early (size limit, range)
leaves the control connection in an unknown state: that connection is closed, not reused.
"""

from __future__ import annotations

import ftplib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from treeboot.errors import LocationError
from treeboot.locate.base import (
    CHUNK,
    OnStart,
    Progress,
    RemoteStat,
    StallGuard,
    TreeLocation,
    begin_download,
    redact,
    resume_offset,
    too_big,
    tree_url,
)

_HINT = "check the URL and that the FTP server is reachable (see also --timeout)"


class _Absent(Exception):
    """The server answered 550 (no such file)."""


class _Stop(Exception):
    """The consumer has what it needs; abandon the transfer."""


class FtpLocation(TreeLocation):
    def __init__(self, spec: str, *, timeout: float = 30.0) -> None:
        super().__init__(tree_url(spec))
        parts = urlsplit(spec)
        if not parts.hostname:
            raise LocationError(f"{redact(spec)}: no host in the FTP URL")
        self.host = parts.hostname
        self.port = parts.port or 21
        self.user = unquote(parts.username) if parts.username else "anonymous"
        self.password = unquote(parts.password) if parts.password else "treeboot@"
        self.base = unquote(urlsplit(self.url).path)
        self.timeout = timeout
        self._idle: list[ftplib.FTP] = []
        self._pool_lock = threading.Lock()

    def _connect(self) -> ftplib.FTP:
        try:
            ftp = ftplib.FTP(timeout=self.timeout)
            ftp.connect(self.host, self.port)
            ftp.login(self.user, self.password)
            ftp.voidcmd("TYPE I")
        except ftplib.all_errors as e:
            raise LocationError(
                f"cannot open FTP session to {redact(self.url)}: {_reason(e)}", hint=_HINT
            ) from e
        return ftp

    def _release(self, ftp: ftplib.FTP) -> None:
        with self._pool_lock:
            self._idle.append(ftp)

    @contextmanager
    def _conn(self) -> Iterator[ftplib.FTP]:
        with self._pool_lock:
            ftp = self._idle.pop() if self._idle else None
        if ftp is None:
            ftp = self._connect()
        try:
            yield ftp
        except _Absent:
            self._release(ftp)  # a clean "550": the session is fine
            raise
        except BaseException:
            _drop(ftp)
            raise
        self._release(ftp)

    def close(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for ftp in idle:
            try:
                ftp.quit()
            except ftplib.all_errors:
                _drop(ftp)

    def _path(self, rel: str) -> str:
        return self.base + rel

    def _cmd(self, rel: str, what: str, call: Callable[[ftplib.FTP], str]) -> str:
        """One control-channel command; 550 -> _Absent, transport errors -> LocationError."""
        with self._conn() as ftp:
            try:
                return call(ftp)
            except ftplib.error_perm as e:
                if str(e).startswith("550"):
                    raise _Absent() from e
                raise LocationError(f"FTP {what} {self.where(rel)}: {e}", hint=_HINT) from e
            except ftplib.all_errors as e:
                raise LocationError(
                    f"FTP {what} {self.where(rel)} failed: {_reason(e)}", hint=_HINT
                ) from e

    def _transfer(self, rel: str, offset: int, consume: Callable[[bytes], None]) -> int:
        """RETR from ``offset``, feeding chunks to ``consume`` (which may raise _Stop)."""
        done = 0
        guard = StallGuard(self.where(rel), self.timeout)
        with self._conn() as ftp:
            try:
                sock = ftp.transfercmd("RETR " + self._path(rel), rest=offset or None)
            except ftplib.error_perm as e:
                if str(e).startswith("550"):
                    raise _Absent() from e
                raise LocationError(f"FTP RETR {self.where(rel)}: {e}", hint=_HINT) from e
            except ftplib.all_errors as e:
                raise LocationError(
                    f"FTP RETR {self.where(rel)} failed: {_reason(e)}", hint=_HINT
                ) from e
            with sock:
                while True:
                    try:
                        chunk = sock.recv(CHUNK)
                    except OSError as e:
                        raise LocationError(
                            f"FTP RETR {self.where(rel)} failed after {done} bytes: {_reason(e)}",
                            hint=_HINT,
                        ) from e
                    if not chunk:
                        break
                    self._count(len(chunk))
                    guard(len(chunk))
                    done += len(chunk)
                    consume(chunk)  # _Stop / OSError propagate: the session is dropped
            try:
                ftp.voidresp()
            except ftplib.all_errors as e:
                raise LocationError(
                    f"FTP RETR {self.where(rel)} did not complete: {_reason(e)}", hint=_HINT
                ) from e
        return done

    # -- the TreeLocation primitives
    def _read(self, rel: str, max_size: int) -> bytes | None:
        body = bytearray()

        def consume(chunk: bytes) -> None:
            body.extend(chunk)
            if len(body) > max_size:
                raise too_big(self.where(rel), max_size)

        try:
            self._transfer(rel, 0, consume)
        except _Absent:
            return None
        return bytes(body)

    def _stat(self, rel: str) -> RemoteStat | None:
        path = self._path(rel)
        try:
            size = self._cmd(rel, "SIZE", lambda ftp: str(ftp.size(path)))
        except _Absent:
            return None
        try:
            mdtm = self._cmd(rel, "MDTM", lambda ftp: ftp.sendcmd("MDTM " + path))
        except (_Absent, LocationError):
            mdtm = ""
        validator = mdtm[4:].strip() if mdtm.startswith("213") else None
        return RemoteStat(int(size) if size.isdigit() else None, validator)

    def _exists(self, rel: str) -> bool:
        if self._stat(rel) is not None:
            return True
        try:  # a directory has no SIZE
            self._cmd(rel, "CWD", lambda ftp: ftp.cwd(self._path(rel) or "/"))
        except _Absent:
            return False
        return True

    def _read_range(self, rel: str, offset: int, length: int) -> bytes:
        out = bytearray()

        def consume(chunk: bytes) -> None:
            out.extend(chunk)
            if len(out) >= length:
                raise _Stop()

        try:
            self._transfer(rel, offset, consume)
        except _Absent as e:
            raise LocationError(f"{self.where(rel)} does not exist") from e
        except _Stop:
            pass
        return bytes(out[:length])

    def _download(
        self,
        rel: str,
        fileobj: BinaryIO,
        offset: int,
        progress: Progress | None,
        if_range: str | None,
        on_start: OnStart | None,
    ) -> int:
        st = self._stat(rel)
        if st is None:
            raise LocationError(f"{self.where(rel)} does not exist")
        start = resume_offset(offset, if_range, st)
        begin_download(fileobj, st, start, on_start)

        def consume(chunk: bytes) -> None:
            fileobj.write(chunk)
            if progress:
                progress(len(chunk))

        try:
            return self._transfer(rel, start, consume)
        except _Absent as e:
            raise LocationError(f"{self.where(rel)} does not exist") from e


def _drop(ftp: ftplib.FTP) -> None:
    with suppress(OSError):
        ftp.close()


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__
