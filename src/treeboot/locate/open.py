"""Open a location from what the user typed: a directory, a URL or an ISO image.

The one place that knows which reader serves which kind of location; the readers themselves
(:mod:`~treeboot.locate.base`, ``http``, ``ftp``, ``iso``) never import it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from treeboot.errors import LocationError, UsageError
from treeboot.locate.base import DirLocation, Location, redact


def _local_target(spec: str) -> Path | None:
    """The local path ``spec`` names (a plain path or ``file://`` URL), else None."""
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise LocationError(
                f"{spec}: file:// URLs on another host ({parts.netloc}) are not supported",
                hint="mount the share and pass the local path",
            )
        return Path(unquote(parts.path))
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return Path(spec).expanduser()
    return None


def check_url(spec: str) -> None:
    """UsageError (one line) for a URL that cannot be parsed: ``http://[::1``, a bad port."""
    try:
        parts = urlsplit(spec)
        _ = parts.port  # "host:abc" fails only here
    except ValueError as e:
        raise UsageError(
            f"malformed URL {redact(spec)!r}: {e}",
            hint="check the brackets around an IPv6 address and the port number",
        ) from e


def open_location(
    spec: str, *, insecure: bool = False, timeout: float = 30.0, max_time: float | None = None
) -> Location:
    """Open a tree (directory, ``file://``, ``http(s)://``, ``ftp://``) or an ISO image.

    An ISO is a local regular file, a ``file://`` URL to one, or an http(s) URL whose path ends
    in ``.iso``. ``timeout`` bounds every network operation; ``insecure`` skips TLS
    certificate checks; ``max_time`` bounds the retries of an HTTP tree (see HttpLocation).
    """
    check_url(spec)
    local = _local_target(spec)
    if local is not None:
        if local.is_dir():
            return DirLocation(local)
        if local.is_file():
            return _open_iso(spec, insecure=insecure, timeout=timeout)
        what = "does not exist" if not local.exists() else "is neither a directory nor a file"
        raise LocationError(
            f"{local} {what}",
            hint="pass an install tree (directory or URL) or an ISO image",
        )
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if parts.path.lower().endswith(".iso"):
            return _open_iso(spec, insecure=insecure, timeout=timeout)
        from treeboot.locate.http import HttpLocation

        return HttpLocation(spec, insecure=insecure, timeout=timeout, max_time=max_time)
    if scheme == "ftp":
        from treeboot.locate.ftp import FtpLocation

        return FtpLocation(spec, timeout=timeout)
    raise LocationError(
        f"unsupported location {redact(spec)!r} (scheme {scheme!r})",
        hint="use a directory, an ISO file, or a file://, http://, https:// or ftp:// URL",
    )


def _open_iso(spec: str, *, insecure: bool, timeout: float) -> Location:
    try:
        from treeboot.locate.iso import open_iso
    except ModuleNotFoundError as e:
        if e.name != "treeboot.locate.iso":
            raise
        raise LocationError(
            f"{redact(spec)} looks like an ISO image, but ISO support is not available",
            hint="pass an install tree (a directory or URL) instead",
        ) from e
    loc: Location = open_iso(spec, insecure=insecure, timeout=timeout)
    return loc
