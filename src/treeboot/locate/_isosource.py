"""Byte sources behind an ISO image: a local file, or an HTTP(S) URL read with Range requests.

The HTTP source keeps one keep-alive connection, a small LRU cache of 64 KiB blocks and an
adaptive read-ahead (doubling on sequential misses, up to 1 MiB), so pycdlib walking the
directories of a multi-GB image costs a few requests. Large reads (a kernel, an initrd) are
streamed with one exact Range request. Every byte received is counted.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from treeboot._version import __version__
from treeboot.errors import IsoError, LocationError
from treeboot.locate._retry import RETRY_STATUSES, RetryPolicy, RetryRefused
from treeboot.locate.base import Cancelled, Progress, redact
from treeboot.notices import notice

_CACHE_BLOCK = 64 * 1024
_MAX_READAHEAD_BLOCKS = 16  # 1 MiB per request when pycdlib walks directories sequentially
_CACHE_BLOCKS = 256  # 16 MiB of cached blocks at most
_STREAM_CHUNK = 1024 * 1024


class Source:
    """Random access to the image bytes, counting what is transferred."""

    name: str
    size: int
    validator: str | None = None  # changes when the image changes (mtime, ETag, Last-Modified)
    bytes_transferred: int = 0  # updated under _lock: kernel and initrd may stream in parallel
    bytes_requested: int = 0  # what callers asked for (logical reads)

    _lock: threading.Lock
    cancelled: bool = False  # set by IsoLocation.cancel(): the next chunk raises Cancelled

    def _count(self, transferred: int, requested: int = 0) -> None:
        if self.cancelled:
            raise Cancelled()
        with self._lock:
            self.bytes_transferred += transferred
            self.bytes_requested += requested

    def pread(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def stream(self, offset: int, length: int, out: IO[bytes], progress: Progress | None) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _clamp(self, offset: int, length: int) -> int:
        if offset < 0 or length < 0:
            raise IsoError(f"{self.name}: invalid read at offset {offset}")
        return max(0, min(length, self.size - offset))


class LocalSource(Source):
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._lock = threading.Lock()
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as e:
            raise LocationError(f"{path}: no such file", hint="check the ISO path") from e
        except OSError as e:
            raise LocationError(f"cannot open {path}: {e.strerror}") from e
        st = os.fstat(self._fd)
        self.size = st.st_size
        self.validator = f"{st.st_mtime_ns}-{st.st_size}"

    def pread(self, offset: int, length: int) -> bytes:
        length = self._clamp(offset, length)
        try:
            data = os.pread(self._fd, length, offset) if length else b""
        except OSError as e:
            raise LocationError(f"{self.name}: read error at offset {offset}: {e.strerror}") from e
        self._count(len(data), length)
        return data

    def stream(self, offset: int, length: int, out: IO[bytes], progress: Progress | None) -> int:
        done = 0
        while done < length:
            chunk = self.pread(offset + done, min(_STREAM_CHUNK, length - done))
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if progress:
                progress(len(chunk))
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


_RESETS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _Again(Exception):
    """A transient answer (``status``), or no answer at all (``status`` None, ``error``)."""

    def __init__(
        self, status: int | None, retry_after: str | None, error: LocationError | None = None
    ) -> None:
        super().__init__(status)
        self.status, self.retry_after = status, retry_after
        self.error = error or LocationError("no answer")


class HttpSource(Source):
    """An ISO behind an HTTP server that honours Range: block cache with adaptive read-ahead."""

    def __init__(self, url: str, *, insecure: bool, timeout: float) -> None:
        self.name = url
        self.retry = RetryPolicy()
        self._client = httpx.Client(
            verify=not insecure,
            timeout=timeout,
            follow_redirects=True,
            headers={"User-Agent": f"treeboot/{__version__}", "Accept-Encoding": "identity"},
        )
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._last_miss = -2
        self._readahead = 1
        self.size = 1 << 62  # unknown until the first response
        try:
            first = self._get(0, _CACHE_BLOCK)
        except BaseException:
            self._client.close()
            raise
        self._store(0, first)

    def _get(self, start: int, length: int) -> bytes:
        """One Range request; raise unless the server answers 206 with exactly that range."""
        chunks: list[bytes] = []
        self._request(start, length, chunks.append)
        return b"".join(chunks)

    def _request(self, start: int, length: int, sink: Callable[[bytes], object]) -> int:
        """One Range request under the retry policy of :mod:`treeboot.locate._retry`: a
        transient status, or a connection closed before the answer, is retried before any
        byte reaches ``sink``."""
        attempt, reconnected = 0, False
        while True:
            attempt += 1
            try:
                return self._request_once(start, length, sink)
            except _Again as again:
                if again.status is None:  # closed before an answer: once, on a new connection
                    if reconnected:
                        raise again.error from None
                    reconnected = True
                    notice(f"GET {redact(self.name)}: connection closed without an answer;"
                           " retrying")  # fmt: skip
                    continue
                try:
                    delay = self.retry.delay(attempt, again.retry_after, None)
                except RetryRefused as e:
                    raise LocationError(
                        f"GET {redact(self.name)} answered HTTP {again.status}: {e.reason}",
                        hint="the server is busy or failing: retry later or use another mirror",
                    ) from None
                what = f"GET {redact(self.name)} answered HTTP {again.status}"
                notice(f"{what}; retrying in {delay:.1f} s (attempt {attempt + 1} of"
                       f" {self.retry.attempts})")  # fmt: skip
                self._pause(delay)

    def _pause(self, seconds: float) -> None:
        """Sleep, checking for a cancel (IsoLocation.cancel) every 0.1 s."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if self.cancelled:
                raise Cancelled()
            time.sleep(min(0.1, left))

    def _request_once(self, start: int, length: int, sink: Callable[[bytes], object]) -> int:
        end = start + length - 1
        got = 0
        try:
            with self._client.stream(
                "GET", self.name, headers={"Range": f"bytes={start}-{end}"}
            ) as r:
                if r.status_code in RETRY_STATUSES:
                    raise _Again(r.status_code, r.headers.get("retry-after"))
                self._check_response(r, start)
                for chunk in r.iter_raw():
                    # Count every byte received; keep only what was asked for. Reading the
                    # body to its end lets the connection be reused.
                    self._count(len(chunk))
                    if got >= length:
                        break  # a server sending more than asked: drop the connection
                    chunk = chunk[: length - got]
                    got += len(chunk)
                    sink(chunk)
        except httpx.HTTPError as e:
            error = LocationError(
                f"reading {redact(self.name)} (bytes {start}-{end}) failed: {e}",
                hint="check that the server is reachable; use --insecure for self-signed TLS",
            )
            if got == 0 and isinstance(e, _RESETS):
                raise _Again(None, None, error) from e
            raise error from e
        if got < length and start + got < self.size:
            raise IsoError(f"{self.name}: short read at offset {start} ({got} of {length} bytes)")
        return got

    def _check_response(self, r: httpx.Response, start: int) -> None:
        if r.status_code == 416:
            raise IsoError(
                f"{self.name}: the server has no byte {start} (image is empty or truncated)",
                hint="check that the URL points to a complete ISO image",
            )
        if r.status_code == 200:
            raise LocationError(
                f"{self.name}: the server ignored the HTTP Range request (answered 200, not 206);"
                " refusing to download the whole image",
                hint="serve the ISO from a server with Range support, or download it and pass "
                "the local file",
            )
        if r.status_code != 206:
            raise LocationError(
                f"GET {self.name} answered HTTP {r.status_code}",
                hint="check the URL of the ISO",
            )
        m = _CONTENT_RANGE.fullmatch(r.headers.get("content-range", "").strip())
        if not m or int(m.group(1)) != start:
            raise LocationError(
                f"{self.name}: bad Content-Range {r.headers.get('content-range')!r}"
            )
        if m.group(3) != "*":
            self.size = int(m.group(3))
        etag = r.headers.get("etag")
        strong = etag if etag and not etag.startswith("W/") else None
        self.validator = strong or r.headers.get("last-modified") or self.validator

    def _store(self, block_index: int, data: bytes) -> None:
        for i in range(0, len(data), _CACHE_BLOCK):
            self._cache[block_index + i // _CACHE_BLOCK] = data[i : i + _CACHE_BLOCK]
        while len(self._cache) > _CACHE_BLOCKS:
            self._cache.popitem(last=False)

    def _block(self, index: int) -> bytes:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        # Sequential misses (pycdlib walking directory extents) double the read-ahead.
        sequential = index == self._last_miss + self._readahead
        self._readahead = min(self._readahead * 2, _MAX_READAHEAD_BLOCKS) if sequential else 1
        self._last_miss = index
        count = 1
        while count < self._readahead and index + count not in self._cache:
            count += 1
        start = index * _CACHE_BLOCK
        length = min(count * _CACHE_BLOCK, self.size - start)
        data = self._get(start, length) if length > 0 else b""
        self._store(index, data)
        return data[:_CACHE_BLOCK]

    def pread(self, offset: int, length: int) -> bytes:
        length = self._clamp(offset, length)
        self._count(0, length)
        out = bytearray()
        pos = offset
        while len(out) < length:
            with self._cache_lock:
                block = self._block(pos // _CACHE_BLOCK)
            within = pos % _CACHE_BLOCK
            piece = block[within : within + length - len(out)]
            if not piece:
                break
            out += piece
            pos += len(piece)
        return bytes(out)

    def stream(self, offset: int, length: int, out: IO[bytes], progress: Progress | None) -> int:
        length = self._clamp(offset, length)
        self._count(0, length)
        if length == 0:
            return 0

        def sink(chunk: bytes) -> None:
            out.write(chunk)
            if progress:
                progress(len(chunk))

        return self._request(offset, length, sink)

    def close(self) -> None:
        self._client.close()


class SourceIO(io.RawIOBase):
    """The seekable binary file pycdlib reads; reads past the end return b"" like a file."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._pos = 0
        self.mode = "rb"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._source.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        data = self._source.pread(self._pos, len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._source.size - self._pos)
        data = self._source.pread(self._pos, size)
        self._pos += len(data)
        return data
