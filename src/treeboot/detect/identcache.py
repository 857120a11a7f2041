"""Remember identifications; on the next run, revalidate them in one round instead of detecting.

    ident = identify_cached(loc, cache, arch=None, kernel=None, initrd=None, keyring=None)

An entry, ``<cache>/ident/<key>.json`` (key: location URL, ``arch``, ``kernel``/``initrd``
overrides, ``keyring``, ``$OSINFO_DB_PATH``), holds an Identification and what it was derived from:

- ``files``: every file the detection read that exists -- the tree's metadata (``.treeinfo``,
  ``MANIFEST``, ``SHA256SUMS``, ...) and the signed chain's ``InRelease``/``Release``/
  ``Release.gpg`` -- each with the sha256 of its content and its validator (a strong ETag)
  when the server sent one;
- ``local``: size and mtime of the host files detection depends on (treeboot's code and rule
  tables, osinfo-db, the archive keyrings and ``keyring``), so an upgrade re-detects;
- ``expires``: the earliest ``Valid-Until`` of a Release file, if any, and for a signed chain
  at most :data:`SIGNED_MAX_AGE` (a day) after it was checked: ``gpgv`` also judges the key
  (expired, revoked), which can change without any file changing.

A warm run re-reads all ``files`` in ONE concurrent round: a conditional GET that the server
answers 304 while the ETag matches, else the content compared by sha256 (local trees: read
and hashed, they are small). If nothing changed, the identification is reused
(``extra["identcache"] == "revalidated"``) and new validators are saved. If anything changed,
expired or failed, detection runs as usual and the entry is replaced.

Not revalidated: files detection looked for and did not find (a tree that later gains a
``.treeinfo`` beside its ``MANIFEST`` keeps its identification until the ``MANIFEST``
changes), and existence checks of candidate kernel paths. ISO images are not cached.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from treeboot.errors import TreebootError
from treeboot.locate.base import Location, TreeLocation
from treeboot.locate.open import open_location
from treeboot.model import Identification, Media, Verified, redact_url
from treeboot.store.cache import Cache

log = logging.getLogger("treeboot.detect.identcache")

FORMAT = 1
MAX_FILE = 32 * 1024 * 1024  # the largest file detection reads (a Release: signature.py)
SIGNED_MAX_AGE = 86400.0  # seconds a verified signature is trusted without running gpgv again
_WORKERS = 16
_RELEASES = ("InRelease", "Release")
_VALID_UNTIL = re.compile(rb"^Valid-Until:[ \t]*(.+?)[ \t]*\r?$", re.MULTILINE)


@dataclass(frozen=True)
class Evidence:
    """One file an identification was derived from."""

    url: str
    sha256: str
    validator: str | None = None


@dataclass
class Entry:
    identification: Identification
    files: list[Evidence]
    local: dict[str, str | None] = field(default_factory=dict)
    expires: float | None = None


def identify_cached(
    loc: Location,
    cache: Cache,
    *,
    arch: str | None = None,
    kernel: str | None = None,
    initrd: str | None = None,
    keyring: Path | None = None,
) -> Identification:
    """:func:`~treeboot.detect.identify.identify_location`, reusing the last result while its
    files are unchanged (see the module docstring)."""
    if not isinstance(loc, TreeLocation):
        return _detect(loc, arch, kernel, initrd, keyring, None)
    path = cache.ident / f"{_key(redact_url(loc.url), arch, kernel, initrd, keyring)}.json"
    entry = load_entry(path)
    if entry is not None and entry.identification.location == redact_url(loc.url):
        entry = _with_credentials(entry, loc.url)
        fresh = revalidate(loc, entry)
        if fresh is not None:
            if fresh != entry:
                save_entry(path, fresh)
            else:
                with suppress(OSError):
                    os.utime(path)  # last use, for prune --older-than
            extra = {**fresh.identification.extra, "identcache": "revalidated", "rounds": 1}
            return _with_extra(fresh.identification, extra)
    seen: dict[str, bytes | None] = {}
    ident = _detect(loc, arch, kernel, initrd, keyring, seen)
    new = make_entry(loc, ident, seen, keyring)
    if new is not None:
        save_entry(path, new)
    else:
        path.unlink(missing_ok=True)
    return ident


def _detect(
    loc: Location,
    arch: str | None,
    kernel: str | None,
    initrd: str | None,
    keyring: Path | None,
    seen: dict[str, bytes | None] | None,
) -> Identification:
    from treeboot.detect.identify import identify_location

    return identify_location(
        loc, arch=arch, kernel=kernel, initrd=initrd, keyring=keyring, seen=seen
    )


def _key(
    url: str, arch: str | None, kernel: str | None, initrd: str | None, keyring: Path | None
) -> str:
    ring = str(keyring.resolve()) if keyring else None
    db = os.environ.get("OSINFO_DB_PATH")  # the osinfo-db detection reads
    blob = json.dumps([FORMAT, url, arch, kernel, initrd, ring, db])
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


def _with_credentials(entry: Entry, url: str) -> Entry:
    """A loaded entry (its URLs stored without the password) with ``url``'s credentials back
    in every URL on the same server, so that revalidation can authenticate."""
    from dataclasses import replace

    masked, real = urlsplit(redact_url(url)).netloc, urlsplit(url).netloc

    def restore(u: str) -> str:
        parts = urlsplit(u)
        return parts._replace(netloc=real).geturl() if parts.netloc == masked else u

    files = [replace(f, url=restore(f.url)) for f in entry.files]
    return replace(entry, identification=replace(entry.identification, location=url), files=files)


def _with_extra(ident: Identification, extra: dict[str, Any]) -> Identification:
    from dataclasses import replace

    return replace(ident, extra=extra)


# --- building and storing entries -----------------------------------------------------------


def make_entry(
    loc: TreeLocation,
    ident: Identification,
    seen: Mapping[str, bytes | None],
    keyring: Path | None = None,
) -> Entry | None:
    """The entry for ``ident`` from the files detection read, or None if it cannot be cached
    safely (nothing to revalidate, a Release read out of sight, not JSON-stable)."""
    files = [
        Evidence(url, hashlib.sha256(data).hexdigest(), _validator(loc, url))
        for url, data in seen.items()
        if data is not None and _reachable(loc.url, url)
    ]
    if ident.media != Media.TREE or not files:
        return None
    signature = ident.extra.get("signature")
    release = signature.get("release") if isinstance(signature, dict) else None
    if release and release not in {f.url for f in files}:
        return None  # the chain read its Release where we could not see it
    until = [_valid_until(data) for url, data in seen.items() if _is_release(url) and data]
    known = [t for t in until if t is not None]
    if ident.verified == Verified.SIGNED_CHAIN:  # keys expire too: re-run gpgv now and then
        known.append(time.time() + SIGNED_MAX_AGE)
    stable = json.loads(json.dumps(ident.to_json()))
    if stable != ident.to_json():
        return None
    return Entry(ident, files, local_state(keyring), min(known) if known else None)


def _validator(loc: TreeLocation, url: str) -> str | None:
    return loc.validator(url[len(loc.url) :]) if url.startswith(loc.url) else None


def _reachable(tree_url: str, url: str) -> bool:
    """A file in the tree, or in a directory above it (a suite's Release)."""
    base = url.rsplit("/", 1)[0] + "/"
    return url.startswith(tree_url) or tree_url.startswith(base)


def _is_release(url: str) -> bool:
    return url.rsplit("/", 1)[-1] in _RELEASES


def _valid_until(data: bytes) -> float | None:
    """``Valid-Until`` of a Release (epoch s); None if it has none; 0 if unreadable."""
    m = _VALID_UNTIL.search(data)
    if m is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(m.group(1).decode("ascii")).timestamp()
    except (TypeError, ValueError, UnicodeDecodeError):
        return 0.0


def load_entry(path: Path) -> Entry | None:
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            return None
        d = raw["identification"]
        ident = Identification(
            **{**d, "media": Media(d["media"]), "verified": Verified(d["verified"])}
        )
        files = [Evidence(**f) for f in raw["files"]]
        return Entry(ident, files, dict(raw["local"]), raw["expires"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def save_entry(path: Path, entry: Entry) -> None:
    """Write atomically; a cache we cannot write only costs the next run a detection."""
    raw = {
        "format": FORMAT,
        "identification": entry.identification.to_json(),
        "files": [{**vars(f), "url": redact_url(f.url)} for f in entry.files],
        "local": entry.local,
        "expires": entry.expires,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(raw, indent=1))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log.info("cannot save the identification to %s: %s", path, e)


# --- host state -----------------------------------------------------------------------------


def local_state(keyring: Path | None = None) -> dict[str, str | None]:
    """Size and mtime of the host files a detection depends on (None: absent)."""
    return {str(p): _stat(p) for p in _local_paths(keyring)}


def _local_paths(keyring: Path | None) -> Iterator[Path]:
    from treeboot.detect.osinfo import db_paths
    from treeboot.trust.signature import ARCHIVE_KEYRINGS

    package = Path(__file__).resolve().parents[1]
    stages = [package / s for s in ("detect", "trust", "locate")]  # the code that identifies
    yield from [*stages, package / "rules"]  # their mtimes change when a file is added
    yield from sorted([*(p for s in stages for p in s.glob("*.py")), *package.glob("rules/*.toml")])
    for db in db_paths():
        os_dir = Path(db, "os")
        yield from [Path(db), os_dir, Path(db, "VERSION")]
        yield from sorted(p for p in os_dir.iterdir() if p.is_dir())
    for ring in sorted({p for paths in ARCHIVE_KEYRINGS.values() for p in paths}):
        yield Path(ring)
    if keyring:
        yield keyring.resolve()


def _stat(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_size}-{st.st_mtime_ns}"


# --- revalidation ---------------------------------------------------------------------------


def revalidate(loc: TreeLocation, entry: Entry, now: float | None = None) -> Entry | None:
    """``entry`` with fresh validators if nothing it depends on changed, else None.

    The files are re-read concurrently (one round); any error counts as a change.
    """
    if entry.expires is not None and entry.expires <= (now or time.time()):
        return None
    if any(_stat(Path(p)) != state for p, state in entry.local.items()):
        return None
    with ExitStack() as stack:
        readers = _readers(loc, entry.files, stack)
        if readers is None:
            return None
        workers = min(_WORKERS, len(entry.files))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda f: _check(readers[f.url], f), entry.files))
    if any(r is None for r in results):
        return None
    files = [r for r in results if r is not None]
    return Entry(entry.identification, files, entry.local, entry.expires)


def _readers(
    loc: TreeLocation, files: list[Evidence], stack: ExitStack
) -> dict[str, tuple[TreeLocation, str]] | None:
    """File URL -> (location, path in it); directories above the tree are opened once."""
    opened: dict[str, TreeLocation] = {}
    out: dict[str, tuple[TreeLocation, str]] = {}
    for f in files:
        if f.url.startswith(loc.url):
            out[f.url] = (loc, f.url[len(loc.url) :])
            continue
        base = f.url.rsplit("/", 1)[0] + "/"
        if not _reachable(loc.url, f.url):
            return None
        if base not in opened:
            try:
                other = open_location(
                    base,
                    insecure=bool(getattr(loc, "insecure", False)),
                    timeout=float(getattr(loc, "timeout", 30.0)),
                )
            except TreebootError:
                return None
            stack.enter_context(other)
            if not isinstance(other, TreeLocation):
                return None
            opened[base] = other
        out[f.url] = (opened[base], f.url[len(base) :])
    return out


def _check(reader: tuple[TreeLocation, str], f: Evidence) -> Evidence | None:
    tree, rel = reader
    try:
        r = tree.revalidate(rel, f.validator, max_size=MAX_FILE)
    except TreebootError as e:
        log.info("revalidating %s: %s", f.url, e)
        return None
    if r.unchanged:
        return f
    if r.data is None or hashlib.sha256(r.data).hexdigest() != f.sha256:
        log.info("%s changed: identifying again", f.url)
        return None
    return Evidence(f.url, f.sha256, r.validator)
