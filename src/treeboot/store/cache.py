"""Content-addressed download cache.

Layout, under ``$TREEBOOT_CACHE`` or the platform's user cache dir (``~/.cache/treeboot``)::

    blobs/sha256/<hex>   file contents named by their sha256, read-only; mtime = last use
    index/<key>.json     one per source (location URL + path): size, validator, sha256, verified
    tmp/<key>.part       a download in progress, resumable; tmp/<key>.json says from what
    locks/<key>.lock     flock: one process downloads a given source at a time
    locks/blob-<hex>.lock  flock, shared: a running fetch holds this blob (found or committed)
                         until it returns; prune removes a blob only with this lock exclusive
    ident/<key>.json     identifications and what they came from (identify/identcache.py)
    cache.lock           flock: shared while a fetch adds or links blobs, exclusive for prune

A blob only ever appears under its final name by ``os.replace`` of a complete, fsynced file
whose sha256 was computed while it was written, so a reader never sees a partial blob. A fetch
holds every blob it returns (:meth:`Cache.holding`) until it returns, so ``prune --all`` running
alongside skips them (reported as busy); and prune can keep blobs used within a grace period
(``grace=``; the CLI keeps those of the last minute), because a fetch that has just returned a
path into the cache may not have opened it yet. Whether
a blob was *verified* (matched a checksum the publisher or the user gave) is recorded per source
in the index, never implied by the blob's presence.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from treeboot.errors import FetchError
from treeboot.model import redact_url


def default_root() -> Path:
    env = os.environ.get("TREEBOOT_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("treeboot"))


def source_key(location: str, path: str) -> str:
    """The file-name-safe key of one source file (location URL + relative path); a password
    in the URL plays no part (it is never stored, see :class:`IndexEntry`)."""
    return hashlib.sha256(f"{redact_url(location)}\n{path}".encode()).hexdigest()[:40]


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's contents, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class IndexEntry:
    """What a source URL held when it was last fetched."""

    location: str
    path: str
    size: int
    validator: str | None  # ETag / Last-Modified / mtime at fetch time (None: cannot revalidate)
    sha256: str
    verified: str  # treeboot.model.Verified value
    fetched: float = field(default_factory=time.time)

    def __post_init__(self) -> None:  # a password in the URL is never stored nor listed
        object.__setattr__(self, "location", redact_url(self.location))

    @property
    def key(self) -> str:
        return source_key(self.location, self.path)


@dataclass(frozen=True)
class PartialMeta:
    """Sidecar of a ``.part`` file: the source and the validator its bytes came from."""

    location: str
    path: str
    validator: str | None
    size: int | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "location", redact_url(self.location))


@dataclass
class PruneReport:
    removed: list[str] = field(default_factory=list)  # paths relative to the cache root
    freed_bytes: int = 0
    busy: list[str] = field(default_factory=list)  # in use by a running fetch: left alone
    recent: list[str] = field(default_factory=list)  # blobs used within the grace period: kept

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_root()).expanduser()
        self.blobs = self.root / "blobs" / "sha256"
        self.index = self.root / "index"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.ident = self.root / "ident"

    def ensure(self) -> None:
        try:
            for d in (self.blobs, self.index, self.tmp, self.locks):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FetchError(
                f"cannot create the cache directory {self.root}: {e.strerror}",
                hint="set TREEBOOT_CACHE to a writable directory",
            ) from e

    # -- locks
    @contextlib.contextmanager
    def lock(
        self, key: str, *, blocking: bool = True, on_wait: Callable[[], object] | None = None
    ) -> Iterator[bool]:
        """Exclusive lock of one source; yields False (without waiting) if busy and not blocking.

        ``on_wait`` is called once if another process holds the lock and we have to wait.
        """
        path = self.locks / f"{key}.lock"
        fd = _flock(path, fcntl.LOCK_EX, False)
        if fd is None and blocking:
            if on_wait:
                on_wait()
            fd = _flock(path, fcntl.LOCK_EX, True)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Held while blobs are added or linked out, so that prune cannot pull them away."""
        fd = _flock(self.root / "cache.lock", fcntl.LOCK_SH, True)
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)

    def holding(self) -> BlobHolds:
        """Hold blobs for the life of the returned context (see :class:`BlobHolds`)."""
        return BlobHolds(self)

    def _hold_path(self, sha256: str) -> Path:
        return self.locks / f"blob-{sha256}.lock"

    # -- blobs and index
    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256

    def find_blob(self, sha256: str) -> Path | None:
        """The blob with this sha256, if cached; marks it used (for prune --older-than).

        Blobs are hashed as they are written and are read-only, so a hit is not re-hashed.
        """
        path = self.blob_path(sha256)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        except OSError:  # e.g. a cache shared read-only: the blob is still good
            return path if path.is_file() else None
        return path

    def lookup(self, location: str, path: str) -> IndexEntry | None:
        try:
            data = json.loads((self.index / f"{source_key(location, path)}.json").read_text())
            entry = IndexEntry(**data)
        except (OSError, ValueError, TypeError):
            return None
        return entry if entry.location == redact_url(location) and entry.path == path else None

    def record(self, entry: IndexEntry) -> None:
        self._write_json(self.index / f"{entry.key}.json", asdict(entry))

    def entries(self) -> list[IndexEntry]:
        out = []
        for p in sorted(self.index.glob("*.json")) if self.index.is_dir() else []:
            try:
                out.append(IndexEntry(**json.loads(p.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return out

    def commit(self, part: Path, sha256: str) -> Path:
        """Move a complete, fsynced ``.part`` into place as the blob ``sha256``."""
        blob = self.blob_path(sha256)
        os.chmod(part, 0o444)
        os.replace(part, blob)
        _fsync_dir(self.blobs)
        return blob

    # -- partial downloads
    def partial(self, key: str) -> tuple[Path, Path]:
        return self.tmp / f"{key}.part", self.tmp / f"{key}.json"

    def load_partial(self, key: str, location: str, path: str) -> PartialMeta | None:
        part, meta = self.partial(key)
        try:
            m = PartialMeta(**json.loads(meta.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if (m.location, m.path) != (redact_url(location), path) or not part.exists():
            return None
        return m

    def save_partial(self, key: str, meta: PartialMeta) -> None:
        self._write_json(self.partial(key)[1], asdict(meta))

    def discard_partial(self, key: str) -> None:
        for p in self.partial(key):
            p.unlink(missing_ok=True)

    def _write_json(self, path: Path, obj: Any) -> None:
        tmp = self.tmp / f".{path.name}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(obj, indent=1))
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise cache_write_error(e, self.root) from e

    # -- listing and pruning
    def usage(self) -> int:
        return sum(p.stat().st_size for p in self.blobs.glob("*")) if self.blobs.is_dir() else 0

    def prune(
        self, *, everything: bool = False, older_than_days: float | None = None, grace: float = 0
    ) -> PruneReport:
        """Remove orphans (blobs nobody indexes, index entries without blob, stray temps) and
        also every blob, partial download and identification (``everything``) or those unused
        for ``older_than_days``. Waits for fetches that are adding blobs; blobs a running
        fetch holds and downloads in progress are left alone (``busy``), and so are blobs
        used less than ``grace`` seconds ago (``recent``).
        """
        report = PruneReport()
        if not self.root.is_dir():
            return report
        self.ensure()
        now = time.time()
        cutoff = now - older_than_days * 86400 if older_than_days is not None else None
        fd = _flock(self.root / "cache.lock", fcntl.LOCK_EX, True)
        try:
            self._prune_blobs(report, everything, cutoff, now - grace)
            self._prune_index(report)
            self._prune_tmp(report, everything, cutoff)
            self._prune_ident(report, everything, cutoff)
            self._prune_derived(report, everything, cutoff)
        finally:
            if fd is not None:
                os.close(fd)
        return report

    def _remove(self, path: Path, report: PruneReport) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        report.removed.append(str(path.relative_to(self.root)))
        report.freed_bytes += size

    def _prune_blobs(
        self, report: PruneReport, everything: bool, cutoff: float | None, recent: float
    ) -> None:
        referenced = {e.sha256 for e in self.entries()}
        for blob in sorted(self.blobs.iterdir()):
            try:
                used = blob.stat().st_mtime
            except FileNotFoundError:
                continue
            old = cutoff is not None and used < cutoff
            if not (everything or old or blob.name not in referenced):
                continue
            rel = str(blob.relative_to(self.root))
            if used >= recent:
                report.recent.append(rel)
                continue
            hold = self._hold_path(blob.name)
            fd = _flock(hold, fcntl.LOCK_EX, False)
            if fd is None:  # a running fetch holds it
                report.busy.append(rel)
                continue
            try:
                self._remove(blob, report)
                hold.unlink(missing_ok=True)  # a holder that opened it meanwhile re-opens
            finally:
                os.close(fd)

    def _prune_ident(self, report: PruneReport, everything: bool, cutoff: float | None) -> None:
        for p in sorted(self.ident.glob("*")) if self.ident.is_dir() else []:
            try:
                stale = cutoff is not None and p.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if everything or stale or p.suffix != ".json":
                self._remove(p, report)

    def _prune_derived(self, report: PruneReport, everything: bool, cutoff: float | None) -> None:
        """Derived forms (store/derived.py: derived/<kind>/<sha256>[.json]) go with ``--all``
        or when unused for ``older_than_days``; they can always be derived again."""
        for p in sorted((self.root / "derived").glob("*/*")):
            try:
                stale = cutoff is not None and p.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if (everything or stale) and p.suffix in ("", ".json"):
                self._remove(p, report)

    def _prune_index(self, report: PruneReport) -> None:
        for p in sorted(self.index.glob("*.json")):
            try:
                sha = json.loads(p.read_text()).get("sha256", "")
            except (OSError, ValueError, AttributeError):
                sha = ""
            if not sha or not self.blob_path(str(sha)).exists():
                self._remove(p, report)

    def _prune_tmp(self, report: PruneReport, everything: bool, cutoff: float | None) -> None:
        for part in sorted(self.tmp.glob("*.part")):
            key = part.name.removesuffix(".part")
            try:  # a fetch may commit (rename) or discard it under us
                stale = cutoff is not None and part.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if not (everything or stale):
                continue  # kept so that the next fetch resumes it
            with self.lock(key, blocking=False) as got:
                if not got:
                    report.busy.append(str(part.relative_to(self.root)))
                    continue
                for p in self.partial(key):
                    self._remove(p, report)
        for stray in sorted(self.tmp.iterdir()):
            if stray.suffix == ".json" and stray.with_suffix(".part").exists():
                continue
            try:
                young = time.time() - stray.stat().st_mtime < 3600
            except FileNotFoundError:
                continue  # renamed into place meanwhile
            if stray.name.startswith(".") and young:
                continue  # an index being written right now
            if stray.suffix != ".part":
                self._remove(stray, report)
        if everything:
            for lock in sorted(self.locks.glob("*.lock")):
                fd = _flock(lock, fcntl.LOCK_EX, False)
                if fd is not None:  # held by us: nobody else can be relying on it
                    lock.unlink(missing_ok=True)
                    os.close(fd)


class BlobHolds:
    """Shared flocks on ``locks/blob-<sha256>.lock``, one per blob held; prune takes that lock
    exclusively (without waiting) before it removes a blob, so a held blob stays.

    Take the hold *before* looking for the blob or committing it: then a prune either ran
    before (the blob is gone, and the caller downloads it) or skips it.
    """

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def hold(self, sha256: str) -> None:
        with self._lock:
            if sha256 in self._fds:
                return
        fd = _flock(self._cache._hold_path(sha256), fcntl.LOCK_SH, True)
        if fd is None:
            return
        with self._lock:
            if sha256 in self._fds:
                os.close(fd)
            else:
                self._fds[sha256] = fd

    def release(self) -> None:
        with self._lock:
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> BlobHolds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def cache_write_error(e: OSError, root: Path) -> FetchError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return FetchError(
            f"no space left in the cache at {root} ({e.strerror}); nothing partial was kept",
            hint="free some space (`treeboot cache prune --all`) or point TREEBOOT_CACHE "
            "to a larger filesystem",
        )
    return FetchError(
        f"cannot write to the cache at {root}: {e.strerror or e}",
        hint="check the permissions of the cache directory or set TREEBOOT_CACHE",
    )


def _flock(path: Path, mode: int, blocking: bool) -> int | None:
    """Open+flock ``path``; retry if it was unlinked and recreated meanwhile (prune)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise cache_write_error(e, path.parent) from e
        try:
            fcntl.flock(fd, mode | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
