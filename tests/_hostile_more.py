"""More misbehaviours for :mod:`_hostile_server` (issue 10): servers that fail for a moment and
then answer, stale keep-alive connections, inconsistent resume answers, content codings and
a stall on one metadata file. Importing this module registers them in ``MODES``."""

from __future__ import annotations

import email.utils
import socket
import time
from pathlib import Path

from _hostile_server import (
    MODES,
    HostileHandler,
    Mode,
    _data,
    _first_truncated_then,
    etag,
    flaky_503,
    serve_file,
    stall_before_headers,
)


def flaky_429_date(h: HostileHandler, file: Path, rel: str) -> None:
    """429 with an HTTP-date Retry-After 2 s ahead on the first request, then a correct answer."""
    if h.nth == 1:
        when = email.utils.formatdate(time.time() + 2, usegmt=True)
        h.plain(429, b"slow down\n", {"Retry-After": when})
    else:
        serve_file(h, file, rel)


def retry_after_a_day(h: HostileHandler, file: Path, rel: str) -> None:
    h.plain(503, b"maintenance\n", {"Retry-After": "86400"})


def stale_keepalive(h: HostileHandler, file: Path, rel: str) -> None:
    """Answers the first request of each connection and keeps it alive; a second request on
    the same connection is dropped without an answer (a load balancer's idle timeout)."""
    served = getattr(h, "served_here", 0)
    h.served_here = served + 1  # type: ignore[attr-defined]
    if served:
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)
        return
    serve_file(h, file, rel)


def range_full_206(h: HostileHandler, file: Path, rel: str) -> None:
    """A Range request gets ``206`` with ``Content-Range: bytes 0-(N-1)/N`` and the whole file."""
    if (data := _data(h, file)) is None:
        return
    if not h.headers.get("Range"):
        h.plain(200, data, {"ETag": etag(data)})
        return
    whole = f"bytes 0-{len(data) - 1}/{len(data)}"
    h.plain(206, data, {"Content-Range": whole, "ETag": etag(data)})


def range_corrupt(h: HostileHandler, file: Path, rel: str) -> None:
    """A resume gets consistent headers and the wrong bytes: the resumed file fails its
    checksum (and must then be discarded, so that the next run starts fresh)."""
    if (data := _data(h, file)) is None:
        return
    rng = h.headers.get("Range", "")
    if not rng.startswith("bytes="):
        serve_file(h, file, rel)
        return
    start = int(rng[6:].split("-")[0])
    headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}", "ETag": etag(data)}
    h.plain(206, bytes(len(data) - start), headers)  # zeros where the file has data


def gzip_label(h: HostileHandler, file: Path, rel: str) -> None:
    """The file's own bytes (a .gz) labelled ``Content-Encoding: gzip`` (Apache AddEncoding)."""
    if (data := _data(h, file)) is None:
        return
    h.plain(200, data, {"Content-Encoding": "gzip", "ETag": etag(data)})


MODES.update({
    "flaky-429-date": Mode(flaky_429_date, "artifacts"),
    "flaky-503-metadata": Mode(flaky_503, "metadata"),
    "flaky-503-any": Mode(flaky_503, "all"),
    "retry-after-a-day": Mode(retry_after_a_day, "artifacts"),
    "stale-keepalive": Mode(stale_keepalive, "all"),
    "range-full-206": Mode(_first_truncated_then(range_full_206), "artifacts"),
    "range-corrupt": Mode(_first_truncated_then(range_corrupt), "artifacts"),
    "gzip-label": Mode(gzip_label, "artifacts"),
    "stall-treeinfo": Mode(stall_before_headers, "treeinfo"),
})  # fmt: skip
