"""Fetch a tree's kernel and initrd: in parallel, resumable, verified, into the cache.

    result = fetch("http://mirror/debian/dists/bookworm/main/installer-amd64/")
    result.kernel.path, result.initrd.path, result.verified

Each file is checked against the checksum the tree publishes (``Identification.checksums``,
from ``.treeinfo [checksums]`` or ``SHA256SUMS``) or one the user pins. With a checksum, a
blob of that sha256 already in the cache is a hit with no request at all; without one, the
cache index (source URL -> size, ETag/Last-Modified, sha256) is revalidated with one HEAD.
A location given as a string is identified through :mod:`treeboot.detect.identcache`: a warm run
revalidates the files the last identification came from in one round, instead of detecting.

Bounds on a download (a hostile or broken server must end in a clear error, soon):

- size: a body longer than the size the server announced (Content-Length, the total of a
  Content-Range, FTP ``SIZE``, a local file's size) stops at the first byte too many; an
  announced size above ``max_size`` (2 GiB) is refused before the body; a body with no
  announced length is cut at :data:`MAX_UNANNOUNCED_SIZE` (256 MiB).
- speed: every ``timeout`` seconds at least 1 KiB must arrive (the locations' StallGuard,
  curl's ``--speed-limit``), and a read waits at most ``timeout``.
- time: a body with no announced length must also end within ``max_time`` seconds, by default
  :data:`UNANNOUNCED_TIMEOUTS` x ``timeout`` (150 s with the default 30 s): static mirrors
  always announce the length (we ask for ``identity`` encoding), so an unannounced body that
  keeps coming is a proxy gone wrong or someone feeding us forever, and neither the size cap
  (minutes at a few MB/s) nor the stall guard (it is fast) ends it soon. ``max_time`` (the
  CLI's ``--max-time``, like curl's) given explicitly bounds every transfer, announced or not.
  A deadline is checked as data arrives, so it fires at most ``timeout`` late.

Holds: the blobs a fetch finds or commits are held (:meth:`Cache.holding`) until it returns,
so a concurrent ``cache prune --all`` leaves them alone.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from treeboot.download._decode import GZIP_CODINGS, gunzip_matching
from treeboot.download._threads import run_all
from treeboot.download.progress import Transfer, TransferProgress
from treeboot.errors import (
    ChecksumMismatch,
    DetectionError,
    FetchError,
    LocationError,
    SignatureError,
    UsageError,
)
from treeboot.locate.base import Location, RemoteStat, redact, safe_relpath
from treeboot.locate.open import open_location
from treeboot.model import FetchedArtifact, FetchResult, Identification, Verified
from treeboot.store.cache import (
    BlobHolds,
    Cache,
    IndexEntry,
    PartialMeta,
    cache_write_error,
    source_key,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger("treeboot.download")

ROLES = ("kernel", "initrd")
MAX_ARTIFACT_SIZE = 2 << 30  # far above any kernel/initrd (a NixOS netboot initrd is ~1 GiB)
# A body whose length the server does not announce (chunked or close-delimited) is cut here:
# static mirrors always announce it, so a long unannounced body is someone stalling us.
MAX_UNANNOUNCED_SIZE = 256 << 20
# ... and must end within this many times --timeout (unless max_time says otherwise).
UNANNOUNCED_TIMEOUTS = 5
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_FICLONE = 0x40049409  # linux/fs.h: share extents (btrfs, xfs) instead of copying


def parse_checksum(value: str) -> str:
    """``sha256:HEX`` (or a bare 64-digit HEX) -> lower-case hex; UsageError otherwise."""
    algo, sep, digest = value.strip().partition(":")
    if not sep:
        algo, digest = "sha256", algo
    if algo.lower() != "sha256" or not _HEX64.fullmatch(digest):
        raise UsageError(
            f"unsupported checksum {value!r}",
            hint="give sha256:<64 hex digits> (sha256 is the only algorithm supported)",
        )
    return digest.lower()


@dataclass(frozen=True)
class _Plan:
    role: str
    path: str
    expected: str | None
    verified: Verified  # what a match proves
    origin: str  # where ``expected`` comes from, for messages


def fetch(
    location: str | Identification,
    *,
    arch: str | None = None,
    dest: str | Path | None = None,
    kernel: str | None = None,
    initrd: str | None = None,
    checksums: Mapping[str, str] | None = None,
    pins: Sequence[str] = (),
    insecure: bool = False,
    progress: bool | None = None,
    require_signature: bool = False,
    timeout: float = 30.0,
    cache: Cache | None = None,
    keyring: Path | None = None,
    max_time: float | None = None,
) -> FetchResult:
    """Identify ``location`` (unless given an Identification) and fetch its kernel and initrd.

    ``checksums`` pins files by role (``"kernel"``/``"initrd"``) or by path; a pin overrides
    the tree's checksum. Each of ``pins`` (the CLI's bare ``--checksum sha256:HEX``) must match
    one of the two files. ``dest`` gets a copy (or reflink) of the verified files.
    ``progress=None`` shows bars only when stderr is a terminal. ``max_time`` bounds each
    file's transfer (see the module docstring for the default bounds).
    """
    given = location if isinstance(location, Identification) else None
    spec = given.location if given else str(location)
    cache = cache or Cache()
    cache.ensure()
    budget = _Budget(max_time, timeout)
    opened = open_location(spec, insecure=insecure, timeout=timeout, max_time=max_time)
    with cache.holding() as holds, opened as loc:
        if given is None:
            ident = _identify(loc, cache, arch=arch, kernel=kernel, initrd=initrd, keyring=keyring)
        else:
            ident = replace(given, kernel=kernel or given.kernel, initrd=initrd or given.initrd)
        if require_signature and ident.verified != Verified.SIGNED_CHAIN:
            raise SignatureError(
                f"{ident.location}: no signed chain vouches for the kernel and initrd"
                f" (verification available: {ident.verified})",
                hint="drop --require-signature, or use a tree with a signed Release/treeinfo",
            )
        plans = _plans(ident, checksums or {})
        bare = [parse_checksum(p) for p in pins]
        _precheck_pins(plans, bare)
        dest_dir = Path(dest) if dest is not None else None
        targets = _dest_names(plans, dest_dir)
        artifacts = _fetch_all(loc, plans, cache, targets, progress, holds, budget)
        artifacts = _apply_pins(artifacts, bare, [t for t in targets if t])
        return FetchResult(ident, artifacts[0], artifacts[1])


def _identify(
    loc: Location,
    cache: Cache,
    *,
    arch: str | None,
    kernel: str | None,
    initrd: str | None,
    keyring: Path | None = None,
) -> Identification:
    from treeboot.detect.identcache import identify_cached

    try:
        return identify_cached(loc, cache, arch=arch, kernel=kernel, initrd=initrd, keyring=keyring)
    except ModuleNotFoundError as e:
        if e.name != "treeboot.detect.identify":
            raise
        raise DetectionError(
            "cannot identify the location: treeboot.detect.identify is not available",
            hint="pass an Identification to fetch()",
        ) from e


def _plans(ident: Identification, pinned: Mapping[str, str]) -> list[_Plan]:
    published = {safe_relpath(p): v for p, v in ident.checksums.items()}
    by_path = {safe_relpath(k): v for k, v in pinned.items() if k not in ROLES}
    plans = []
    for role in ROLES:
        path = getattr(ident, role)
        if not path and ident.extra.get("no_kernel_reason"):  # Windows/BSD media (isodetect)
            from treeboot.detect.iso import network_install_error

            raise network_install_error(ident)
        if not path:
            raise DetectionError(
                f"{ident.location}: the identification names no {role}",
                hint="pass --kernel PATH --initrd PATH relative to the location",
            )
        path = safe_relpath(path)
        user = pinned.get(role) or by_path.pop(path, None)
        tree = parse_checksum(published[path]) if path in published else None
        chain = ident.verified == Verified.SIGNED_CHAIN
        if user is not None:
            exp = parse_checksum(user)
            level = Verified.SIGNED_CHAIN if chain and tree == exp else Verified.SHA256
            plans.append(_Plan(role, path, exp, level, "the checksum you pinned"))
        elif tree is not None:
            level = Verified.SIGNED_CHAIN if chain else Verified.SHA256
            plans.append(_Plan(role, path, tree, level, "the checksum the tree publishes"))
        else:
            plans.append(_Plan(role, path, None, Verified.NONE, ""))
    if by_path:
        raise UsageError(
            f"checksum given for {', '.join(sorted(by_path))}, which is not fetched",
            hint="pin kernel=sha256:.. / initrd=sha256:.. or the exact kernel/initrd paths",
        )
    return plans


def _precheck_pins(plans: list[_Plan], bare: list[str]) -> None:
    known = {p.expected for p in plans}
    if None in known:
        return  # a file without a checksum may still match: decided after the download
    for pin in bare:
        if pin not in known:
            raise ChecksumMismatch(
                f"the checksum you pinned (sha256:{pin}) is neither the kernel's nor the"
                " initrd's checksum as the tree publishes them",
                hint="check the pinned value and the location",
            )


def _apply_pins(
    artifacts: list[FetchedArtifact], bare: list[str], placed: list[Path]
) -> list[FetchedArtifact]:
    for pin in bare:
        if not any(a.sha256 == pin for a in artifacts):
            for p in placed:
                p.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"neither the kernel nor the initrd has the sha256 you pinned ({pin})",
                hint="check the pinned value and the location",
            )
    return [
        replace(a, verified=Verified.SHA256)
        if a.sha256 in bare and a.verified == Verified.NONE
        else a
        for a in artifacts
    ]


def _dest_names(plans: list[_Plan], dest: Path | None) -> list[Path | None]:
    if dest is None:
        return [None for _ in plans]
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create {dest}: {e.strerror}") from e
    names = [os.path.basename(p.path) or p.role for p in plans]
    if len(set(names)) != len(names):
        names = [f"{p.role}-{n}" for p, n in zip(plans, names, strict=True)]
    return [dest / n for n in names]


def _fetch_all(
    loc: Location,
    plans: list[_Plan],
    cache: Cache,
    targets: list[Path | None],
    progress: bool | None,
    holds: BlobHolds,
    budget: _Budget,
) -> list[FetchedArtifact]:
    with TransferProgress(progress) as bars:
        works = [
            partial(
                fetch_file,
                loc,
                plan.path,
                plan.expected,
                role=plan.role,
                cache=cache,
                verified=plan.verified,
                origin=plan.origin,
                transfer=bars.transfer(f"{plan.role:6} {os.path.basename(plan.path)}"),
                link_to=target,
                holds=holds,
                budget=budget,
            )
            for plan, target in zip(plans, targets, strict=True)
        ]
        return run_all(works, loc.cancel)  # Ctrl-C stops both transfers at once


@dataclass(frozen=True)
class _Budget:
    """The time bounds of one transfer (see the module docstring)."""

    max_time: float | None = None  # every transfer; None: no limit when the length is known
    timeout: float = 30.0  # the per-operation timeout the unannounced deadline derives from

    def deadline(self, start: float, announced: bool) -> float | None:
        if self.max_time is not None:
            return start + self.max_time
        return None if announced else start + UNANNOUNCED_TIMEOUTS * self.timeout


def fetch_file(
    loc: Location,
    relpath: str,
    expected: str | None,
    *,
    role: str = "file",
    cache: Cache | None = None,
    verified: Verified | None = None,
    origin: str = "the expected checksum",
    transfer: Transfer | None = None,
    link_to: Path | None = None,
    max_size: int = MAX_ARTIFACT_SIZE,
    holds: BlobHolds | None = None,
    budget: _Budget | None = None,
) -> FetchedArtifact:
    """Fetch one file of ``loc`` into the cache (and copy it to ``link_to``).

    ``expected`` is ``sha256:HEX`` (or None: the file is cached unverified). A mismatch raises
    ChecksumMismatch and leaves nothing behind; so does a file larger than ``max_size``.
    Parallel callers (threads or processes) of the same source download it once: the others
    wait on its lock and then hit the cache. The blob stays held in ``holds`` (prune leaves
    it alone) until the caller releases them; without ``holds``, until this returns.
    """
    if holds is None:
        with (cache or Cache()).holding() as own:
            return fetch_file(
                loc, relpath, expected, role=role, cache=cache, verified=verified, origin=origin,
                transfer=transfer, link_to=link_to, max_size=max_size, holds=own, budget=budget,
            )  # fmt: skip
    rel = safe_relpath(relpath)
    exp = parse_checksum(expected) if expected else None
    level = verified or (Verified.SHA256 if exp else Verified.NONE)
    cache = cache or Cache()
    cache.ensure()
    transfer = transfer or Transfer()

    def done(blob: Path, from_cache: bool, nbytes: int) -> FetchedArtifact:
        path = _place(blob, link_to) if link_to else blob
        size = path.stat().st_size
        return FetchedArtifact(role, rel, path, size, blob.name, from_cache, nbytes, level)

    def cached(sha: str) -> FetchedArtifact | None:
        holds.hold(sha)  # before looking: a prune either ran already or leaves it alone
        with cache.shared():
            blob = cache.find_blob(sha)
            return done(blob, True, 0) if blob else None

    if exp and (hit := cached(exp)):
        return hit
    key = source_key(loc.url, rel)
    waiting = f"waiting for another download of {redact(loc.url + rel)}"
    with cache.lock(key, on_wait=lambda: log.info("%s", waiting)):
        if exp and (hit := cached(exp)):  # another process just fetched it
            return hit
        if not exp and (entry := _revalidate(loc, rel, cache)) and (hit := cached(entry.sha256)):
            return hit
        got = _download(loc, rel, key, cache, transfer, max_size, budget or _Budget())
        sha, size, nbytes, stat = got
        source, size, sha = _verified_body(
            f"{loc.url}{rel}", key, cache, got, exp, origin=origin, max_size=max_size
        )
        entry = IndexEntry(loc.url, rel, size, stat.validator if stat else None, sha, str(level))
        holds.hold(sha)
        with cache.shared():
            blob = cache.commit(source, sha)
            cache.record(entry)
            cache.discard_partial(key)
            return done(blob, False, nbytes)


def _verified_body(
    url: str,
    key: str,
    cache: Cache,
    got: tuple[str, int, int, RemoteStat | None],
    exp: str | None,
    *,
    origin: str,
    max_size: int,
) -> tuple[Path, int, str]:
    """The downloaded file, its size and sha256, once it matches ``exp``: as received, or
    gzip-decoded when the server encoded it unasked and the decoded bytes are the expected
    ones (the checksum decides). A mismatch discards the download and raises."""
    sha, size, _, stat = got
    source = cache.partial(key)[0]
    if exp and sha != exp and stat and stat.encoding in GZIP_CODINGS:
        decoded = gunzip_matching(source, exp, max_size)
        if decoded is not None:
            log.info("%s: the gzip-decoded body has the expected sha256", redact(url))
            (source, size), sha = decoded, exp
    if exp and sha != exp:
        cache.discard_partial(key)
        raise ChecksumMismatch(
            f"{redact(url)}: sha256 is {sha}, but {origin} is {exp}; the download was discarded",
            hint="the mirror may be syncing or tampered with: retry later or use another",
        )
    return source, size, sha


def _revalidate(loc: Location, rel: str, cache: Cache) -> IndexEntry | None:
    """The index entry of this source, if the server says it is unchanged (one HEAD)."""
    entry = cache.lookup(loc.url, rel)
    if entry is None or entry.validator is None:
        return None
    st = loc.stat(rel)
    if st is None or st.validator != entry.validator or st.size != entry.size:
        return None
    return entry


class _TooBig(Exception):
    """The file grows past the size limit."""


class _TooLong(Exception):
    """The transfer runs past its deadline."""


class _HashingFile(io.FileIO):
    """The ``.part`` file: hashes what is written; a seek re-hashes the prefix it keeps.

    A write past ``limit`` bytes or after ``deadline`` (time.monotonic) raises, before
    anything is written.
    """

    def __init__(self, fd: int, limit: int = MAX_ARTIFACT_SIZE) -> None:
        super().__init__(fd, "r+")
        self.sha = hashlib.sha256()
        self.limit = limit
        self.deadline: float | None = None

    def seek(self, pos: int, whence: int = os.SEEK_SET, /) -> int:
        pos = super().seek(pos, whence)
        self.sha = hashlib.sha256()
        done = 0
        while done < pos:
            chunk = os.pread(self.fileno(), min(1 << 20, pos - done), done)
            if not chunk:
                break
            self.sha.update(chunk)
            done += len(chunk)
        return pos

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        if self.tell() + len(view) > self.limit:
            raise _TooBig()
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _TooLong()
        written = 0
        while written < len(view):
            n = super().write(view[written:])
            if not n:
                raise OSError(errno.EIO, "write returned no progress")
            written += n
        self.sha.update(view)
        return written


def _download(
    loc: Location, rel: str, key: str, cache: Cache, transfer: Transfer, limit: int, budget: _Budget
) -> tuple[str, int, int, RemoteStat | None]:
    """Download into the source's ``.part`` (resuming it if possible); fsync it."""
    part, _ = cache.partial(key)
    meta = cache.load_partial(key, loc.url, rel)
    started: list[RemoteStat] = []
    begun = time.monotonic()

    def on_start(st: RemoteStat, start: int) -> None:
        if st.size is not None and st.size > limit:
            raise _TooBig()
        # Never more than announced: a longer body stops at the first byte too many.
        sink.limit = min(limit, MAX_UNANNOUNCED_SIZE) if st.size is None else st.size
        sink.deadline = budget.deadline(begun, st.size is not None)
        started.append(st)
        cache.save_partial(key, PartialMeta(loc.url, rel, st.validator, st.size))
        transfer.start(st.size, start)
        if start:
            log.info("resuming %s at byte %d", redact(loc.url + rel), start)

    try:
        with _HashingFile(os.open(part, os.O_RDWR | os.O_CREAT, 0o600), limit) as sink:
            sink.deadline = budget.deadline(begun, True)
            offset = os.fstat(sink.fileno()).st_size if meta and meta.validator else 0
            validator = meta.validator if meta else None
            nbytes = loc.download(
                rel, sink, offset, transfer.advance, if_range=validator, on_start=on_start
            )
            size = os.fstat(sink.fileno()).st_size
            os.fsync(sink.fileno())
            sha = sink.sha.hexdigest()
    except LocationError as e:
        if _resumable(started, part):
            kept = part.stat().st_size
            raise FetchError(
                f"{e.message} (kept {kept} bytes to resume from)",
                hint="run the same command again: the download resumes where it stopped",
            ) from e
        cache.discard_partial(key)  # nothing to check a resume against
        raise FetchError(e.message, hint=e.hint) from e
    except _TooBig as e:
        cache.discard_partial(key)
        raise _too_big(redact(loc.url + rel), sink.limit, started) from e
    except _TooLong as e:
        announced = bool(started) and started[0].size is not None
        if not (announced and _resumable(started, part)):
            cache.discard_partial(key)
        raise _too_long(redact(loc.url + rel), time.monotonic() - begun, budget, announced) from e
    except OSError as e:
        cache.discard_partial(key)
        raise cache_write_error(e, cache.root) from e
    except BaseException:
        if not _resumable(started, part):
            cache.discard_partial(key)  # e.g. the cache filled up while saving the sidecar
        raise
    expected_size = started[0].size if started else None
    if expected_size is not None and size != expected_size:
        raise FetchError(
            f"{redact(loc.url + rel)}: got {size} bytes, the server announced {expected_size}",
            hint="running the command again resumes the download",
        )
    return sha, size, nbytes, started[0] if started else None


def _resumable(started: list[RemoteStat], part: Path) -> bool:
    """A partial is worth keeping if the server gave a validator to resume it against."""
    return bool(started and started[0].validator) and part.exists()


def _too_big(where: str, limit: int, started: list[RemoteStat]) -> FetchError:
    announced = started[0].size if started else None
    if announced is not None and limit == announced:
        return FetchError(
            f"{where} sent more than the {announced} bytes it announced: download discarded",
            hint="the server is broken or hostile: retry later or use another mirror",
        )
    unannounced = " (length unannounced)" if started else ""
    return FetchError(
        f"{where} is larger than {limit} bytes{unannounced}: refusing to download it",
        hint="a kernel or initrd is never that big: check the location (or raise max_size)",
    )


def _too_long(where: str, elapsed: float, budget: _Budget, announced: bool) -> FetchError:
    if budget.max_time is not None:
        return FetchError(
            f"{where}: the transfer did not end within --max-time {budget.max_time:g} s",
            hint="raise --max-time; running the command again resumes the download"
            if announced
            else "raise --max-time",
        )
    return FetchError(
        f"{where}: the server announced no length and was still sending after {elapsed:.0f} s"
        f" ({UNANNOUNCED_TIMEOUTS} x --timeout): giving up",
        hint="a mirror announces the length of a static file (Content-Length): this one is"
        " broken or hostile; if it is only slow, pass --max-time SECONDS",
    )


def _place(blob: Path, target: Path) -> Path:
    """Put a copy of ``blob`` at ``target`` atomically (a reflink where the filesystem can).

    Never a hard link: a later in-place edit of ``target`` must not alter the cache.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(blob, "rb") as src, open(tmp, "wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
                cloned = True
            except OSError:
                cloned = False
        if not cloned:
            shutil.copyfile(blob, tmp)  # sendfile(2) under the hood
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FetchError(
            f"cannot write {target}: {e.strerror or e}", hint="check --dest and free space"
        ) from e
    return target
