"""Naming what a learnt volume pattern matched (private to :mod:`~treeboot.detect.iso`).

A hit of :mod:`._volpatterns` gives a distro, a series and the version the descriptor spells;
this module turns it into the osinfo short-id the series would give that version, and decides
whether it beats osinfo-db's own best match.
"""

from __future__ import annotations

from dataclasses import dataclass

from treeboot.detect._volpatterns import VolumeHit, VolumePattern, stem
from treeboot.detect.osinfo import OsEntry, OsinfoDB, version_key


@dataclass(frozen=True)
class VolumeNaming:
    """What a hit names: the osinfo short-id (derived the family's way when the database does
    not list the release) and the entry when it does."""

    short_id: str
    entry: OsEntry | None
    distro: str
    name: str | None
    version: str | None
    arch: str | None
    evidence: tuple[str, ...]
    learnt_from: str


def series_of(db: OsinfoDB, pattern: VolumePattern) -> list[OsEntry]:
    return [e for e in db.by_distro(pattern.distro) if stem(e) == pattern.stem]


def name_hit(db: OsinfoDB, hit: VolumeHit) -> VolumeNaming | None:
    p = hit.pattern
    if p.template is not None:  # a rules/volume_ids.toml family osinfo-db lacks
        if hit.version is None:
            return None
        comps = dict(zip(("v0", "v1", "v2"), hit.version.split("."), strict=False))
        short_id = p.template.format(version=hit.version, **comps)
        entry = db.get(short_id)
        name = (p.display or "").format(version=hit.version, **comps) or None
        return VolumeNaming(short_id, entry, p.distro, entry.name if entry else name,
                            hit.version, hit.arch, hit.evidence, p.source)  # fmt: skip
    if hit.version is None:
        entry = db.get(p.source)
        if entry is None:
            return None
        return VolumeNaming(entry.short_id, entry, p.distro, entry.name, entry.version,
                            hit.arch, hit.evidence, p.source)  # fmt: skip
    series = series_of(db, p)
    short_id, known = db.derive_short_id(p.distro, hit.version, series=series)
    entry = db.get(short_id) if known else None
    name = entry.name if entry else db.derive_name(series, hit.version)
    return VolumeNaming(short_id, entry, p.distro, name, hit.version, hit.arch, hit.evidence,
                        p.source)  # fmt: skip


def compatible(a: str | None, b: str | None) -> bool:
    """``9`` and ``9.5``, ``9.0`` and ``9``: one version is the other written shorter."""
    ka, kb = version_key(a), version_key(b)
    if ka is None or kb is None:
        return (a or "").lower() == (b or "").lower()
    while len(ka) > 1 and ka[-1] == 0:
        ka = ka[:-1]
    while len(kb) > 1 and kb[-1] == 0:
        kb = kb[:-1]
    n = min(len(ka), len(kb))
    return ka[:n] == kb[:n]


def prefer_learnt(naming: VolumeNaming | None, exact: OsEntry | None) -> bool:
    """Whether the learnt naming beats osinfo-db's own best (non-placeholder) match.

    The database wins unless it names another release of the same family than the version the
    descriptor spells: osinfo's unanchored ``Fedora-S-dvd-x86_64-37`` also matches ``...-371``.
    """
    if naming is None:
        return False
    if exact is None:
        return True
    if naming.short_id in exact.short_ids or naming.distro != exact.distro:
        return False
    return not compatible(naming.version, exact.version)
