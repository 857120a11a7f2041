"""BootPlan: everything needed to boot one VM, decided before anything starts.

The install pipeline produces a plan; backends render it (``backends/qemu.py`` -> argv) with
pure functions; ``vm.py`` runs it. A plan is saved as ``plan.json`` in the VM's state
directory, so ``to_json``/``from_json`` round-trip exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from treeboot.arch import Architecture, Firmware
from treeboot.model import redact_json


class Phase(StrEnum):
    INSTALL = "install"  # -kernel/-initrd/-append, -no-reboot
    FIRSTBOOT = "firstboot"  # the same machine booting from its disk


class ConsoleMode(StrEnum):
    LOG = "log"  # serial console to the log file only
    ATTACH = "attach"  # also live on the terminal
    NONE = "none"  # log file only, nothing printed


@dataclass(frozen=True)
class DiskPlan:
    path: Path
    format: str = "qcow2"
    size_gib: float | None = None  # set when treeboot creates the image
    create: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class NetworkPlan:
    mode: str = "user"  # "user" (restricted, guestfwd to our server), "none"; libvirt also
    # "network" (a libvirt network named ``source``) and "bridge" (the host bridge ``source``)
    netdev_args: list[str] = field(default_factory=list)  # rendered by treeboot.boot.serve
    mac: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class VMPaths:
    """Files of one VM, all inside its state directory unless the user chose otherwise."""

    state_dir: Path
    console_log: Path
    qmp_socket: Path
    serial_socket: Path
    pidfile: Path
    qemu_log: Path
    trace_file: Path | None = None

    @classmethod
    def in_dir(cls, state_dir: Path, *, console_log: Path | None = None) -> VMPaths:
        return cls(
            state_dir=state_dir,
            console_log=console_log or state_dir / "console.log",
            qmp_socket=state_dir / "qmp.sock",
            serial_socket=state_dir / "console.sock",
            pidfile=state_dir / "qemu.pid",
            qemu_log=state_dir / "qemu.log",
        )


@dataclass(frozen=True)
class BootPlan:
    name: str
    arch: Architecture
    accel: str  # "kvm" | "tcg"
    memory_mib: int
    vcpus: int
    paths: VMPaths
    kernel: Path | None
    initrd: Path | None
    cmdline: list[str]
    disk: DiskPlan | None
    network: NetworkPlan
    cdrom: Path | None = None  # the install ISO, for installers that need their medium
    seed_iso: Path | None = None  # CIDATA volume with the unattended file (install phase)
    machine: str | None = None  # None: arch.machine()
    cpu: str | None = None  # None: arch.cpu(accel)
    cpu_reason: str = ""  # why this model (prepare/cpumodel.py), for --dry-run and explain
    # The firmware both phases run (the installer and the installed system must see the same
    # one). Never None after construction: None means the arch's default firmware.
    firmware: Firmware | None = None
    nvram: Path | None = None  # this VM's copy of the UEFI variable store (pflash unit 1)
    no_reboot: bool = False  # stop after the installer ends (no phase 2)
    trace_boot: bool = False
    boot_form: str | None = None  # "fast: vmlinux-pvh + raw initrd" (prepare/bootform.py)
    extra_qemu_args: list[str] = field(default_factory=list)
    location: str | None = None
    os: str | None = None
    installer: str | None = None
    temp_files: list[Path] = field(default_factory=list)  # removed when the install ends

    def __post_init__(self) -> None:
        if self.firmware is None:
            object.__setattr__(self, "firmware", self.arch.default_firmware())

    @property
    def boot_firmware(self) -> Firmware:
        """``firmware``, typed as never None."""
        return self.firmware or self.arch.default_firmware()

    def to_json(self) -> dict[str, Any]:
        plan = {f.name: _to_json(getattr(self, f.name)) for f in fields(self)}
        return dict(redact_json(plan))  # no password of a URL in plan.json

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BootPlan:
        d = dict(data)
        d["arch"] = Architecture(d["arch"])
        paths = {k: _path(v) for k, v in d["paths"].items()}
        d["paths"] = VMPaths(**paths)  # type: ignore[arg-type]
        for key in ("kernel", "initrd", "nvram", "cdrom", "seed_iso"):
            d[key] = _path(d.get(key))
        # Plans saved before firmware was a Firmware held a path (or None) here.
        fw = d.get("firmware")
        d["firmware"] = Firmware(fw) if fw in set(Firmware) else None
        if d.get("disk") is not None:
            disk = dict(d["disk"])
            disk["path"] = Path(disk["path"])
            d["disk"] = DiskPlan(**disk)
        d["network"] = NetworkPlan(**d["network"])
        d["temp_files"] = [Path(p) for p in d.get("temp_files", [])]
        return cls(**d)


def _path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def _to_json(value: Any) -> Any:
    if isinstance(value, Path | StrEnum):
        return str(value)
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _to_json(getattr(value, f.name)) for f in fields(value)}
    return value
