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
    loc.bytes_transferred        -> int, every byte read from the network/disk so far
    loc.close()  (also a context manager)

``path`` is always relative to the location and checked by :func:`safe_relpath`.
"""

from __future__ import annotations

# IMPLEMENTATION: see the helper's work below this line.
