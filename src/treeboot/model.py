"""The data that flows through the pipeline: identification -> fetched artifacts -> plan.

These are plain frozen dataclasses; ``to_json()`` gives the stable JSON contract of the CLI.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s@:\"']*):[^/\s@\"']*@")


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (messages, JSON)."""
    return _USERINFO.sub(r"\1:***@", text) if "@" in text else text


def redact_json(obj: Any) -> Any:
    """A JSON-able value with :func:`redact_text` applied to every string in it."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_json(v) for v in obj]
    return obj


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: what is stored or shown of a URL."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # malformed (a bad port, "[::1"): mask what looks like a password
        return re.sub(r"^([^:/?#]+://[^/?#:@]*):[^/?#@]*@", r"\1:***@", url)
    netloc = f"{parts.username}:***@{parts.hostname}{port}"
    return parts._replace(netloc=netloc).geturl()


class Media(StrEnum):
    TREE = "tree"
    ISO = "iso"


class Verified(StrEnum):
    """How strongly an artifact is tied to something the publisher vouches for."""

    SIGNED_CHAIN = "signed-chain"  # gpg-signed Release -> SHA256SUMS -> file
    SHA256 = "sha256"  # checksum published by the tree (or pinned by the user)
    NONE = "none"


@dataclass(frozen=True)
class Identification:
    """What a location is. ``kernel``/``initrd`` are paths relative to the location.

    JSON keys (stable contract): location, media, os, family, name, version, arch, installer,
    kernel, initrd, checksums, evidence, known_to_database, needs, boot_args, verified.
    """

    location: str
    media: Media
    os: str | None  # osinfo short-id ("debian12"), derived when newer than the database
    family: str | None  # distro family as osinfo names it ("debian", "fedora", "rhel", ...)
    name: str | None  # human name ("Debian 12 (bookworm)")
    version: str | None
    arch: str | None  # osinfo/Linux arch name: x86_64, aarch64, ppc64le, s390x, riscv64, i686
    installer: str | None  # anaconda, debian-installer, linuxrc, subiquity, archiso, alpine, ...
    kernel: str | None
    initrd: str | None
    checksums: dict[str, str] = field(default_factory=dict)  # path -> "sha256:<hex>"
    evidence: list[str] = field(default_factory=list)  # metadata files the decision used
    known_to_database: bool = False
    needs: list[str] = field(default_factory=list)  # e.g. ["repo-url"], ["cdrom"]
    boot_args: list[str] = field(default_factory=list)  # args the medium's own loader passes
    verified: Verified = Verified.NONE  # strongest verification available for the checksums
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. iso volume descriptor, suite

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["location"] = redact_url(self.location)
        d["media"] = str(self.media)
        d["verified"] = str(self.verified)
        return dict(redact_json(d))  # a URL in extra (the signed chain's reason...) too


@dataclass(frozen=True)
class FetchedArtifact:
    role: str  # "kernel" | "initrd"
    source: str  # path relative to the location
    path: Path  # local file in the cache (or --dest)
    size: int
    sha256: str
    from_cache: bool
    bytes_downloaded: int
    verified: Verified


@dataclass(frozen=True)
class FetchResult:
    identification: Identification
    kernel: FetchedArtifact
    initrd: FetchedArtifact

    @property
    def bytes_downloaded(self) -> int:
        return self.kernel.bytes_downloaded + self.initrd.bytes_downloaded

    @property
    def from_cache(self) -> bool:
        return self.kernel.from_cache and self.initrd.from_cache

    @property
    def verified(self) -> Verified:
        order = [Verified.NONE, Verified.SHA256, Verified.SIGNED_CHAIN]
        return min(self.kernel.verified, self.initrd.verified, key=order.index)

    def to_json(self) -> dict[str, Any]:
        return {
            "location": redact_url(self.identification.location),
            "os": self.identification.os,
            "arch": self.identification.arch,
            "kernel": str(self.kernel.path),
            "initrd": str(self.initrd.path),
            "bytes_downloaded": self.bytes_downloaded,
            "from_cache": self.from_cache,
            "verified": str(self.verified),
            "artifacts": {
                a.role: {
                    "source": a.source,
                    "path": str(a.path),
                    "size": a.size,
                    "sha256": a.sha256,
                    "from_cache": a.from_cache,
                    "bytes_downloaded": a.bytes_downloaded,
                    "verified": str(a.verified),
                }
                for a in (self.kernel, self.initrd)
            },
        }
