"""Locations: where an install tree or ISO lives, behind one small reader interface.

CONTRACT (other modules rely on this; keep it stable):

    loc = open_location("http://host/path/", insecure=False, timeout=30.0)
    loc.url                      -> canonical string (trees end with "/")
    loc.media                    -> Media.TREE or Media.ISO
    loc.exists(path)             -> bool
    loc.read(path, max_size=...) -> bytes | None   (None: not found; MetadataError if > max_size)
    loc.read_many(paths, ...)    -> dict[path, bytes | None], fetched concurrently
    loc.size(path)               -> int | None
    loc.read_range(path, offset, length) -> bytes
    loc.download(path, fileobj, offset=0, progress=None) -> int   (bytes transferred)
        extra keywords: if_range=validator, on_start=callback (resume; see TreeLocation.download)
    loc.stat(path)               -> RemoteStat(size, validator) | None
    loc.bytes_transferred        -> int, every byte read from the network/disk so far
    tree.revalidate(path, validator) -> Revalidation   (trees only: a conditional re-read)
    loc.close()  (also a context manager)

``path`` is always relative to the location and checked by :func:`safe_relpath`.

:class:`Location` is that contract as a typing Protocol (the ISO location of
:mod:`treeboot.locate.iso` satisfies it structurally). Trees (directories, ``file://``,
``http(s)://``, ``ftp://``) are :class:`TreeLocation` subclasses.

Errors: transport failures raise :class:`LocationError`; oversized or hostile paths/files raise
:class:`MetadataError`. Errors writing to the caller's file object (ENOSPC...) propagate as
``OSError`` unchanged, so the caller can tell a full disk from a broken network.
"""

from __future__ import annotations

import abc
import functools
import os
import posixpath
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, TypeVar
from urllib.parse import urlsplit

from treeboot.errors import LocationError, MetadataError, StallError
from treeboot.model import Media, redact_url

DEFAULT_MAX_SIZE = 16 * 1024 * 1024  # metadata files; a kernel is downloaded, never read()
CHUNK = 256 * 1024
MAX_PARALLEL = 8  # read_many worker threads (and HTTP connections they may open)
LOW_SPEED_BYTES = 1024  # a transfer must move this much in every ``timeout`` seconds

Progress = Callable[[int], None]
_T = TypeVar("_T")


@dataclass(frozen=True)
class RemoteStat:
    """What a location says about a file without sending it.

    ``validator`` changes whenever the content changes: a strong HTTP ETag, else the HTTP
    Last-Modified date, the FTP MDTM time or the local mtime. It is what ``if_range`` takes.
    """

    size: int | None
    validator: str | None = None
    encoding: str | None = None  # an HTTP Content-Encoding other than identity (e.g. "gzip")


OnStart = Callable[[RemoteStat, int], None]


class Cancelled(BaseException):
    """The location was cancelled (:meth:`TreeLocation.cancel`, e.g. on SIGINT): a transfer
    stops at its next chunk. A BaseException, so that no ``except Exception`` swallows it."""


@dataclass(frozen=True)
class Revalidation:
    """Whether a file changed since a validator was taken (:meth:`TreeLocation.revalidate`)."""

    unchanged: bool  # the server answered "Not Modified": ``data`` is None
    data: bytes | None  # otherwise the current content (None: the file is absent)
    validator: str | None = None  # the current validator, when the location gives one


class Location(Protocol):
    """The reader interface every location offers (see the module docstring)."""

    url: str
    media: Media

    @property
    def bytes_transferred(self) -> int: ...

    def exists(self, path: str) -> bool: ...

    def read(self, path: str, max_size: int = DEFAULT_MAX_SIZE) -> bytes | None: ...

    def read_many(
        self, paths: Iterable[str], max_size: int = DEFAULT_MAX_SIZE
    ) -> dict[str, bytes | None]: ...

    def size(self, path: str) -> int | None: ...

    def read_range(self, path: str, offset: int, length: int) -> bytes: ...

    def stat(self, path: str) -> RemoteStat | None: ...

    def cancel(self) -> None: ...

    def download(
        self,
        path: str,
        fileobj: BinaryIO,
        offset: int = 0,
        progress: Progress | None = None,
        *,
        if_range: str | None = None,
        on_start: OnStart | None = None,
    ) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def safe_relpath(path: str) -> str:
    """Normalise a path relative to a location; raise MetadataError for anything that escapes.

    Rejected: NUL and other control characters, backslashes, absolute paths, drive letters and
    any ``..`` component. ``.`` components, duplicate and trailing slashes are dropped, so
    ``"./images//pxeboot/"`` becomes ``"images/pxeboot"``; the empty path is the location itself.
    """
    if not isinstance(path, str):
        raise MetadataError(f"path must be a string, not {type(path).__name__}")
    bad = next((c for c in path if ord(c) < 0x20 or c in "\\\x7f"), None)
    if bad is not None:
        raise MetadataError(
            f"refusing path {path!r}: it contains {bad!r}",
            hint="paths inside a tree use '/' and no control characters",
        )
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise MetadataError(
            f"refusing absolute path {path!r}", hint="paths must be relative to the location"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise MetadataError(
            f"refusing path {path!r}: '..' would leave the location",
            hint="a tree's metadata must only name files inside the tree",
        )
    return "/".join(parts)


def redact(url: str) -> str:
    """``url`` without a password, for messages."""
    return redact_url(url)


def too_big(where: str, limit: int, size: int | None = None) -> MetadataError:
    what = f"{size} bytes" if size is not None else "more bytes"
    return MetadataError(
        f"{where} is {what}, more than the {limit} bytes allowed for a metadata file",
        hint="the location does not look like an install tree (or serves something hostile)",
    )


class StallGuard:
    """Fail a transfer that moves less than LOW_SPEED_BYTES in ``window`` seconds.

    A read timeout only fires when *nothing* arrives; a server dripping a byte now and then
    would hold a download forever. This is curl's ``--speed-limit``/``--speed-time``.
    """

    def __init__(self, where: str, window: float) -> None:
        self.where = where
        self.window = window
        self._mark = time.monotonic()
        self._bytes = 0

    def __call__(self, n: int) -> None:
        self._bytes += n
        now = time.monotonic()
        if now - self._mark < self.window:
            return
        if self._bytes < LOW_SPEED_BYTES:
            raise StallError(
                f"{self.where}: less than {LOW_SPEED_BYTES} bytes arrived in {self.window:g} s;"
                " giving up on this transfer",
                hint="the server is stalling: retry later or use another mirror",
            )
        self._mark, self._bytes = now, 0


class TreeLocation(abc.ABC):
    """Base of directory, HTTP and FTP trees: path checks, memo, counters, read_many.

    Subclasses implement the ``_``-prefixed methods with an already checked relative path.
    """

    media = Media.TREE

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._transferred = 0
        self._memo: dict[str, bytes | None] = {}
        self._validators: dict[str, str] = {}  # rel -> validator of what read() returned
        self._stalled: dict[str, StallError] = {}  # rel -> how it stalled (never asked again)
        self._cancel = threading.Event()

    # -- what subclasses implement
    @abc.abstractmethod
    def _read(self, rel: str, max_size: int) -> bytes | None: ...

    @abc.abstractmethod
    def _stat(self, rel: str) -> RemoteStat | None: ...

    @abc.abstractmethod
    def _read_range(self, rel: str, offset: int, length: int) -> bytes: ...

    @abc.abstractmethod
    def _download(
        self,
        rel: str,
        fileobj: BinaryIO,
        offset: int,
        progress: Progress | None,
        if_range: str | None,
        on_start: OnStart | None,
    ) -> int: ...

    def _exists(self, rel: str) -> bool:
        return self._stat(rel) is not None

    def _revalidate(self, rel: str, validator: str | None, max_size: int) -> Revalidation:
        """Default: read the file again (callers compare contents)."""
        return Revalidation(False, self._read(rel, max_size))

    def _remember_validator(self, rel: str, validator: str | None) -> None:
        if validator:
            with self._lock:
                self._validators[rel] = validator

    # -- the contract
    @property
    def bytes_transferred(self) -> int:
        return self._transferred

    def _count(self, n: int) -> None:
        """Count ``n`` bytes received; every transfer calls it per chunk, so it is also where
        a cancelled transfer stops."""
        if self._cancel.is_set():
            raise Cancelled()
        with self._lock:
            self._transferred += n

    def cancel(self) -> None:
        """Stop every transfer of this location at its next chunk (and every retry wait):
        they raise :class:`Cancelled`. For a signal handler or another thread."""
        self._cancel.set()

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (a retry's delay), or raise Cancelled as soon as cancelled."""
        if self._cancel.wait(seconds):
            raise Cancelled()

    def _once(self, rel: str, call: Callable[[], _T]) -> _T:
        """``call()``, unless ``rel`` already stalled once: a stalled server costs one
        timeout per run, not one per probe of the same file."""
        if (stalled := self._stalled.get(rel)) is not None:
            raise stalled
        try:
            return call()
        except StallError as e:
            self._stalled[rel] = e
            raise

    def where(self, rel: str) -> str:
        """The full URL of ``rel`` for messages (password removed)."""
        return redact(self.url + rel)

    def exists(self, path: str) -> bool:
        rel = safe_relpath(path)
        if self._memo.get(rel) is not None:
            return True
        return self._once(rel, lambda: self._exists(rel))

    def read(self, path: str, max_size: int = DEFAULT_MAX_SIZE) -> bytes | None:
        """The whole file, ``None`` if absent; MetadataError (early) if it exceeds ``max_size``.

        Results are memoised for the life of the location: detection probes the same small
        files from several rules.
        """
        rel = safe_relpath(path)
        if rel in self._memo:
            data = self._memo[rel]
        else:
            data = self._once(rel, lambda: self._read(rel, max_size))
            with self._lock:
                self._memo[rel] = data
        if data is not None and len(data) > max_size:
            raise too_big(self.where(rel), max_size, len(data))
        return data

    def validator(self, path: str) -> str | None:
        """The validator (strong ETag, else Last-Modified) of what :meth:`read` returned for
        ``path``, if the location sent one with it (HTTP); None otherwise."""
        return self._validators.get(safe_relpath(path))

    def revalidate(
        self, path: str, validator: str | None = None, max_size: int = DEFAULT_MAX_SIZE
    ) -> Revalidation:
        """Has ``path`` changed since ``validator``? One request, never answered from the memo.

        HTTP sends a conditional GET (``If-None-Match``) when ``validator`` is a strong ETag
        and trusts a 304; otherwise, and for other locations, the file is read again and the
        caller compares contents. A file read again is memoised like :meth:`read`.
        """
        rel = safe_relpath(path)
        result = self._revalidate(rel, validator, max_size)
        if not result.unchanged:
            with self._lock:
                self._memo[rel] = result.data
            self._remember_validator(rel, result.validator)
        return result

    def read_many(
        self, paths: Iterable[str], max_size: int = DEFAULT_MAX_SIZE
    ) -> dict[str, bytes | None]:
        """``read`` every path, concurrently: one round trip for the lot on a slow link."""
        todo = list(dict.fromkeys(paths))
        for p in todo:
            safe_relpath(p)  # fail before any request
        if len(todo) <= 1:
            return {p: self.read(p, max_size) for p in todo}
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(todo))) as pool:
            futures = [pool.submit(self.read, p, max_size) for p in todo]
            return {p: f.result() for p, f in zip(todo, futures, strict=True)}

    def size(self, path: str) -> int | None:
        st = self.stat(path)
        return None if st is None else st.size

    def stat(self, path: str) -> RemoteStat | None:
        """Size and validator of a file (one request), ``None`` if absent."""
        rel = safe_relpath(path)
        return self._once(rel, lambda: self._stat(rel))

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end of the file), one request."""
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range: offset {offset}, length {length}")
        if length == 0:
            return b""
        return self._read_range(safe_relpath(path), offset, length)

    def download(
        self,
        path: str,
        fileobj: BinaryIO,
        offset: int = 0,
        progress: Progress | None = None,
        *,
        if_range: str | None = None,
        on_start: OnStart | None = None,
    ) -> int:
        """Write the file into ``fileobj``, which already holds its first ``offset`` bytes.

        The transfer resumes at ``offset`` only if ``if_range`` (a validator from an earlier
        :meth:`stat` or ``on_start``) still matches; otherwise (file changed, server cannot
        resume, no validator) ``fileobj`` is truncated and the whole file is written.
        ``on_start(stat, start)`` runs once before the first byte is written, with the remote
        file's size/validator and the offset writing starts at. ``progress(n)`` is called
        per chunk. Returns the number of bytes transferred.
        """
        rel = safe_relpath(path)
        if offset and not if_range:
            offset = 0
        return self._download(rel, fileobj, offset, progress, if_range, on_start)

    def close(self) -> None:  # noqa: B027 - nothing to release for a directory
        """Release connections; the location cannot be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.url)!r})"


def start_writing(fileobj: BinaryIO, start: int) -> None:
    """Position ``fileobj`` at ``start`` and drop anything after it (a restart truncates)."""
    fileobj.seek(start)
    fileobj.truncate()


def resume_offset(offset: int, if_range: str | None, st: RemoteStat) -> int:
    """Where a download starts: ``offset`` while ``if_range`` still names ``st``, else 0."""
    return offset if offset and if_range and if_range == st.validator else 0


def begin_download(
    fileobj: BinaryIO, st: RemoteStat, start: int, on_start: OnStart | None
) -> None:
    """Prepare ``fileobj`` for bytes from ``start`` on, then tell ``on_start``."""
    start_writing(fileobj, start)
    if on_start:
        on_start(st, start)


def write_chunks(chunks: Iterable[bytes], fileobj: BinaryIO, progress: Progress | None) -> int:
    """Write every chunk to ``fileobj``, calling ``progress(n)`` per chunk; the bytes written."""
    done = 0
    for chunk in chunks:
        fileobj.write(chunk)
        done += len(chunk)
        if progress:
            progress(len(chunk))
    return done


class DirLocation(TreeLocation):
    """A local directory (given as a path or ``file://`` URL)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        super().__init__(self.root.as_uri().rstrip("/") + "/")

    def _path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def _open(self, rel: str) -> BinaryIO | None:
        try:
            f = open(self._path(rel), "rb")  # noqa: SIM115 - returned to the caller
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as e:
            raise LocationError(f"cannot open {self.where(rel)}: {e.strerror}") from e
        if not os.path.isfile(f.name):
            f.close()
            return None
        return f

    def _read(self, rel: str, max_size: int) -> bytes | None:
        f = self._open(rel)
        if f is None:
            return None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size > max_size:
                raise too_big(self.where(rel), max_size, size)
            data = self._pread(f, rel, max_size + 1)
        if len(data) > max_size:  # grew while we read
            raise too_big(self.where(rel), max_size)
        return data

    def _pread(self, f: BinaryIO, rel: str, n: int) -> bytes:
        try:
            data = f.read(n)
        except OSError as e:
            raise LocationError(f"cannot read {self.where(rel)}: {e.strerror}") from e
        self._count(len(data))
        return data

    def _exists(self, rel: str) -> bool:
        return self._path(rel).exists()

    def _stat(self, rel: str) -> RemoteStat | None:
        try:
            st = self._path(rel).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise LocationError(f"cannot stat {self.where(rel)}: {e.strerror}") from e
        if not self._path(rel).is_file():
            return None
        return RemoteStat(st.st_size, f"{st.st_size}-{st.st_mtime_ns}")

    def _read_range(self, rel: str, offset: int, length: int) -> bytes:
        f = self._open(rel)
        if f is None:
            raise LocationError(f"{self.where(rel)} does not exist")
        with f:
            f.seek(offset)
            return self._pread(f, rel, length)

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
        f = self._open(rel)
        if st is None or f is None:
            raise LocationError(f"{self.where(rel)} does not exist")
        with f:
            start = resume_offset(offset, if_range, st)
            begin_download(fileobj, st, start, on_start)
            f.seek(start)
            chunks = iter(functools.partial(self._pread, f, rel, CHUNK), b"")
            return write_chunks(chunks, fileobj, progress)


def tree_url(spec: str) -> str:
    """``scheme://netloc/path/`` without query or fragment: the canonical URL of a tree."""
    parts = urlsplit(spec)
    path = posixpath.normpath(parts.path or "/") if parts.path not in ("", "/") else "/"
    if not path.endswith("/"):
        path += "/"
    return f"{parts.scheme.lower()}://{parts.netloc}{path}"
