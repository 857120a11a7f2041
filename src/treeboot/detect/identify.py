"""Identify an install tree: which OS, arch and installer, where its kernel and initrd are.

Detection costs at most two sequential rounds of requests after connecting:

1. every candidate metadata file of every layout at once (``[probe]`` in
   ``rules/tree_layouts.toml``: ``.treeinfo``, d-i ``MANIFEST``, ``.disk/info``, SUSE
   ``content``, Mageia ``VERSION``, ...);
2. only the follow-ups the winning layout needs (``SHA256SUMS`` beside a ``MANIFEST``,
   existence checks when several kernel paths are possible), again all at once.

Reads are memoised for the run. Layouts (``treeboot.detect._layouts``) are tried in order and
the first that recognises its metadata wins; the knowledge they use is osinfo-db plus the rule
tables in ``rules/``. ISO images are handed to :func:`treeboot.detect.iso.identify_iso`.

API::

    identify(location, *, arch=None, kernel=None, initrd=None, insecure=False, timeout=30.0)
    identify_location(loc, *, arch=None, kernel=None, initrd=None)
    identify_tree(loc, ...)   # the tree logic on any Location (an ISO's contents too)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from treeboot.arch import norm_arch
from treeboot.detect._layouts import LAYOUTS, Context, Finding, Resolved
from treeboot.detect._probe import Probe
from treeboot.detect.metadata import parse_disk_info
from treeboot.detect.osinfo import OsinfoDB, derive_short_id, load_osinfo
from treeboot.detect.rules import load_rules
from treeboot.detect.treeinfo import match_treeinfo
from treeboot.errors import DetectionError, MetadataError, TreebootError, UsageError
from treeboot.locate.base import MAX_PARALLEL, Location, safe_relpath
from treeboot.locate.open import open_location
from treeboot.model import Identification, Media, Verified

if TYPE_CHECKING:
    from treeboot.trust.signature import ReleasePrefetch

__all__ = [
    "Probe",
    "derive_short_id",
    "identify",
    "identify_location",
    "identify_tree",
    "match_treeinfo",
    "parse_disk_info",
]

log = logging.getLogger(__name__)

_WORKERS = 2 * MAX_PARALLEL

TREE_HINT = (
    "point at the root of an install tree: the directory holding .treeinfo (Fedora, RHEL and"
    " rebuilds, openSUSE/SLE), a Debian/Ubuntu .../dists/<suite>/main/installer-<arch>/"
    " directory, a copy of an install ISO (.disk/info, content, VERSION, .alpine-release,"
    " arch/), or an ISO image; for anything else pass --kernel PATH --initrd PATH"
)


def identify(
    location: str,
    *,
    arch: str | None = None,
    kernel: str | None = None,
    initrd: str | None = None,
    insecure: bool = False,
    timeout: float = 30.0,
    keyring: Path | None = None,
) -> Identification:
    """Open ``location`` (directory, URL or ISO) and identify it. See :func:`identify_tree`."""
    with open_location(location, insecure=insecure, timeout=timeout) as loc:
        return identify_location(loc, arch=arch, kernel=kernel, initrd=initrd, keyring=keyring)


def identify_location(
    loc: Location,
    *,
    arch: str | None = None,
    kernel: str | None = None,
    initrd: str | None = None,
    keyring: Path | None = None,
    seen: dict[str, bytes | None] | None = None,
) -> Identification:
    """Identify an open location; ISO images go to :func:`treeboot.detect.iso.identify_iso`.

    ``seen``, when given, receives every file of a tree the identification read, the signed
    chain's Release files included (absolute URL -> bytes, None if absent): what
    :mod:`treeboot.detect.identcache` revalidates on the next run.
    """
    if loc.media == Media.ISO:
        from treeboot.detect.iso import identify_iso
        from treeboot.locate.iso import IsoLocation

        if not isinstance(loc, IsoLocation):
            raise DetectionError(f"{loc.url}: an ISO location of unknown type {type(loc)}")
        return identify_iso(loc, arch=arch, kernel=kernel, initrd=initrd)
    # Signed chain (treeboot.trust.signature): InRelease -> SHA256SUMS -> kernel/initrd. The suite's
    # Release files are requested alongside detection's first round, and the chain reuses
    # what detection read (SHA256SUMS), so verification adds no sequential round trip.
    from treeboot.trust.signature import apply_chain, start_release_prefetch

    prefetch = start_release_prefetch(loc)
    known: dict[str, bytes | None] = {} if seen is None else seen
    try:
        ident = identify_tree(loc, arch=arch, kernel=kernel, initrd=initrd, seen=known)
        ident = apply_chain(loc, ident, keyring=keyring, prefetch=prefetch, known=known)
        if seen is not None and prefetch is not None:
            seen.update(_release_files(prefetch))
        return ident
    finally:
        if prefetch is not None:
            prefetch.close()


def _release_files(prefetch: ReleasePrefetch) -> dict[str, bytes | None]:
    """The Release files the prefetch read (absolute URL -> bytes or None)."""
    try:
        reader = prefetch.result({})
    except TreebootError:
        return {}
    files = getattr(reader, "known", None)
    return dict(files) if isinstance(files, dict) else {}


def identify_tree(
    loc: Location,
    *,
    arch: str | None = None,
    kernel: str | None = None,
    initrd: str | None = None,
    db: OsinfoDB | None = None,
    seen: dict[str, bytes | None] | None = None,
) -> Identification:
    """Identify the tree behind ``loc`` in at most two rounds of requests.

    ``seen``, when given, receives every file read (absolute URL -> bytes, None if absent),
    so later steps (the signed chain) need not read them again.

    ``arch`` (any spelling) selects among the arches a tree offers and is checked against
    the tree's own. ``kernel``/``initrd`` (relative to the location) override the detected
    paths; with both given, a tree no rule knows still succeeds with ``os`` null.
    Raises DetectionError listing every probe when nothing matches, MetadataError when a
    metadata file is malformed, oversized or names paths outside the tree.
    """
    rules = load_rules()
    overrides = _check_overrides(kernel, initrd)
    want = norm_arch(arch) if arch else None
    probe = Probe(loc, canary=rules.probe_canary)
    probe.fetch(rules.probe_reads, rules.probe_exists)
    ctx = Context(loc.url, probe, rules, db or load_osinfo(), want)
    try:
        finding = _first_finding(ctx)
        probe.fetch(finding.reads, finding.exists)
        resolved = finding.finish()
    except (DetectionError, MetadataError) as e:
        if overrides[0] and overrides[1]:
            return _unknown_tree(loc.url, want, overrides, probe, e)
        raise
    finally:
        if seen is not None:
            seen.update(probe.known_urls())
    return _identification(loc.url, resolved, overrides, probe.rounds)


def _first_finding(ctx: Context) -> Finding:
    for layout in LAYOUTS:
        finding = layout.recognise(ctx)
        if finding is not None:
            log.debug("%s: recognised as %s", ctx.url, layout.name)
            return finding
    raise DetectionError(
        f"{ctx.url} is not an install tree treeboot recognises",
        tried=ctx.probe.tried,
        hint=TREE_HINT,
    )


def _check_overrides(kernel: str | None, initrd: str | None) -> tuple[str | None, str | None]:
    out: list[str | None] = []
    for what, path in (("--kernel", kernel), ("--initrd", initrd)):
        if path is None:
            out.append(None)
            continue
        try:
            rel = safe_relpath(path)
        except MetadataError as e:
            raise UsageError(f"{what} {path!r}: {e.message}", hint=e.hint) from e
        if not rel:
            raise UsageError(f"{what} must name a file inside the location")
        out.append(rel)
    return out[0], out[1]


def _identification(
    url: str, r: Resolved, overrides: tuple[str | None, str | None], rounds: int
) -> Identification:
    kernel = overrides[0] or r.kernel
    initrd = overrides[1] or r.initrd
    sums = {p: r.checksums[p] for p in (kernel, initrd) if p in r.checksums}
    extra = {**r.extra, "layout": r.layout, "rounds": rounds}
    if overrides != (None, None):
        extra["overridden"] = [w for w, o in zip(("kernel", "initrd"), overrides, strict=True) if o]
    installer = r.installer
    return Identification(
        location=url,
        media=Media.TREE,
        os=r.guess.short_id,
        family=r.guess.distro,
        name=r.guess.name,
        version=r.guess.version,
        arch=r.arch,
        installer=installer.name if installer else None,
        kernel=kernel,
        initrd=initrd,
        checksums=sums,
        evidence=r.evidence,
        known_to_database=r.guess.known,
        needs=list(r.needs if r.needs is not None else installer.needs if installer else ()),
        boot_args=list(installer.boot_args if installer else ()),
        verified=Verified.SHA256 if len(sums) == 2 else Verified.NONE,
        extra={**r.guess.notes, **extra},
    )


def _unknown_tree(
    url: str,
    arch: str | None,
    overrides: tuple[str | None, str | None],
    probe: Probe,
    error: TreebootError,
) -> Identification:
    return Identification(
        location=url,
        media=Media.TREE,
        os=None,
        family=None,
        name=None,
        version=None,
        arch=arch,
        installer=None,
        kernel=overrides[0],
        initrd=overrides[1],
        known_to_database=False,
        extra={"detection": error.message, "looked_for": probe.tried, "rounds": probe.rounds},
    )
