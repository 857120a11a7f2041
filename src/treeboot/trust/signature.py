"""Signature chains: a gpg-signed ``Release`` vouches for ``SHA256SUMS``, which vouches for files.

The chain of a Debian/Ubuntu installer tree, as apt and debian-installer check it::

    dists/<suite>/InRelease       clearsigned by the archive key (or Release + Release.gpg)
      SHA256: <hex> <size> main/installer-amd64/current/images/SHA256SUMS
    dists/<suite>/main/installer-amd64/current/images/SHA256SUMS
      <hex>  ./netboot/debian-installer/amd64/linux
      <hex>  ./netboot/debian-installer/amd64/initrd.gz

Signatures are checked by ``gpgv`` (package gpgv) against a keyring file: the distribution's
archive keyring from Debian's packages (``debian-archive-keyring``) or one the user names. The text
we parse is the text ``gpgv`` says it verified (``--output``), never our own split of the file, and
an ``InRelease`` must be exactly one clearsigned message (nothing before or after it), as apt
requires. Weak digests (MD5, SHA-1, RIPEMD-160), expired or revoked keys do not count as good.

Absence is not an attack: a tree without a Release file, or a distribution whose keyring is not
installed, gives ``Verified.NONE`` with a ``reason``. A link that is present but wrong (bad or
unknown signature, a hash or size that does not match, a Release for another suite, an expired
``Valid-Until``) raises :class:`~treeboot.errors.SignatureError`.
"""

from __future__ import annotations

import email.utils
import hashlib
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from treeboot.errors import MetadataError, SignatureError, TreebootError
from treeboot.model import Identification, Verified
from treeboot.trust.gpgv import (
    GoodSignature,
    SignedText,
    verify_clearsigned,
    verify_detached,
)

# Where Debian's packages install each distribution's archive keyring (origin -> keyring files).
ARCHIVE_KEYRINGS: dict[str, tuple[str, ...]] = {
    "debian": ("/usr/share/keyrings/debian-archive-keyring.gpg",),
    "ubuntu": (
        "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
        "/etc/apt/trusted.gpg.d/ubuntu-keyring-2018-archive.gpg",
    ),
}
KEYRING_PACKAGES = {"debian": "debian-archive-keyring", "ubuntu": "ubuntu-keyring"}


MAX_RELEASE_SIZE = 32 * 1024 * 1024
MAX_SUMS_SIZE = 16 * 1024 * 1024

_SUITE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class Reader(Protocol):
    """What the chain needs from a location (``treeboot.locate.base.Location`` provides it)."""

    url: str

    def read(self, path: str, max_size: int = ...) -> bytes | None: ...


@dataclass(frozen=True)
class ReleaseRef:
    """Where a tree's signed Release lives: ``dists_url`` is ``<mirror>/dists/<suite>/``."""

    dists_url: str
    suite: str
    subpath: str  # the location's path below dists/<suite>/ ("" or ending in "/")


@dataclass(frozen=True)
class ReleaseFile:
    """A parsed deb822 ``Release``: its fields and the ``SHA256`` list (path -> (hex, size))."""

    fields: dict[str, str]
    sha256: dict[str, tuple[str, int]]

    @property
    def origin(self) -> str | None:
        return self.fields.get("Origin")

    @property
    def names(self) -> set[str]:
        return {v for k in ("Suite", "Codename") if (v := self.fields.get(k))}


@dataclass(frozen=True)
class ChainResult:
    """What a signed chain vouches for.

    ``checksums`` maps location-relative paths to ``sha256:<hex>`` like Identification.checksums.
    """

    verified: Verified
    suite: str | None = None
    release_url: str | None = None
    keyring: str | None = None
    signatures: list[GoodSignature] = field(default_factory=list)
    sums_url: str | None = None
    sums_sha256: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # why the chain stops short of signed-chain

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": str(self.verified),
            "suite": self.suite,
            "release": self.release_url,
            "keyring": self.keyring,
            "signed_by": [
                {"fingerprint": s.fingerprint, "primary": s.primary_fingerprint, "uid": s.user_id}
                for s in self.signatures
            ],
            "sha256sums": self.sums_url,
            "sha256sums_sha256": self.sums_sha256,
            "checksums": dict(self.checksums),
            "reason": self.reason,
        }


# --- locating the Release -------------------------------------------------------------------


def find_release_path(location_url: str) -> ReleaseRef | None:
    """Derive ``<mirror>/dists/<suite>/`` from a URL (or path) below it, or None.

    ``http://m/debian/dists/bookworm/main/installer-amd64/`` gives dists_url
    ``http://m/debian/dists/bookworm/``, suite ``bookworm``, subpath ``main/installer-amd64/``.
    """
    parts = urlsplit(location_url)
    path = parts.path if parts.scheme else location_url
    segments = path.split("/")
    for i in range(len(segments) - 2, -1, -1):
        if segments[i] != "dists" or not _SUITE_RE.fullmatch(segments[i + 1]):
            continue
        dists_path = "/".join(segments[: i + 2]) + "/"
        subpath = "/".join(segments[i + 2 :])
        if subpath and not subpath.endswith("/"):  # a file's URL: keep its directory
            subpath = subpath.rsplit("/", 1)[0] + "/" if "/" in subpath else ""
        if parts.scheme:
            dists_url = urlunsplit((parts.scheme, parts.netloc, dists_path, "", ""))
        else:
            dists_url = dists_path
        return ReleaseRef(dists_url=dists_url, suite=segments[i + 1], subpath=subpath)
    return None


def default_keyring(origin: str | None) -> Path | None:
    """The installed archive keyring of a distribution (``Origin:`` or osinfo family), or None."""
    for candidate in ARCHIVE_KEYRINGS.get((origin or "").strip().lower(), ()):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


# --- parsing --------------------------------------------------------------------------------


def parse_release(text: bytes) -> ReleaseFile:
    """Parse a deb822 Release file. Raises MetadataError when it is not one."""
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise MetadataError("Release is not UTF-8 text") from e
    fields: dict[str, str] = {}
    current: str | None = None
    for line in lines:
        if not line.strip():
            continue
        if line[0] in " \t":
            if current is None:
                raise MetadataError("Release starts with a continuation line")
            fields[current] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            current = key.strip()
            fields[current] = value.strip()
        else:
            raise MetadataError(f"Release has a line that is not a field: {line[:80]!r}")
    sha256: dict[str, tuple[str, int]] = {}
    for entry in fields.get("SHA256", "").splitlines():
        words = entry.split()
        if not words:
            continue
        if len(words) != 3 or not _HEX64.fullmatch(words[0].lower()) or not words[1].isdigit():
            raise MetadataError(f"Release has a malformed SHA256 line: {entry[:120]!r}")
        sha256[words[2]] = (words[0].lower(), int(words[1]))
    return ReleaseFile(fields, sha256)


def parse_sha256sums(text: bytes) -> dict[str, str]:
    """Parse ``SHA256SUMS`` (``<hex>  ./path`` or ``<hex> *path``): normalised path -> hex.

    Lines in another form (free text, BSD ``SHA256 (x) = h``, short hashes, non-UTF-8 bytes)
    are skipped, like ``sha256sum --check`` does: the signature vouches for the whole file,
    and a file it names without a valid line stays unverified. A path outside the directory or
    one listed twice with different sums is an error."""
    sums: dict[str, str] = {}
    for raw in text.splitlines():
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        digest, sep, name = line.partition(" ")
        if not sep or not _HEX64.fullmatch(digest.lower()) or "\0" in line:
            continue
        name = name.lstrip(" ").removeprefix("*")
        path = posixpath.normpath(name)
        if not name:
            continue
        if path.startswith(("/", "..")):
            raise MetadataError(f"SHA256SUMS names a path outside its directory: {name[:120]!r}")
        if sums.get(path, digest.lower()) != digest.lower():
            raise MetadataError(f"SHA256SUMS lists {path} twice with different checksums")
        sums[path] = digest.lower()
    return sums


def _check_validity(release: ReleaseFile, suite: str, url: str) -> None:
    if release.names and suite not in release.names:
        raise SignatureError(
            f"{url} is signed for {' / '.join(sorted(release.names))}, not for {suite}",
            hint="the mirror serves another suite's Release under this name (a replay); "
            "check the mirror",
        )
    valid_until = release.fields.get("Valid-Until")
    if valid_until:
        try:
            deadline = email.utils.parsedate_to_datetime(valid_until).timestamp()
        except (TypeError, ValueError) as e:
            raise SignatureError(f"{url} has an unreadable Valid-Until: {valid_until!r}") from e
        if deadline < time.time():
            raise SignatureError(
                f"{url} expired on {valid_until} (Valid-Until)",
                hint="the mirror is stale or replays an old Release; use an up-to-date mirror",
            )
    if not release.sha256:
        raise SignatureError(f"{url} lists no SHA256 checksums")


# --- the chain ------------------------------------------------------------------------------


class _Prefetched:
    """A dists/<suite>/ reader that answers first from bytes already read.

    Detection reads SHA256SUMS beside the MANIFEST and the Release files are requested while
    detection's first round is in flight, so the chain adds no sequential round trip.
    """

    def __init__(self, inner: Reader, known: dict[str, bytes | None]) -> None:
        self.inner = inner
        self.url = inner.url
        self.known = known

    def read(self, path: str, max_size: int = MAX_RELEASE_SIZE) -> bytes | None:
        full = self.url + path
        if full in self.known:
            data = self.known[full]
            if data is not None and len(data) > max_size:
                raise MetadataError(f"{full} is larger than {max_size} bytes")
            return data
        return self.inner.read(path, max_size=max_size)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


RELEASE_FILES = ("InRelease", "Release", "Release.gpg")


class ReleasePrefetch:
    """Reads ``InRelease``/``Release``/``Release.gpg`` of a tree's suite in the background.

    Started before detection so that the signed chain costs no extra sequential round trip.
    """

    def __init__(self, loc: Reader, ref: ReleaseRef) -> None:
        import concurrent.futures

        self.ref = ref
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._future = self._pool.submit(self._run, loc, ref)

    @staticmethod
    def _run(loc: Reader, ref: ReleaseRef) -> tuple[Reader, dict[str, bytes | None]]:
        dists = _open_dists(loc, ref.dists_url)
        read_many = getattr(dists, "read_many", None)
        known: dict[str, bytes | None] = {}
        try:
            if callable(read_many):
                got = read_many(list(RELEASE_FILES), max_size=MAX_RELEASE_SIZE)
                known = {dists.url + name: got.get(name) for name in RELEASE_FILES}
        except TreebootError:
            known = {}  # read them one by one later; errors surface there with context
        return dists, known

    def result(self, extra: dict[str, bytes | None]) -> Reader:
        dists, known = self._future.result()
        self._pool.shutdown(wait=False)
        return _Prefetched(dists, {**extra, **known})

    def close(self) -> None:
        try:
            dists, _ = self._future.result()
        except TreebootError:
            return
        finally:
            self._pool.shutdown(wait=False)
        close = getattr(dists, "close", None)
        if callable(close):
            close()


def start_release_prefetch(loc: Reader) -> ReleasePrefetch | None:
    """Start reading the signed Release of the suite ``loc`` lies in, if it lies in one."""
    ref = find_release_path(loc.url)
    return ReleasePrefetch(loc, ref) if ref is not None else None


def _open_dists(loc: Reader, url: str) -> Reader:
    from treeboot.locate.open import open_location

    return open_location(
        url,
        insecure=bool(getattr(loc, "insecure", False)),
        timeout=float(getattr(loc, "timeout", 30.0)),
    )


def _read_release(dists: Reader, keyring: Path) -> tuple[SignedText, str] | None:
    inrelease = dists.read("InRelease", max_size=MAX_RELEASE_SIZE)
    if inrelease is not None:
        return verify_clearsigned(inrelease, keyring), dists.url + "InRelease"
    release = dists.read("Release", max_size=MAX_RELEASE_SIZE)
    if release is None:
        return None
    sig = dists.read("Release.gpg", max_size=1024 * 1024)
    if sig is None:
        raise SignatureError(
            f"{dists.url}Release exists but is not signed (no InRelease, no Release.gpg)",
            hint="use a mirror that carries the signed Release, or pin checksums with --checksum",
        )
    return verify_detached(release, sig, keyring, what="Release"), dists.url + "Release"


def _sums_for(release: ReleaseFile, artifact: str) -> str | None:
    """The deepest ``.../SHA256SUMS`` the Release lists in a directory above ``artifact``."""
    directory = posixpath.dirname(artifact)
    while True:
        candidate = posixpath.join(directory, "SHA256SUMS") if directory else "SHA256SUMS"
        if candidate in release.sha256:
            return candidate
        if not directory:
            return None
        directory = posixpath.dirname(directory)


def _artifact_refs(loc_url: str, ident: Identification) -> tuple[ReleaseRef, dict[str, str]] | None:
    """The suite the artifacts live in, and location-relative path -> path below dists/<suite>/."""
    ref: ReleaseRef | None = None
    out: dict[str, str] = {}
    for rel in (ident.kernel, ident.initrd):
        if not rel:
            continue
        norm = posixpath.normpath(rel)
        if norm.startswith(("/", "..")) or norm == ".":
            raise SignatureError(f"artifact path {rel!r} leaves the tree")
        found = find_release_path(loc_url.rstrip("/") + "/" + norm)
        if found is None:
            return None
        if ref is not None and found.dists_url != ref.dists_url:
            return None
        ref = found
        out[rel] = posixpath.normpath(found.subpath + posixpath.basename(norm))
    return (ref, out) if ref is not None else None


def _fetch_sums(dists: Reader, release: ReleaseFile, sums_path: str) -> tuple[dict[str, str], str]:
    want_hex, want_size = release.sha256[sums_path]
    data = dists.read(sums_path, max_size=MAX_SUMS_SIZE)
    if data is None:
        raise SignatureError(f"{dists.url}{sums_path} is listed in the Release but missing")
    got = hashlib.sha256(data).hexdigest()
    if len(data) != want_size or got != want_hex:
        raise SignatureError(
            f"{dists.url}{sums_path} does not match the signed Release "
            f"(size {len(data)}, sha256 {got}; Release says size {want_size}, sha256 {want_hex})",
            hint="the mirror is being updated or the file was modified; retry later or use "
            "another mirror",
        )
    return parse_sha256sums(data), got


def verify_debian_chain(
    loc: Reader,
    ident: Identification,
    *,
    keyring: Path | None = None,
    open_dists: Callable[[str], Reader] | None = None,
    prefetch: ReleasePrefetch | None = None,
    known: dict[str, bytes | None] | None = None,
) -> ChainResult:
    """Walk InRelease -> SHA256SUMS -> kernel/initrd checksums for a Debian/Ubuntu tree.

    Returns ``Verified.SIGNED_CHAIN`` with the vouched checksums when every artifact of ``ident``
    is covered, ``Verified.NONE`` with a ``reason`` when the tree has no signed Release or no
    keyring is known. Raises SignatureError when a link is present but wrong. ``open_dists``
    opens the ``dists/<suite>/`` URL (default: a location like ``loc``).
    """
    found = _artifact_refs(loc.url, ident)
    if found is None:
        return ChainResult(
            Verified.NONE, reason="the kernel and initrd are not below one dists/<suite>/"
        )
    ref, wanted = found
    ring = keyring or default_keyring(ident.family) or default_keyring(ident.os)
    if ring is None:
        pkg = KEYRING_PACKAGES.get((ident.family or "").lower(), "the distribution's keyring")
        return ChainResult(
            Verified.NONE,
            suite=ref.suite,
            reason=f"no archive keyring installed for {ident.family or 'this distribution'} "
            f"(install {pkg} or pass --keyring FILE)",
        )
    try:
        if prefetch is not None and prefetch.ref.dists_url == ref.dists_url:
            dists = prefetch.result(known or {})
        elif open_dists:
            dists = open_dists(ref.dists_url)
        else:
            dists = _Prefetched(_open_dists(loc, ref.dists_url), known or {})
    except TreebootError as e:
        raise SignatureError(f"cannot open the signed chain at {ref.dists_url}: {e}") from e
    try:
        return _walk_chain(dists, ref, ident, ring, wanted)
    except SignatureError:
        raise
    except TreebootError as e:
        raise SignatureError(f"cannot read the signed chain at {ref.dists_url}: {e}") from e
    finally:
        close = getattr(dists, "close", None)
        if callable(close):
            close()


def _walk_chain(
    dists: Reader, ref: ReleaseRef, ident: Identification, ring: Path, wanted: dict[str, str]
) -> ChainResult:
    signed = _read_release(dists, ring)
    if signed is None:
        return ChainResult(
            Verified.NONE, suite=ref.suite, reason=f"no InRelease or Release in {dists.url}"
        )
    text, release_url = signed
    release = parse_release(text.text)
    _check_validity(release, ref.suite, release_url)
    checksums: dict[str, str] = {}
    sums_urls: list[str] = []
    sums_hex: list[str] = []
    for rel, full in wanted.items():
        sums_path = _sums_for(release, full)
        if sums_path is None:
            return _short(
                ref, release_url, ring, text, f"the Release lists no SHA256SUMS above {full}"
            )
        sums, digest = _fetch_sums(dists, release, sums_path)
        key = posixpath.relpath(full, posixpath.dirname(sums_path) or ".")
        if key not in sums:
            return _short(ref, release_url, ring, text, f"{sums_path} does not list {key}")
        published = ident.checksums.get(rel)
        if published and published.lower() != f"sha256:{sums[key]}":
            raise SignatureError(
                f"the tree's own checksum for {rel} ({published}) contradicts the signed "
                f"SHA256SUMS (sha256:{sums[key]})"
            )
        checksums[rel] = f"sha256:{sums[key]}"
        if dists.url + sums_path not in sums_urls:
            sums_urls.append(dists.url + sums_path)
            sums_hex.append(digest)
    return ChainResult(
        Verified.SIGNED_CHAIN,
        suite=ref.suite,
        release_url=release_url,
        keyring=str(ring),
        signatures=text.signatures,
        sums_url=" ".join(sums_urls) or None,
        sums_sha256=" ".join(sums_hex) or None,
        checksums=checksums,
    )


def _short(
    ref: ReleaseRef, release_url: str, ring: Path, text: SignedText, reason: str
) -> ChainResult:
    return ChainResult(
        Verified.NONE,
        suite=ref.suite,
        release_url=release_url,
        keyring=str(ring),
        signatures=text.signatures,
        reason=reason,
    )


# Families whose install trees sit below a signed dists/<suite>/Release.
CHAIN_FAMILIES = {"debian", "ubuntu"}


def apply_chain(
    loc: Reader,
    ident: Identification,
    *,
    keyring: Path | None = None,
    prefetch: ReleasePrefetch | None = None,
    known: dict[str, bytes | None] | None = None,
) -> Identification:
    """``ident`` with what the signed chain says: checksums, ``verified``, ``extra["signature"]``.

    Called by detection for every tree; tries the chain for Debian/Ubuntu trees (or any tree
    when the user named a keyring). Raises SignatureError when the chain is present but broken.
    """
    debian_like = (ident.family or "").lower() in CHAIN_FAMILIES
    if not (debian_like or keyring) or not (ident.kernel or ident.initrd):
        return ident
    result = verify_debian_chain(loc, ident, keyring=keyring, prefetch=prefetch, known=known)
    extra = {**ident.extra, "signature": result.to_json()}
    if result.verified is not Verified.SIGNED_CHAIN:
        return replace(ident, extra=extra)
    return replace(
        ident,
        checksums={**ident.checksums, **result.checksums},
        verified=Verified.SIGNED_CHAIN,
        extra=extra,
    )
