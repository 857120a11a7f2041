"""Guest architectures as one StrEnum whose facts are dict lookups (no class per arch).

Values are osinfo/Linux arch names. :meth:`Architecture.from_name` also accepts the
Debian and QEMU spellings (amd64, arm64, ppc64el, i386, ...).
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
        key = name.strip().lower()
        arch = _ALIASES.get(key)
        if arch is None:
            try:
                arch = cls(key)
            except ValueError as e:
                accepted = ", ".join(a.value for a in cls)
                raise UsageError(
                    f"unknown architecture {name!r}", hint=f"use one of: {accepted}"
                ) from e
        return arch

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


_ALIASES: dict[str, Architecture] = {
    "amd64": Architecture.X86_64,
    "x86-64": Architecture.X86_64,
    "x64": Architecture.X86_64,
    "i386": Architecture.I686,
    "i486": Architecture.I686,
    "i586": Architecture.I686,
    "x86": Architecture.I686,
    "arm64": Architecture.AARCH64,
    "ppc64el": Architecture.PPC64LE,
    "ppc64": Architecture.PPC64LE,
}

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

# -cpu max under TCG: installers built for x86-64-v2 (RHEL 9) or newer ARMv8 levels refuse
# QEMU's default models; on x86 it measured no extra time (bench/time_to_installer.py).
_TCG_CPU = {
    Architecture.X86_64: "max",
    Architecture.I686: "max",
    # pauth-impdef: emulated QARMA pointer auth made arm64 boots 2.8x the QEMU CPU time
    Architecture.AARCH64: "max,pauth-impdef=on",
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
