"""``.treeinfo`` (productmd and its pre-productmd ``[general]`` form): parse and match.

Format (productmd ``treeinfo`` 1.x; older trees only have ``[general]``)::

    [general]            family, version, name, arch, variant, platforms
    [release]            name, short, version           (productmd)
    [tree]               arch, platforms, variants      (productmd)
    [images-<arch>]      kernel = images/pxeboot/vmlinuz, initrd = ..., boot.iso = ...
    [stage2]             mainimage = images/install.img   (anaconda's runtime image)
    [checksums]          <path> = sha256:<hex>

:func:`match_treeinfo` names the OS with osinfo-db's ``<tree><treeinfo>`` rules (libosinfo
semantics: unanchored regex search on family/variant/version/arch). A version the database only
knows through a catch-all (``fedora-unknown``, ``rhel9-unknown``) or not at all is named by
:meth:`OsinfoDB.derive_short_id` from the family's own entries and reported as unknown to the
database, never as an older release.
"""

from __future__ import annotations

import configparser
import re
from collections import Counter
from dataclasses import dataclass, field

from treeboot.arch import norm_arch
from treeboot.detect.osinfo import (
    OsEntry,
    OsinfoDB,
    TreeRule,
    load_osinfo,
    regex_fullmatch,
    regex_search,
)
from treeboot.detect.rules import InstallerRule, Rules, load_rules
from treeboot.errors import DetectionError, MetadataError
from treeboot.locate.base import safe_relpath

_SHA256 = re.compile(r"sha256:([0-9a-fA-F]{64})")


@dataclass(frozen=True)
class TreeInfo:
    family: str | None
    version: str | None
    name: str | None
    arch: str | None  # as written ("x86_64_v2")
    variant: str | None
    platforms: tuple[str, ...]
    images: dict[str, dict[str, str]]  # section arch as written -> {"kernel": path, ...}
    checksums: dict[str, str] = field(default_factory=dict)  # path -> "sha256:<hex>"
    stage2: str | None = None  # [stage2] mainimage, as written


def _get(cp: configparser.RawConfigParser, section: str, key: str) -> str | None:
    if not cp.has_section(section):
        return None
    value = cp.get(section, key, fallback="").strip()
    return value or None


def _checksums(cp: configparser.RawConfigParser) -> dict[str, str]:
    out: dict[str, str] = {}
    if cp.has_section("checksums"):
        for path, value in cp.items("checksums"):
            m = _SHA256.fullmatch(value.strip())
            try:
                rel = safe_relpath(path.strip())
            except MetadataError:
                continue
            if m and rel:
                out[rel] = "sha256:" + m.group(1).lower()
    return out


def parse_treeinfo(text: str, source: str = ".treeinfo") -> TreeInfo:
    """Parse; MetadataError (with ``source`` in the message) for anything that is not INI."""
    if "\0" in text:
        raise MetadataError(f"{source} is binary, not a treeinfo file")
    cp = configparser.RawConfigParser(strict=False, delimiters=("=",), interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # keys are paths
    try:
        cp.read_string(text, source)
    except configparser.Error as e:
        first = str(e).splitlines()[0]
        if isinstance(e, configparser.MissingSectionHeaderError):
            first = f"line {e.lineno}: {e.line.strip()[:80]!r} comes before any [section]"
        elif isinstance(e, configparser.ParsingError) and getattr(e, "errors", None):
            lineno, line = e.errors[0]
            first = f"line {lineno}: {line[:80]} is neither a [section] nor key = value"
        raise MetadataError(
            f"{source} is not a valid treeinfo file: {first}",
            hint="the tree's metadata is damaged or truncated; try another mirror",
        ) from e
    images = {
        s[len("images-") :]: {k: v.strip() for k, v in cp.items(s)}
        for s in cp.sections()
        if s.startswith("images-")
    }
    platforms = _get(cp, "general", "platforms") or _get(cp, "tree", "platforms") or ""
    return TreeInfo(
        family=_get(cp, "general", "family") or _get(cp, "release", "name"),
        version=_get(cp, "general", "version") or _get(cp, "release", "version"),
        name=_get(cp, "general", "name"),
        arch=_get(cp, "general", "arch") or _get(cp, "tree", "arch"),
        variant=_get(cp, "general", "variant") or _get(cp, "tree", "variants"),
        platforms=tuple(p.strip() for p in platforms.split(",") if p.strip()),
        images=images,
        checksums=_checksums(cp),
        stage2=_get(cp, "stage2", "mainimage"),
    )


def select_images(
    ti: TreeInfo, arch: str | None, rules: Rules, source: str = ".treeinfo"
) -> tuple[str, str, str]:
    """``(arch, kernel, initrd)`` from the ``[images-<arch>]`` section for ``arch``.

    ``arch`` (osinfo spelling) defaults to the tree's own; ``images-x86_64_v2`` serves
    ``x86_64``. Paths are checked (no ``..``, not absolute): MetadataError otherwise.
    """
    own = norm_arch(ti.arch) if ti.arch else None
    want = arch or own
    sections = [s for s in ti.images if s != "xen"]
    if want is None:
        if len(sections) != 1:
            raise MetadataError(f"{source} names no arch and has images for {sections or 'none'}")
        want = norm_arch(sections[0])
    ordered = sorted(sections, key=lambda s: s != ti.arch)  # the tree's own spelling first
    section = next((s for s in ordered if norm_arch(s) == want), None)
    if section is None:
        have = ", ".join(norm_arch(s) for s in sections) or "none"
        if arch and own and arch != own:
            raise DetectionError(
                f"{source}: this tree is for {own}, not {arch} (images for: {have})",
                hint=f"use a {arch} tree, or pass --arch {own}",
            )
        raise MetadataError(f"{source} has no [images-{want}] section (images for: {have})")
    paths = ti.images[section]
    missing = [k for k in ("kernel", "initrd") if not paths.get(k)]
    if missing:
        raise MetadataError(f"{source}: [images-{section}] has no {' or '.join(missing)}")
    kernel, initrd = (_checked(paths[k], source) for k in ("kernel", "initrd"))
    return want, kernel, initrd


def _checked(path: str, source: str) -> str:
    try:
        rel = safe_relpath(path)
    except MetadataError as e:
        raise MetadataError(f"{source}: {e.message}", hint=e.hint) from e
    if not rel:
        raise MetadataError(f"{source}: empty image path")
    return rel


# -- naming the OS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OsGuess:
    short_id: str | None
    distro: str | None
    name: str | None
    version: str | None
    known: bool
    entry: OsEntry | None = None
    notes: dict[str, str] = field(default_factory=dict)


def _variant_text(ti: TreeInfo) -> str:
    """Where a tree names its edition: ``variant``/``[tree] variants``, else the family or
    ``[release] name`` itself ("Fedora-Silverblue")."""
    return " ".join(t for t in (ti.variant, ti.family, ti.name) if t)


def _variant_ok(rule: TreeRule, variant: str | None) -> bool:
    return rule.treeinfo_variant is None or regex_search(rule.treeinfo_variant, variant)


def _exact(entry: OsEntry, rule: TreeRule, version: str | None) -> bool:
    """Guard against unanchored hits: osinfo's '37' also matches '137'."""
    if entry.is_placeholder:
        return False
    if rule.treeinfo_version is None or version is None:
        return rule.treeinfo_version is None
    return entry.version == version or regex_fullmatch(rule.treeinfo_version, version)


def guess_os(ti: TreeInfo, arch: str | None, db: OsinfoDB, rules: Rules) -> OsGuess:
    """osinfo short-id for a treeinfo: an exact rule, else derived from the family's naming."""
    if not ti.family:
        return OsGuess(None, None, ti.name, ti.version, False)
    fam = [
        (e, r)
        for e in db.entries
        for r in e.trees
        if r.treeinfo_family
        and regex_search(r.treeinfo_family, ti.family)
        and _variant_ok(r, _variant_text(ti))
    ]
    fam = [x for x in fam if regex_fullmatch(x[1].treeinfo_family, ti.family)] or fam
    hits = [
        (e, r)
        for e, r in fam
        if r.arch in ("all", arch) and regex_search(r.treeinfo_version, ti.version)
    ]
    good = [(e, r) for e, r in hits if _exact(e, r, ti.version)]
    if good:
        e, _ = max(good, key=lambda x: (x[1].arch == arch, x[1].treeinfo_variant is not None))
        return OsGuess(e.short_id, e.distro, e.name, ti.version or e.version, True, e)
    placeholder = next((e.short_id for e, _ in hits if e.is_placeholder), None)
    notes = {"osinfo_match": placeholder} if placeholder else {}
    # An edition osinfo-db models as its own OS (Silverblue) has variant-specific
    # rules: they name the series, not the family's plain entries.
    fam = [x for x in fam if x[1].treeinfo_variant is not None] or fam
    distros = Counter(e.distro for e, _ in fam if e.distro)
    distro = distros.most_common(1)[0][0] if distros else None
    if distro is None:
        distro = next((r.distro for r in rules.treeinfo_families if r.matches(ti.family)), None)
    if distro is None or ti.version is None:
        return OsGuess(None, distro, ti.name or ti.family, ti.version, False, notes=notes)
    series = list({e.id: e for e, _ in fam if e.distro == distro}.values()) or None
    short_id, known = db.derive_short_id(distro, ti.version, series=series)
    entry = db.get(short_id)
    if entry is not None:
        return OsGuess(short_id, distro, entry.name, ti.version, known, entry, notes)
    name = db.derive_name(series or db.by_distro(distro), ti.version)
    return OsGuess(short_id, distro, name or ti.name, ti.version, known, None, notes)


@dataclass(frozen=True)
class TreeinfoMatch:
    """What a ``.treeinfo`` says, resolved: OS, arch, kernel/initrd and their checksums."""

    treeinfo: TreeInfo
    os: OsGuess
    arch: str
    kernel: str
    initrd: str
    checksums: dict[str, str]  # kernel/initrd path -> "sha256:<hex>" (when published)
    installer: InstallerRule | None


def match_treeinfo(
    text: str,
    *,
    arch: str | None = None,
    db: OsinfoDB | None = None,
    source: str = ".treeinfo",
) -> TreeinfoMatch:
    """Parse ``text`` and resolve it (see the module docstring). ``arch``: osinfo spelling."""
    rules = load_rules()
    ti = parse_treeinfo(text, source)
    arch = norm_arch(arch) if arch else None
    arch, kernel, initrd = select_images(ti, arch, rules, source)
    guess = guess_os(ti, arch, db or load_osinfo(), rules)
    installer = rules.installer_for_distro(guess.distro) or rules.installer_for_kernel(kernel)
    sums = {p: ti.checksums[p] for p in (kernel, initrd) if p in ti.checksums}
    return TreeinfoMatch(ti, guess, arch, kernel, initrd, sums, installer)
