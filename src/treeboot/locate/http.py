"""An install tree over HTTP(S): one httpx Client (keep-alive pool) per location.

Redirects are followed by hand, up to :data:`MAX_REDIRECTS`, so that each hop can be checked:
a redirect may change host and upgrade http to https, but never downgrade https to http or
leave HTTP (``file://``, ``ftp://``), and a loop is reported as such.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO
from urllib.parse import quote, urljoin, urlsplit

import httpx

from treeboot._version import __version__
from treeboot.errors import LocationError, StallError
from treeboot.locate._retry import RETRY_STATUSES, RetryPolicy, RetryRefused
from treeboot.locate.base import (
    MAX_PARALLEL,
    OnStart,
    Progress,
    RemoteStat,
    Revalidation,
    StallGuard,
    TreeLocation,
    begin_download,
    redact,
    too_big,
    tree_url,
    write_chunks,
)
from treeboot.notices import notice

MAX_REDIRECTS = 10
ABSENT = frozenset({403, 404, 410})  # a probe for a file that is not there (or hidden)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_DRAIN_LIMIT = 64 * 1024  # bodies we read to the end to keep the connection (404 pages...)
_NET_HINT = "check the URL and that the server is reachable (see also --timeout, --insecure)"


# A connection closed or reset before the answer (stale keep-alive): retried once, anew.
_RESETS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def tls_verify(scheme: str, *, insecure: bool = False) -> ssl.SSLContext | bool:
    """What an httpx client verifies servers with: the system's CAs (SSL_CERT_FILE) for https
    unless ``insecure``; nothing for plain http, so that its client loads no CA store (20-35
    ms, on the way to QEMU's start)."""
    if scheme.lower() == "https" and not insecure:
        return ssl.create_default_context()
    return False


class HttpLocation(TreeLocation):
    """``max_time``: no retry is started that would end more than ``max_time`` seconds after
    the location was opened (the CLI's ``--max-time``)."""

    def __init__(
        self,
        spec: str,
        *,
        insecure: bool = False,
        timeout: float = 30.0,
        max_time: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(tree_url(spec))
        self.timeout = timeout
        self.insecure = insecure
        self.retry = retry or RetryPolicy()
        self._deadline = None if max_time is None else time.monotonic() + max_time
        self._clients: dict[str, httpx.Client] = {}
        self._retired: list[httpx.Client] = []  # pools of stale connections, closed at close()
        self._clients_lock = threading.Lock()

    def _client(self, url: str, stale: httpx.Client | None = None) -> httpx.Client:
        """One keep-alive client per scheme; TLS trust is loaded only once https is used.

        ``stale``: that client's pool holds connections the server dropped (a load
        balancer closes idle ones all at once): a new pool replaces it, so that the retry goes
        out on a new connection. Requests still streaming on the old one finish there."""
        scheme = urlsplit(url).scheme.lower()
        with self._clients_lock:
            client = self._clients.get(scheme)
            if client is not None and client is stale:
                self._retired.append(client)
                client = None
            if client is None:
                client = httpx.Client(
                    verify=tls_verify(scheme, insecure=self.insecure),
                    timeout=httpx.Timeout(self.timeout),
                    follow_redirects=False,
                    limits=httpx.Limits(max_connections=2 * MAX_PARALLEL),
                    headers={
                        "User-Agent": f"treeboot/{__version__}",
                        "Accept-Encoding": "identity",
                    },
                )
                self._clients[scheme] = client
        return client

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = [*self._clients.values(), *self._retired], {}
            self._retired = []
        for client in clients:
            client.close()

    def _url(self, rel: str) -> str:
        return self.url + quote(rel, safe="/")

    # -- one request, redirects checked hop by hop
    @contextmanager
    def _open(
        self, method: str, rel: str, headers: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        url = self._url(rel)
        seen = {url}
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._send(method, url, headers)
            if not (resp.is_redirect and "location" in resp.headers):
                break
            _finish(resp)
            target = urljoin(url, resp.headers["location"])
            _check_redirect(url, target)
            if target in seen:
                raise LocationError(
                    f"redirect loop: {redact(url)} leads back to {redact(target)}",
                    hint="the server is misconfigured; try another mirror",
                )
            seen.add(target)
            url = target
        else:
            raise LocationError(
                f"too many redirects (more than {MAX_REDIRECTS}) for {self.where(rel)}",
                hint="the server is misconfigured; try another mirror",
            )
        try:
            yield resp
            _finish(resp)
        except httpx.TimeoutException as e:
            raise StallError(
                f"{method} {redact(url)}: no data for {self.timeout:g} s", hint=_NET_HINT
            ) from e
        except httpx.HTTPError as e:
            raise LocationError(f"{method} {redact(url)} failed: {e}", hint=_NET_HINT) from e
        finally:
            resp.close()

    def _send(self, method: str, url: str, headers: dict[str, str] | None) -> httpx.Response:
        """One request, retried by the policy (module :mod:`treeboot.locate._retry`)."""
        attempt, reconnected = 0, False
        stale: httpx.Client | None = None
        while True:
            attempt += 1
            try:
                resp = self._send_once(method, url, headers, stale)
            except _ResetBeforeAnswer as e:
                if reconnected:
                    msg = f"{method} {redact(url)} failed: {e}"
                    raise LocationError(msg, hint=_NET_HINT) from e
                reconnected, stale = True, e.client  # once more, on a new connection
                notice(f"{method} {redact(url)}: connection closed without an answer; retrying")
                continue
            if resp.status_code not in RETRY_STATUSES:
                return resp
            retry_after = resp.headers.get("retry-after")
            what = f"{method} {redact(url)} answered HTTP {resp.status_code}"
            _finish(resp)
            resp.close()
            remaining = None if self._deadline is None else self._deadline - time.monotonic()
            try:
                delay = self.retry.delay(attempt, retry_after, remaining)
            except RetryRefused as e:
                raise LocationError(
                    f"{what} {resp.reason_phrase}: {e.reason}",
                    hint="the server is busy or failing: retry later or use another mirror",
                ) from e
            notice(f"{what}; retrying in {delay:.1f} s (attempt {attempt + 1} of"
                   f" {self.retry.attempts})")  # fmt: skip
            self._pause(delay)

    def _send_once(
        self, method: str, url: str, headers: dict[str, str] | None, stale: httpx.Client | None
    ) -> httpx.Response:
        client = self._client(url, stale)
        try:
            return client.send(client.build_request(method, url, headers=headers), stream=True)
        except httpx.TimeoutException as e:
            raise StallError(
                f"{method} {redact(url)}: timed out after {self.timeout:g} s", hint=_NET_HINT
            ) from e
        except _RESETS as e:
            raise _ResetBeforeAnswer(str(e) or type(e).__name__, client) from e
        except httpx.HTTPError as e:
            raise LocationError(f"{method} {redact(url)} failed: {e}", hint=_NET_HINT) from e

    def _status_error(self, resp: httpx.Response) -> LocationError:
        return LocationError(
            f"{resp.request.method} {redact(str(resp.url))} answered HTTP {resp.status_code}"
            f" {resp.reason_phrase}",
            hint="check the URL" if resp.status_code < 500 else "the server failed; retry later",
        )

    # -- the TreeLocation primitives
    def _read(self, rel: str, max_size: int) -> bytes | None:
        with self._open("GET", rel) as resp:
            if resp.status_code in ABSENT:
                return None
            if resp.status_code != 200:
                raise self._status_error(resp)
            body = self._body(resp, rel, max_size)
            self._remember_validator(rel, _remote_stat(resp, None).validator)
            return body

    def _body(self, resp: httpx.Response, rel: str, max_size: int) -> bytes:
        length = _int(resp.headers.get("content-length"))
        if length is not None and length > max_size:
            raise too_big(self.where(rel), max_size, length)
        body = bytearray()
        guard = StallGuard(self.where(rel), self.timeout)
        for chunk in resp.iter_bytes():
            self._count(len(chunk))
            guard(len(chunk))
            body += chunk
            if len(body) > max_size:
                raise too_big(self.where(rel), max_size)
        return bytes(body)

    def _revalidate(self, rel: str, validator: str | None, max_size: int) -> Revalidation:
        # Only a strong ETag: If-Modified-Since would call a file replaced by an *older* one
        # (a mirror rolled back) unchanged, and dates have a one-second granularity.
        etag = validator if validator and validator.startswith('"') else None
        with self._open("GET", rel, {"If-None-Match": etag} if etag else None) as resp:
            if resp.status_code == 304 and etag:
                return Revalidation(True, None, etag)
            if resp.status_code in ABSENT:
                return Revalidation(False, None)
            if resp.status_code != 200:
                raise self._status_error(resp)
            body = self._body(resp, rel, max_size)
            return Revalidation(False, body, _remote_stat(resp, None).validator)

    def _stat(self, rel: str) -> RemoteStat | None:
        with self._open("HEAD", rel) as resp:
            if resp.status_code in ABSENT:
                return None
            if resp.status_code == 405:  # no HEAD: ask for one byte instead
                return self._stat_by_range(rel)
            if resp.status_code != 200:
                raise self._status_error(resp)
            return _remote_stat(resp, _int(resp.headers.get("content-length")))

    def _stat_by_range(self, rel: str) -> RemoteStat | None:
        with self._open("GET", rel, {"Range": "bytes=0-0"}) as resp:
            if resp.status_code in ABSENT:
                return None
            if resp.status_code == 206:
                return _remote_stat(resp, _content_range(resp)[2])
            if resp.status_code == 200:
                return _remote_stat(resp, _int(resp.headers.get("content-length")))
            raise self._status_error(resp)

    def _read_range(self, rel: str, offset: int, length: int) -> bytes:
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        with self._open("GET", rel, headers) as resp:
            if resp.status_code == 416:
                return b""
            if resp.status_code == 200:
                raise LocationError(
                    f"{self.where(rel)}: the server ignored the Range request (HTTP 200, not 206)",
                    hint="use a server with byte-range support, or download the file first",
                )
            if resp.status_code != 206:
                raise self._status_error(resp)
            if _content_range(resp)[0] != offset:
                raise LocationError(f"{self.where(rel)}: the server sent the wrong byte range")
            out = bytearray()
            guard = StallGuard(self.where(rel), self.timeout)
            for chunk in self._chunks(resp, guard):
                out += chunk
                if len(out) > length:  # more than asked: stop (costs the connection)
                    break
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
        headers = {}
        if offset and if_range:
            headers = {"Range": f"bytes={offset}-", "If-Range": if_range}
        with self._open("GET", rel, headers) as resp:
            if resp.status_code == 416 and offset:  # the partial is as long as the file
                resp.close()
                return self._download(rel, fileobj, 0, progress, None, on_start)
            if resp.status_code == 206:
                placed = _placement(resp, offset, if_range)
                if placed is None:  # not what was asked: start over with a plain GET
                    if not offset:
                        raise LocationError(
                            f"{self.where(rel)}: HTTP 206 with {_describe_range(resp)} to a"
                            " request for the whole file",
                            hint="the server is broken: retry later or use another mirror",
                        )
                    resp.close()
                    _log_restart(self.where(rel), offset, _describe_range(resp))
                    return self._download(rel, fileobj, 0, progress, None, on_start)
                start, size = placed
            elif resp.status_code == 200:
                start, size = 0, _int(resp.headers.get("content-length"))
            elif resp.status_code in ABSENT:
                raise LocationError(
                    f"{self.where(rel)} does not exist (HTTP {resp.status_code})",
                    hint="check the tree, or pass --kernel/--initrd paths that exist",
                )
            else:
                raise self._status_error(resp)
            begin_download(fileobj, _remote_stat(resp, size), start, on_start)
            return self._stream(resp, fileobj, progress, StallGuard(self.where(rel), self.timeout))

    def _stream(
        self, resp: httpx.Response, fileobj: BinaryIO, progress: Progress | None, guard: StallGuard
    ) -> int:
        return write_chunks(self._chunks(resp, guard), fileobj, progress)

    def _chunks(self, resp: httpx.Response, guard: StallGuard) -> Iterator[bytes]:
        """The raw body, counted and checked against ``guard`` chunk by chunk."""
        for chunk in resp.iter_raw():
            self._count(len(chunk))
            guard(len(chunk))
            yield chunk


class _ResetBeforeAnswer(Exception):
    """The connection was closed or reset before a status line arrived (on ``client``)."""

    def __init__(self, message: str, client: httpx.Client) -> None:
        super().__init__(message)
        self.client = client


def _finish(resp: httpx.Response) -> None:
    """Read what is left of a small body, so that the connection goes back to the pool."""
    if resp.is_stream_consumed or resp.is_closed:
        return
    length = _int(resp.headers.get("content-length"))
    if resp.request.method == "HEAD" or (length is not None and length <= _DRAIN_LIMIT):
        for _ in resp.iter_raw():
            pass


def _check_redirect(source: str, target: str) -> None:
    old, new = urlsplit(source).scheme.lower(), urlsplit(target).scheme.lower()
    if new == old or (old, new) == ("http", "https"):
        return
    raise LocationError(
        f"refusing redirect from {redact(source)} to {redact(target)}: "
        f"{old}:// must not redirect to {new}://",
        hint="a redirect may upgrade http to https, never downgrade or leave HTTP; "
        "pass the final URL yourself if you trust it",
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range(resp: httpx.Response) -> tuple[int, int, int | None]:
    m = _CONTENT_RANGE.fullmatch(resp.headers.get("content-range", "").strip())
    if m is None:
        raise LocationError(
            f"{redact(str(resp.url))}: bad Content-Range {resp.headers.get('content-range')!r}"
        )
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def _remote_stat(resp: httpx.Response, size: int | None) -> RemoteStat:
    """Prefer a strong ETag as validator (If-Range needs one), else Last-Modified."""
    encoding = resp.headers.get("content-encoding", "").strip().lower()
    coded = encoding if encoding not in ("", "identity") else None
    etag = resp.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return RemoteStat(size, etag, coded)
    return RemoteStat(size, resp.headers.get("last-modified"), coded)


def _placement(
    resp: httpx.Response, offset: int, if_range: str | None
) -> tuple[int, int | None] | None:
    """Where a 206 answer to ``Range: bytes=offset-`` goes: (first byte, total size).

    Trusted only as far as the headers are consistent: the range must start at or before
    ``offset`` (the partial file holds every byte before it), run to the end of the file,
    and come from the entity ``if_range`` names. Anything else: None (restart)."""
    try:
        first, last, total = _content_range(resp)
    except LocationError:
        return None
    etag = resp.headers.get("etag")
    if etag and if_range and if_range.startswith('"') and etag != if_range:
        return None  # another version of the file, whatever If-Range did
    if first > offset or total is None or last != total - 1:
        return None
    return first, total


def _describe_range(resp: httpx.Response) -> str:
    return f"Content-Range {resp.headers.get('content-range')!r}"


def _log_restart(where: str, offset: int, got: str) -> None:
    notice(f"{where}: asked to resume at byte {offset}, got {got}; downloading it again")
