"""osinfo-db (the ecosystem's OS database) as a compact, cached index of frozen dataclasses.

Reads the XML that Debian's ``osinfo-db`` package installs under ``/usr/share/osinfo``
(or ``$OSINFO_DB_PATH``). Only what treeboot needs is kept: tree rules (treeinfo matching and
kernel/initrd paths), media rules (ISO volume descriptor regexes and kernel/initrd paths) and
resource minimums.

CONTRACT (detect.py, isodetect.py and the install pipeline rely on it):

    db = load_osinfo()                      # cached; rebuilt when the XML changes
    db.version                              # e.g. "20221203"
    db.entries                              # tuple[OsEntry, ...]
    db.get(short_id) -> OsEntry | None
    db.by_distro(distro) -> list[OsEntry]   # e.g. "fedora", "debian", "rhel", "opensuse"
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TreeRule:
    arch: str  # osinfo arch: x86_64, aarch64, i686, ppc64le, s390x, armv7l, riscv64, "all"
    treeinfo_family: str | None  # regex matched against .treeinfo [general]/[release] family
    treeinfo_variant: str | None
    treeinfo_version: str | None  # regex
    treeinfo_arch: str | None
    kernel: str | None  # relative to the tree
    initrd: str | None
    url: str | None  # the tree URL osinfo records (mirror layout hint)


@dataclass(frozen=True)
class MediaRule:
    arch: str
    volume_id: str | None  # regex, as osinfo-db writes it
    system_id: str | None
    publisher_id: str | None
    application_id: str | None
    volume_size: int | None
    kernel: str | None
    initrd: str | None
    live: bool = False
    installer_script: bool = True
    variant: str | None = None


@dataclass(frozen=True)
class Resources:
    arch: str
    min_ram_mib: int | None = None
    min_vcpus: int | None = None
    min_storage_gib: float | None = None
    rec_ram_mib: int | None = None
    rec_vcpus: int | None = None
    rec_storage_gib: float | None = None


@dataclass(frozen=True)
class OsEntry:
    short_id: str  # first <short-id>
    short_ids: tuple[str, ...]  # all of them
    id: str  # URI, e.g. http://fedoraproject.org/fedora/37
    name: str
    version: str | None
    distro: str | None  # <distro>: fedora, rhel, centos, debian, ubuntu, opensuse, sles, ...
    family: str | None  # <family>: linux, winnt, freebsd, ...
    vendor: str | None
    release_date: str | None
    eol_date: str | None
    trees: tuple[TreeRule, ...] = ()
    medias: tuple[MediaRule, ...] = ()
    resources: tuple[Resources, ...] = field(default=())
    derives_from: str | None = None

    def resources_for(self, arch: str) -> Resources | None:
        for r in self.resources:
            if r.arch == arch:
                return r
        for r in self.resources:
            if r.arch == "all":
                return r
        return None


# IMPLEMENTATION (OsinfoDB, load_osinfo, index cache) is written by the detection helper.
