"""What one network client boots: the installer (URLs + cmdline) or its local disk."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BootEntry:
    """An installer to boot over HTTP. ``cmdline`` stays a list; each loader quotes it."""

    label: str
    kernel_url: str
    initrd_url: str
    cmdline: tuple[str, ...]


@dataclass(frozen=True)
class LocalBoot:
    """Boot the local disk (the install is done, or ``--max-boots`` is used up)."""

    reason: str


Choice = BootEntry | LocalBoot
