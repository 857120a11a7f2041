"""An unrequested ``Content-Encoding: gzip``: which reading of the bytes is the file?

treeboot asks for ``Accept-Encoding: identity`` and stores the bytes as sent. Some servers
compress anyway (a proxy, a CDN); others merely label a ``.gz`` file gzip (Apache's
``AddEncoding``), and there the raw bytes are the file. The published checksum decides: the
raw bytes are tried first (by the caller), and the decoded entity is taken only when it has the
expected sha256. Decoding stops at ``limit`` bytes, so a gzip bomb costs nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

GZIP_CODINGS = frozenset({"gzip", "x-gzip"})
_CHUNK = 1 << 20


def gunzip_matching(part: Path, expected: str, limit: int) -> tuple[Path, int] | None:
    """The decoded copy of ``part`` (beside it, ``.<key>.gunzip.tmp``: a name ``cache prune``
    leaves alone while it is young) and its size, if it is gzip data that decodes to at most
    ``limit`` bytes with sha256 ``expected``; else None (and no copy is left behind)."""
    out = part.with_name(f".{part.stem}.gunzip.tmp")
    sha = hashlib.sha256()
    size = 0
    try:
        with gzip.open(part, "rb") as src, open(out, "wb") as dst:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ValueError("decodes to more than the size limit")
                sha.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except (OSError, EOFError, ValueError, zlib.error):  # not gzip, cut short, a bomb
        out.unlink(missing_ok=True)
        return None
    if sha.hexdigest() != expected:
        out.unlink(missing_ok=True)
        return None
    return out, size
