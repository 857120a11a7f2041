"""Guest architectures as one StrEnum whose facts are lookups in ``rules/machines.toml``.

Values are osinfo/Linux arch names. :meth:`Architecture.from_name` also accepts the
Debian and QEMU spellings (amd64, arm64, armhf, ppc64el, i386, ...). The machine facts
(QEMU binary and package, machine type, console, firmware, device models) are data, loaded
once into frozen dataclasses; there is no class per arch.

:func:`norm_arch` is the one arch normaliser of treeboot: every spelling found in metadata,
volume descriptors, directory names and on the command line goes through it to the osinfo-db
``<arch>`` name (``i386`` -> ``i686``, ``armhfp`` -> ``armv7l``, ``x86_64_v2`` -> ``x86_64``).
"""

from __future__ import annotations

import functools
import platform
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from treeboot.errors import UsageError


class Firmware(StrEnum):
    """What runs first in the guest, and so who loads and starts the kernel."""

    SEABIOS = "seabios"  # x86 BIOS: its linuxboot option ROM reads the kernel from fw_cfg
    OVMF = "ovmf"  # x86 UEFI: loads the kernel from fw_cfg, starts it through its EFI stub
    AAVMF = "aavmf"  # arm64 UEFI, the same for arm64 kernels
    AAVMF32 = "aavmf32"  # 32-bit arm UEFI
    SLOF = "slof"  # pseries Open Firmware: QEMU places the ELF kernel in RAM, SLOF starts it
    S390_CCW = "s390-ccw"  # s390x IPL firmware
    OPENSBI = "opensbi"  # riscv64 SBI firmware: jumps to the kernel QEMU placed in RAM
    NONE = "none"  # QEMU loads the kernel itself and jumps to it (MIPS Malta)


class BootKind(StrEnum):
    """``--boot``: the firmware family, where a machine has more than one."""

    BIOS = "bios"  # the machine's own non-UEFI firmware (SeaBIOS, SLOF, OpenSBI, s390-ccw)
    UEFI = "uefi"
    DIRECT = "direct"  # no firmware: QEMU loads the kernel and jumps to it itself


@dataclass(frozen=True)
class FirmwareInfo:
    name: Firmware
    kind: BootKind
    package: str
    boots_disk: bool
    code: Path | None = None  # pflash code image (UEFI)
    vars: Path | None = None  # pflash variable store template, copied per VM
    bios: Path | None = None  # -bios image (None: QEMU's built-in default)
    disk_kernel: Path | None = None  # phase 2 boot loader loaded with -kernel (riscv64)
    disk_kernel_package: str = ""


@dataclass(frozen=True)
class Machine:
    arch: str
    debian: str
    qemu: str
    package: str
    machine: str
    tcg_cpu: str
    console: str
    kernel_format: str
    bus: str
    disk: str
    nic: str
    panic: str
    firmware: tuple[Firmware, ...]
    max_vcpus: int = 0  # 0: no limit of its own
    tcg_kernel_args: tuple[str, ...] = ()  # added to the kernel command line under TCG


class Architecture(StrEnum):
    X86_64 = "x86_64"
    I686 = "i686"
    AARCH64 = "aarch64"
    ARMV7L = "armv7l"
    PPC64LE = "ppc64le"
    MIPS64EL = "mips64el"
    S390X = "s390x"
    RISCV64 = "riscv64"

    @classmethod
    def from_name(cls, name: str) -> Architecture:
        """Parse any common spelling (through :func:`norm_arch`); raise UsageError naming the
        accepted ones."""
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

    def facts(self) -> Machine:
        """This arch's row of ``rules/machines.toml``."""
        return load_machines()[0][self.value]

    def qemu_binary(self) -> str:
        return self.facts().qemu

    def qemu_package(self) -> str:
        return self.facts().package

    def machine(self) -> str:
        return self.facts().machine

    def default_console(self) -> str:
        """The Linux console device the guest's serial port shows up as."""
        return self.facts().console

    def firmwares(self) -> tuple[Firmware, ...]:
        """The firmwares this machine can boot with, the default first."""
        return self.facts().firmware

    def default_firmware(self, boot: BootKind | None = None) -> Firmware:
        """The firmware for ``--boot`` (None: the arch's default); UsageError if it has none."""
        choices = self.firmwares()
        if boot is None:
            return choices[0]
        for fw in choices:
            if firmware_info(fw).kind is boot:
                return fw
        have = ", ".join(sorted({firmware_info(f).kind.value for f in choices}))
        raise UsageError(
            f"--boot {boot}: {self.value} guests have no {boot} firmware here",
            hint=f"use --boot {have}" if have else None,
        )

    def kernel_format(self) -> str:
        return self.facts().kernel_format

    def cpu(self, accel: str) -> str | None:
        """The ``-cpu`` model: the host's under KVM, the richest emulated one under TCG."""
        if accel == "kvm":
            return "host"
        return self.facts().tcg_cpu or None

    def device_bus(self) -> str:
        """Suffix of virtio device names: ``virtio-blk-pci`` or ``virtio-blk-ccw``."""
        return self.facts().bus

    def disk_device(self) -> str:
        return self.facts().disk

    def nic_device(self) -> str:
        return self.facts().nic

    def panic_device(self) -> str | None:
        """A device that turns a guest kernel panic into a GUEST_PANICKED QMP event."""
        return self.facts().panic or None

    def debian_name(self) -> str:
        return self.facts().debian

    def can_use_kvm_on(self, host: Architecture) -> bool:
        return self is host or (self is Architecture.I686 and host is Architecture.X86_64)


def firmware_info(fw: Firmware) -> FirmwareInfo:
    return load_machines()[1][fw]


@functools.cache
def load_machines() -> tuple[dict[str, Machine], dict[Firmware, FirmwareInfo]]:
    """Parse ``rules/machines.toml`` (packaged with treeboot) into frozen dataclasses."""
    # The package's own file (treeboot is never imported from a zip): importlib.resources
    # would cost 9 ms of import on the way to QEMU's start.
    text = (Path(__file__).parent / "rules" / "machines.toml").read_text("utf-8")
    data = tomllib.loads(text)
    firmware = {Firmware(k): _firmware(Firmware(k), v) for k, v in data["firmware"].items()}
    machines = {
        arch: Machine(
            arch=arch,
            **{
                **row,
                "firmware": tuple(Firmware(f) for f in row["firmware"]),
                "tcg_kernel_args": tuple(row.get("tcg_kernel_args", ())),
            },
        )
        for arch, row in data["arch"].items()
    }
    return machines, firmware


def _firmware(name: Firmware, row: dict[str, Any]) -> FirmwareInfo:
    paths = {k: Path(row[k]) for k in ("code", "vars", "bios", "disk_kernel") if row.get(k)}
    return FirmwareInfo(
        name=name,
        kind=BootKind(row["kind"]),
        package=row["package"],
        boots_disk=row["boots_disk"],
        disk_kernel_package=row.get("disk_kernel_package", ""),
        **paths,
    )



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
    "arm": "armv7l",
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
_GUEST_ALIASES = {"ppc64": "ppc64le", "mips64": "mips64el"}


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
