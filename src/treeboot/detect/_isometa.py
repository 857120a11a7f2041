"""What the metadata files on install media say, as one shape (private to
:mod:`~treeboot.detect.iso`).

Adapts the shared parsers into :class:`MediaFacts`: :mod:`~treeboot.detect.treeinfo` for
``.treeinfo`` (parsing, image selection and osinfo naming), :mod:`~treeboot.detect.metadata`
for ``.disk/info``, SUSE ``content``, ``.alpine-release`` and ``SHA256SUMS``.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

from treeboot.arch import osinfo_arch
from treeboot.detect.metadata import (
    parse_disk_info,
    parse_one_version,
    parse_sha256sums,
    parse_suse_content,
)
from treeboot.detect.osinfo import OsinfoDB
from treeboot.detect.rules import load_rules
from treeboot.detect.treeinfo import OsGuess, guess_os, parse_treeinfo, select_images
from treeboot.errors import MetadataError, TreebootError


@dataclass(frozen=True)
class MediaFacts:
    """What one metadata file says; every field optional."""

    source: str
    distro: str | None = None  # osinfo <distro> spelling: debian, ubuntu, fedora, opensuse...
    name: str | None = None
    version: str | None = None
    arch: str | None = None
    images: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # arch->k,i
    checksums: dict[str, str] = field(default_factory=dict)  # path -> "algo:hex"
    extra: dict[str, str] = field(default_factory=dict)
    os: OsGuess | None = None  # osinfo naming, where the file says enough (.treeinfo)


# Release names as .disk/info and SUSE content write them -> osinfo <distro>.
_DISTRO_NAMES = (
    (re.compile(r"red hat enterprise linux|^rhel", re.I), "rhel"),
    (re.compile(r"centos stream", re.I), "centos-stream"),
    (re.compile(r"centos", re.I), "centos"),
    (re.compile(r"fedora", re.I), "fedora"),
    (re.compile(r"almalinux", re.I), "almalinux"),
    (re.compile(r"rocky", re.I), "rocky"),
    (re.compile(r"oracle", re.I), "ol"),
    (re.compile(r"scientific", re.I), "scientificlinux"),
    (re.compile(r"opensuse", re.I), "opensuse"),
    (re.compile(r"suse linux enterprise|^sles?\b", re.I), "sles"),
    (re.compile(r"debian", re.I), "debian"),
    (re.compile(r"ubuntu", re.I), "ubuntu"),
    (re.compile(r"mageia", re.I), "mageia"),
    (re.compile(r"alpine", re.I), "alpinelinux"),
    (re.compile(r"arch ?linux", re.I), "archlinux"),
)


def distro_of(name: str | None) -> str | None:
    if not name:
        return None
    for pattern, distro in _DISTRO_NAMES:
        if pattern.search(name):
            return distro
    return None


def from_treeinfo(text: str, source: str, *, arch: str | None, db: OsinfoDB) -> MediaFacts:
    """``.treeinfo`` through :mod:`treeboot.detect.treeinfo`; a damaged file says nothing."""
    rules = load_rules()
    try:
        ti = parse_treeinfo(text, source)
    except MetadataError:
        return MediaFacts(source)  # the layouts and the boot loader may still tell
    images: dict[str, tuple[str | None, str | None]] = {}
    with contextlib.suppress(TreebootError):  # no usable [images-*]: other evidence decides
        got, kernel, initrd = select_images(ti, arch, rules, source)
        images[got] = (kernel, initrd)
    own = osinfo_arch(ti.arch)
    guess = guess_os(ti, arch or own, db, rules)
    return MediaFacts(
        source=source,
        distro=guess.distro,
        name=guess.name,
        version=guess.version,
        arch=own,
        images=images,
        checksums=ti.checksums,
        extra={"stage2": ti.stage2} if ti.stage2 else {},
        os=guess,
    )


def from_disk_info(text: str, source: str = ".disk/info") -> MediaFacts:
    """``Debian GNU/Linux 12.4.0 "Bookworm" - Official amd64 NETINST ...`` and Ubuntu's form."""
    info = parse_disk_info(text)
    if info is None:
        line = text.strip().splitlines()[0] if text.strip() else ""
        return MediaFacts(source, distro=distro_of(line), name=line or None)
    arch = next((a for w in info.words if (a := osinfo_arch(w))), None)
    codename = f" ({info.codename})" if info.codename else ""
    extra = {"disk_info": info.line}
    if info.first_codename_word:
        extra["codename"] = info.first_codename_word
    return MediaFacts(
        source=source,
        distro=distro_of(info.name),
        name=f"{info.name} {info.version}{codename}",
        version=info.version,
        arch=arch,
        extra=extra,
    )


def from_suse_content(text: str, source: str = "content") -> MediaFacts:
    """SUSE ``content``: product, version, arch and the ``HASH SHA256`` lines."""
    content = parse_suse_content(text)
    if content is None:
        return MediaFacts(source)
    distro = next((d for n in content.names if (d := distro_of(n))), None)
    arch = next((a for w in content.arches if (a := osinfo_arch(w))), None)
    checksums = {p: f"sha256:{h}" for p, h in content.sha256.items()}
    return MediaFacts(source, distro, content.label, content.version, arch, checksums=checksums)


def from_one_version(text: str, source: str, distro: str, name: str) -> MediaFacts:
    """``.alpine-release`` / archiso ``arch/version``."""
    return MediaFacts(source, distro, name, parse_one_version(text))


def parse_checksum_list(text: str, algo: str) -> dict[str, str]:
    """``<hex>  ./path`` lines -> ``{"path": "algo:hex"}`` (any hex length: md5 too)."""
    if algo == "sha256":
        return {p: f"sha256:{h}" for p, h in parse_sha256sums(text).items()}
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{32,128}", parts[0]):
            continue
        path = parts[1].lstrip("*").strip()
        while path.startswith("./"):
            path = path[2:]
        out[path] = f"{algo}:{parts[0].lower()}"
    return out


# Checksum files media publish, strongest first. Only sha256 is verified by fetch; md5 sums
# (all Ubuntu media publish) are reported in ``extra["other_checksums"]``.
CHECKSUM_FILES = (
    ("sha256sum.txt", "sha256"),
    ("SHA256SUMS", "sha256"),
    ("CHECKSUMS", "sha256"),
    ("md5sum.txt", "md5"),
    ("MD5SUMS", "md5"),
)
