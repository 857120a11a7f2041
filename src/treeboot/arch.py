"""Guest architectures as one StrEnum whose facts are dict lookups (no class per arch).

Values are osinfo/Linux arch names. :meth:`Architecture.from_name` also accepts the
Debian and QEMU spellings (amd64, arm64, ppc64el, i386, ...).

:func:`norm_arch` is the one arch normaliser of treeboot: every spelling found in metadata,
volume descriptors, directory names and on the command line goes through it to the osinfo-db
``<arch>`` name (``i386`` -> ``i686``, ``armhfp`` -> ``armv7l``, ``x86_64_v2`` -> ``x86_64``).
"""

from __future__ import annotations

import platform
from enum import StrEnum
from pathlib import Path

from treeboot.errors import UsageError


class Architecture(StrEnum):
    X86_64 = "x86_64"
    I686 = "i686"
    AARCH64 = "aarch64"
    PPC64LE = "ppc64le"
    S390X = "s390x"
    RISCV64 = "riscv64"

    @classmethod
    def from_name(cls, name: str) -> Architecture:
        """Parse any common spelling; raise UsageError naming the accepted ones."""
        key = norm_arch(name)
        try:
            return cls(_GUEST_ALIASES.get(key, key))
        except ValueError as e:
            accepted = ", ".join(a.value for a in cls)
            raise UsageError(
                f"unknown architecture {name!r}", hint=f"use one of: {accepted}"
            ) from e

    @classmethod
    def native(cls) -> Architecture:
        return cls.from_name(platform.machine())

    def qemu_binary(self) -> str:
        return _QEMU_BINARY[self]

    def machine(self) -> str:
        return _MACHINE[self]

    def default_console(self) -> str:
        """The Linux console device the guest's serial port shows up as."""
        return _CONSOLE[self]

    def firmware(self) -> Path | None:
        """Firmware for booting from disk (phase 2); None means QEMU's built-in default."""
        path = _FIRMWARE.get(self)
        return Path(path) if path else None

    def kernel_format(self) -> str:
        return _KERNEL_FORMAT[self]

    def cpu(self, accel: str) -> str | None:
        """The ``-cpu`` model: the host's under KVM, the richest emulated one under TCG."""
        if accel == "kvm":
            return "host"
        return _TCG_CPU.get(self)

    def device_bus(self) -> str:
        """Suffix of virtio device names: ``virtio-blk-pci`` or ``virtio-blk-ccw``."""
        return "ccw" if self is Architecture.S390X else "pci"

    def panic_device(self) -> str | None:
        """A device that turns a guest kernel panic into a GUEST_PANICKED QMP event."""
        return _PANIC_DEVICE.get(self)

    def debian_name(self) -> str:
        return _DEBIAN_NAME[self]

    def can_use_kvm_on(self, host: Architecture) -> bool:
        return self is host or (self is Architecture.I686 and host is Architecture.X86_64)


# Spellings in media names, metadata, URLs and Debian/RPM/SUSE/BSD arch names -> osinfo-db
# <arch>. Debian volume ids truncate ppc64el to "p64el"; RPM trees write "armhfp" and the
# x86-64 microarchitecture levels ("x86_64_v2").
_SPELLINGS: dict[str, str] = {
    "amd64": "x86_64",
    "x86-64": "x86_64",
    "x64": "x86_64",
    "x86_64_v2": "x86_64",
    "x86_64_v3": "x86_64",
    "x86_64_v4": "x86_64",
    "i386": "i686",
    "i486": "i686",
    "i586": "i686",
    "x86": "i686",
    "arm64": "aarch64",
    "armhf": "armv7l",
    "armhfp": "armv7l",
    "armv7": "armv7l",
    "armv7hl": "armv7l",
    "armv7hnl": "armv7l",
    "armel": "armv6l",
    "ppc64el": "ppc64le",
    "p64el": "ppc64le",
    "loong64": "loongarch64",
    "hppa": "parisc",
    "sparc": "sparc64",
}

# osinfo-db's arch names (the values of <media arch=...>/<tree arch=...>).
OSINFO_ARCHES = frozenset(
    {"x86_64", "i686", "aarch64", "armv7l", "armv6l", "ppc64le", "ppc64", "ppc", "s390x",
     "riscv64", "loongarch64", "mips64el", "ia64", "parisc", "sparc64", "alpha"}
)  # fmt: skip

# Only for the guests treeboot boots: a big-endian ppc64 request runs as ppc64le.
_GUEST_ALIASES = {"ppc64": "ppc64le"}


def norm_arch(name: str) -> str:
    """Any spelling (``amd64``, ``X86_64_V2 ``, ``i586``, ``armhfp``) -> the osinfo arch name;
    an unknown word comes back stripped and lower-cased."""
    key = name.strip().lower()
    return _SPELLINGS.get(key, key)


def osinfo_arch(name: str | None) -> str | None:
    """:func:`norm_arch` when ``name`` is an arch spelling at all, else None (``"docs"``)."""
    if not name:
        return None
    arch = norm_arch(name)
    return arch if arch in OSINFO_ARCHES else None


def arch_spellings(arch: str) -> tuple[str, ...]:
    """Every spelling :func:`norm_arch` maps to ``arch``, the osinfo name first."""
    return (arch, *(k for k, v in _SPELLINGS.items() if v == arch))

_QEMU_BINARY = {
    Architecture.X86_64: "qemu-system-x86_64",
    Architecture.I686: "qemu-system-i386",
    Architecture.AARCH64: "qemu-system-aarch64",
    Architecture.PPC64LE: "qemu-system-ppc64",
    Architecture.S390X: "qemu-system-s390x",
    Architecture.RISCV64: "qemu-system-riscv64",
}

_MACHINE = {
    Architecture.X86_64: "q35",
    Architecture.I686: "q35",
    Architecture.AARCH64: "virt",
    Architecture.PPC64LE: "pseries",
    Architecture.S390X: "s390-ccw-virtio",
    Architecture.RISCV64: "virt",
}

_CONSOLE = {
    Architecture.X86_64: "ttyS0",
    Architecture.I686: "ttyS0",
    Architecture.AARCH64: "ttyAMA0",
    Architecture.PPC64LE: "hvc0",
    Architecture.S390X: "ttysclp0",
    Architecture.RISCV64: "ttyS0",
}

# x86 boots installed disks with SeaBIOS (QEMU's default); the others need UEFI/OpenSBI.
_FIRMWARE = {
    Architecture.AARCH64: "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
    Architecture.RISCV64: "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin",
}

_KERNEL_FORMAT = {
    Architecture.X86_64: "bzImage",
    Architecture.I686: "bzImage",
    Architecture.AARCH64: "Image",
    Architecture.PPC64LE: "vmlinux",
    Architecture.S390X: "image",
    Architecture.RISCV64: "Image",
}

_TCG_CPU = {
    Architecture.X86_64: "max",
    Architecture.I686: "max",
    Architecture.AARCH64: "max",
    Architecture.PPC64LE: "power9",
    Architecture.S390X: "max",
    Architecture.RISCV64: "rv64",
}

_PANIC_DEVICE = {
    Architecture.X86_64: "pvpanic",
    Architecture.I686: "pvpanic",
    Architecture.AARCH64: "pvpanic-pci",
    Architecture.RISCV64: "pvpanic-pci",
    # pseries and s390x report guest panics to QEMU without an extra device.
}

_DEBIAN_NAME = {
    Architecture.X86_64: "amd64",
    Architecture.I686: "i386",
    Architecture.AARCH64: "arm64",
    Architecture.PPC64LE: "ppc64el",
    Architecture.S390X: "s390x",
    Architecture.RISCV64: "riscv64",
}
