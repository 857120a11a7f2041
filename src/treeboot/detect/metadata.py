"""Parsers for the small metadata files install trees carry (everything but ``.treeinfo``).

Each parser is a pure function from text to a frozen dataclass (or None when the text is not
that format). None of them trusts the input: unknown lines are skipped, paths are checked by
the caller before use. Formats:

* Debian/Ubuntu d-i ``MANIFEST``: ``<path>  -- <description>`` per line;
* ``SHA256SUMS`` / ``sha256sum.txt``: ``<hex>  ./<path>`` (coreutils format, ``*`` for binary);
* d-i netboot ``version.info``: ``Debian version:  12 (bookworm)``, ``Installer build: ...``;
* ``.disk/info`` of Debian/Ubuntu media: ``Debian GNU/Linux 12.5.0 "Bookworm" - Official amd64
  NETINST ...``, ``Ubuntu-Server 24.04 LTS "Noble Numbat" - Release amd64 (20240423)``;
* SUSE ``content`` (``KEY value`` lines, ``HASH SHA256 <hex>  <path>``) and ``media.1/products``
  (``<dir> <product> <version>``);
* Mageia ``VERSION``: ``Mageia 8 Official-x86_64-Download 20210225 18:41``;
* Alpine ``.alpine-release`` and archiso ``arch/version``: one version line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def decode(data: bytes) -> str:
    """Metadata text: UTF-8, with undecodable bytes replaced (old SUSE files are Latin-1)."""
    return data.decode("utf-8", errors="replace")


def is_text(data: bytes) -> bool:
    """False for binary content (NUL bytes): an error page or a hostile file, not metadata."""
    return b"\0" not in data


# -- Debian / Ubuntu installer trees ---------------------------------------------------------


def parse_manifest(text: str) -> dict[str, str]:
    """d-i ``MANIFEST``: image path -> description. Empty if no line has the ``--`` form."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        path, sep, desc = line.partition(" -- ")
        path = path.strip()
        if sep and path and " " not in path:
            out[path] = desc.strip()
    return out


def parse_sha256sums(text: str) -> dict[str, str]:
    """``<hex>  [./|*]path`` lines -> ``{path: hex}`` (lower-case hex, ``./`` dropped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not _HEX64.fullmatch(parts[0]):
            continue
        path = parts[1].lstrip("*")
        while path.startswith("./"):
            path = path[2:]
        if path:
            out[path] = parts[0].lower()
    return out


@dataclass(frozen=True)
class VersionInfo:
    """d-i netboot ``version.info``."""

    distro: str  # lower-case first word: "debian", "ubuntu"
    version: str  # "12"
    codename: str | None  # "bookworm"
    build: str | None  # "20230607+deb12u15"


_VERSION_INFO = re.compile(
    r"^(?P<distro>\w+) version:\s*(?P<version>[\w.~+-]+)(?:\s*\((?P<codename>[\w-]+)\))?", re.M
)


def parse_version_info(text: str) -> VersionInfo | None:
    m = _VERSION_INFO.search(text)
    if not m:
        return None
    build = re.search(r"^Installer build:\s*(\S+)", text, re.M)
    return VersionInfo(
        distro=m["distro"].lower(),
        version=m["version"],
        codename=m["codename"].lower() if m["codename"] else None,
        build=build.group(1) if build else None,
    )


@dataclass(frozen=True)
class DiskInfo:
    """``.disk/info`` of a Debian/Ubuntu (or derivative) medium."""

    name: str  # "Debian GNU/Linux", "Ubuntu-Server", "Ubuntu"
    version: str  # "12.5.0", "24.04", "testing"
    codename: str | None  # "Bookworm", "Noble Numbat"
    words: tuple[str, ...]  # what follows " - ": ("Official", "amd64", "NETINST", ...)
    line: str

    @property
    def first_codename_word(self) -> str | None:
        return self.codename.split()[0].lower() if self.codename else None


_DISK_INFO = re.compile(
    r'^(?P<name>.+?)\s+(?P<version>\S+)(?:\s+LTS)?\s+"(?P<codename>[^"]*)"\s+-\s+(?P<rest>.*)$'
)


def parse_disk_info(text: str) -> DiskInfo | None:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    m = _DISK_INFO.match(line)
    if not m:
        return None
    words = tuple(w.strip("()") for w in m["rest"].split())
    return DiskInfo(m["name"], m["version"], m["codename"] or None, words, line)


# -- SUSE ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuseContent:
    """The parts of a SUSE ``content`` file that identify the product."""

    names: tuple[str, ...]  # product spellings, most specific first (cpe product, NAME, ...)
    version: str | None  # "15.1", "12.3" (service pack as minor), "10.4"
    arches: tuple[str, ...]  # as written: "x86_64", "i586", "s390x"
    label: str | None
    sha256: dict[str, str] = field(default_factory=dict)  # path -> hex (HASH SHA256 lines)
    hashed: frozenset[str] = frozenset()  # every path with a HASH line (any algorithm)


_CPE = re.compile(
    r"cpe:/o:(?P<vendor>[^:,]*):(?P<product>[^:,]*)(?::(?P<version>[^:,]*))?"
    r"(?::(?P<update>[^:,]*))?"
)
_KNOWN_WORDS = re.compile(r"(?i)^(i[3-6]86|x86_64|aarch64|ppc64(le)?|s390x?|ia64|ppc|armv\w+)$")


def _suse_version(fields: dict[str, str], cpe: re.Match[str] | None) -> str | None:
    if cpe and cpe["version"]:
        version = cpe["version"]
        sp = re.fullmatch(r"(?i)sp(\d+)", cpe["update"] or "")
        return f"{version}.{sp.group(1)}" if sp and "." not in version else version
    raw = fields.get("VERSION") or ""
    m = re.match(r"(\d+(?:\.\d+)*)", raw)
    if m:
        version = m.group(1)
        if "." not in version and fields.get("SP_VERSION", "0") not in ("", "0"):
            version += "." + fields["SP_VERSION"]
        return version
    m = re.match(r"(\d+)(?:-SP(\d+))?", fields.get("DISTVERSION", ""), re.I)
    if m:
        return m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
    return None


def _suse_arches(fields: dict[str, str], arch_keys: list[str]) -> tuple[str, ...]:
    words = fields.get("BASEARCHS", "").split()
    if not words and fields.get("REPOID"):
        words = fields["REPOID"].rstrip("/").rsplit("/", 1)[-1].split("-")
    if not words:
        words = arch_keys + fields.get("DEFAULTBASE", "").split()
    return tuple(dict.fromkeys(w for w in words if _KNOWN_WORDS.match(w)))


def parse_suse_content(text: str) -> SuseContent | None:
    fields: dict[str, str] = {}
    arch_keys: list[str] = []
    sha256: dict[str, str] = {}
    hashed: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        value = value.strip()
        if key == "HASH":
            parts = value.split()
            if len(parts) == 3:
                hashed.add(parts[2])
                if parts[0].upper() == "SHA256" and _HEX64.fullmatch(parts[1]):
                    sha256[parts[2]] = parts[1].lower()
        elif key.startswith("ARCH."):
            arch_keys.append(key[5:])
        elif key and key not in ("META", "KEY") and key not in fields:
            fields[key] = value
    cpe = _CPE.search(fields.get("DISTRO", ""))
    label = fields.get("LABEL") or (fields["DISTRO"].split(",", 1)[-1] if cpe else None)
    names = [cpe["product"] if cpe else None, label]
    names += [fields.get(k) for k in ("DISTRIBUTION", "NAME", "PRODUCT", "SHORTLABEL")]
    clean = tuple(dict.fromkeys(n for n in names if n))
    if not clean:
        return None
    return SuseContent(
        names=clean,
        version=_suse_version(fields, cpe),
        arches=_suse_arches(fields, arch_keys),
        label=label,
        sha256=sha256,
        hashed=frozenset(hashed),
    )


@dataclass(frozen=True)
class SuseProduct:
    """One line of ``media.1/products``."""

    path: str
    name: str  # "openSUSE", "SLES15-SP5", "openSUSE-Leap"
    version: str | None  # "15.5" (the "-<release>" suffix dropped)


def parse_suse_products(text: str) -> list[SuseProduct]:
    out: list[SuseProduct] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith("/"):
            continue
        version = parts[2].split("-", 1)[0] if len(parts) > 2 else None
        out.append(SuseProduct(parts[0], parts[1], version or None))
    return out


# -- Mageia, Alpine, Arch -------------------------------------------------------------------


@dataclass(frozen=True)
class MageiaVersion:
    version: str  # "8"
    arch: str | None  # as written: "x86_64", "i586"
    kind: str | None  # "Official", "Devel"


def parse_mageia_version(text: str) -> MageiaVersion | None:
    m = re.match(r"\s*Mageia\s+(\d+(?:\.\d+)?)\s+(\S+)", text)
    if not m:
        return None
    words = m.group(2).split("-")
    arch = next((w for w in words if _KNOWN_WORDS.match(w)), None)
    return MageiaVersion(m.group(1), arch, words[0] if words else None)


def parse_one_version(text: str) -> str | None:
    """``.alpine-release`` (``3.19.1``) or archiso ``arch/version`` (``2024.03.01``)."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return first if re.fullmatch(r"[0-9][0-9A-Za-z._~+-]{0,40}", first) else None
