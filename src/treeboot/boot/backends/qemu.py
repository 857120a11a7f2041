"""Render a BootPlan into a QEMU argv. Pure functions only; ``vm.py`` runs the result.

Guest defaults are chosen for speed first: no video device (``-nodefaults``, ``-display
none``), q35 on x86, virtio disk and network without option ROMs, the serial console on a
chardev that also writes the log file, a QMP socket to watch the run, and ``pvpanic`` so a
kernel panic becomes a QMP event. Measured: the Debian installer reaches "Select a language"
in ~17.5 s under TCG with 2 vCPUs/q35/no video vs ~21 s with QEMU's defaults.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from treeboot.arch import Architecture, firmware_info
from treeboot.boot.plan import BootPlan, Phase
from treeboot.boot.tracing import qemu_trace_args
from treeboot.prepare.cmdline import join_cmdline


def render_qemu_argv(plan: BootPlan, phase: Phase = Phase.INSTALL) -> list[str]:
    """The complete argv (binary name first, not resolved on PATH) for one phase."""
    return [
        plan.arch.qemu_binary(),
        *base_args(plan),
        *machine_args(plan),
        *firmware_args(plan, phase),
        *kernel_args(plan, phase),
        *disk_args(plan, phase),
        *media_args(plan, phase),
        *network_args(plan),
        *serial_args(plan),
        *qmp_args(plan),
        *device_args(plan),
        *trace_args(plan),
        *reboot_args(phase),
        *plan.extra_qemu_args,
    ]


def quote_cmdline(args: Sequence[str]) -> str:
    """Join kernel arguments for ``-append`` (``key="a b"`` for values with spaces)."""
    return join_cmdline(args)


def _opt(value: object) -> str:
    """Escape a value inside a QEMU ``key=value,...`` option string (commas are doubled)."""
    return str(value).replace(",", ",,")


def base_args(plan: BootPlan) -> list[str]:
    return [
        "-name", f"{_opt(plan.name)},process=treeboot-{_opt(plan.name)}",
        "-no-user-config",
        "-nodefaults",
        "-display", "none",
        "-m", str(plan.memory_mib),
        "-smp", str(plan.vcpus),
    ]  # fmt: skip


def machine_args(plan: BootPlan) -> list[str]:
    args = ["-machine", plan.machine or plan.arch.machine(), "-accel", plan.accel]
    cpu = plan.cpu or plan.arch.cpu(plan.accel)
    if cpu:
        args += ["-cpu", cpu]
    return args


def firmware_args(plan: BootPlan, phase: Phase) -> list[str]:
    """The same firmware in both phases: UEFI as pflash code + this VM's variable store (as
    virt-install does), a ``-bios`` image, or nothing for QEMU's built-in default."""
    info = firmware_info(plan.boot_firmware)
    if info.code is not None:
        nvram = plan.nvram or plan.paths.state_dir / "nvram.fd"
        return [
            "-drive", f"if=pflash,format=raw,unit=0,file={_opt(info.code)},readonly=on",
            "-drive", f"if=pflash,format=raw,unit=1,file={_opt(nvram)}",
        ]  # fmt: skip
    return ["-bios", str(info.bios)] if info.bios else []


def kernel_args(plan: BootPlan, phase: Phase) -> list[str]:
    if phase is not Phase.INSTALL:
        # Firmware that cannot read a disk runs a boot loader that can (U-Boot on riscv64).
        loader = firmware_info(plan.boot_firmware).disk_kernel
        return ["-kernel", str(loader)] if loader else []
    if plan.kernel is None:
        return []
    args = ["-kernel", str(plan.kernel)]
    if plan.initrd is not None:
        args += ["-initrd", str(plan.initrd)]
    if plan.cmdline:
        args += ["-append", quote_cmdline(plan.cmdline)]
    return args


def disk_args(plan: BootPlan, phase: Phase) -> list[str]:
    if plan.disk is None:
        return []
    # The installer's writes are redone if anything fails, so its flushes can be skipped.
    cache = "unsafe" if phase is Phase.INSTALL else "writeback"
    drive = f"if=none,id=disk0,file={_opt(plan.disk.path)},format={plan.disk.format}"
    return [
        "-drive", f"{drive},cache={cache},discard=unmap",
        "-device", f"{plan.arch.disk_device()},drive=disk0,bootindex=1",
    ]  # fmt: skip


def media_args(plan: BootPlan, phase: Phase) -> list[str]:
    """The install ISO as a CD-ROM, and the CIDATA seed volume as a read-only virtio disk."""
    args: list[str] = []
    if plan.cdrom is not None:
        drive = f"if=none,id=cdrom0,file={_opt(plan.cdrom)},format=raw,media=cdrom,readonly=on"
        if plan.arch in (Architecture.X86_64, Architecture.I686):
            args += ["-drive", drive, "-device", "ide-cd,drive=cdrom0,bus=ide.1"]
        else:
            bus = plan.arch.device_bus()
            args += ["-drive", drive, "-device", f"virtio-scsi-{bus},id=scsi0",
                     "-device", "scsi-cd,drive=cdrom0,bus=scsi0.0"]  # fmt: skip
    if plan.seed_iso is not None and phase is Phase.INSTALL:
        drive = f"if=none,id=seed0,file={_opt(plan.seed_iso)},format=raw,readonly=on"
        args += ["-drive", drive, "-device", f"virtio-blk-{plan.arch.device_bus()},drive=seed0"]
    return args


def network_args(plan: BootPlan) -> list[str]:
    # The installer fetches the rest of itself from the tree over this (restricted) network.
    net = plan.network
    if net.mode == "none" or not net.netdev_args:
        return []
    args = list(net.netdev_args)
    if "-device" in args or "-nic" in args:
        return args
    netdev = next(a for a in args if a.startswith("user") or "id=" in a)
    netdev_id = next(p[3:] for p in netdev.split(",") if p.startswith("id="))
    device = f"{plan.arch.nic_device()},netdev={netdev_id}"
    if plan.arch.device_bus() == "pci":
        device += ",romfile="  # no iPXE option ROM: we never boot from the network
    if net.mac:
        device += f",mac={net.mac}"
    return [*args, "-device", device]


def serial_args(plan: BootPlan) -> list[str]:
    p = plan.paths
    chardev = (
        f"socket,id=serial0,path={_opt(p.serial_socket)},server=on,wait=off,"
        f"logfile={_opt(p.console_log)},logappend=on"
    )
    return ["-chardev", chardev, "-serial", "chardev:serial0"]


def qmp_args(plan: BootPlan) -> list[str]:
    chardev = f"socket,id=qmp,path={_opt(plan.paths.qmp_socket)},server=on,wait=off"
    return ["-chardev", chardev, "-mon", "chardev=qmp,mode=control"]


def device_args(plan: BootPlan) -> list[str]:
    args: list[str] = []
    panic = plan.arch.panic_device()
    # pvpanic: a guest panic becomes a QMP event (exit code 10) instead of a hang until --wait.
    if panic:
        args += ["-device", panic]
    # Installers generate keys and seed TLS; without an RNG device they can stall on entropy.
    # Neither device measured a cost under TCG (bench/time_to_installer.py: QEMU CPU to the
    # Debian prompt 23.7-25.2 s without one vs 22.9-26.0 s with both, within the noise).
    args += ["-device", f"virtio-rng-{plan.arch.device_bus()}"]
    return args


def trace_args(plan: BootPlan) -> list[str]:
    if not plan.trace_boot or plan.paths.trace_file is None:
        return []
    return qemu_trace_args(plan.paths.trace_file)


def reboot_args(phase: Phase) -> list[str]:
    # A reboot ends the install phase: QEMU exits and treeboot boots the disk (phase 2).
    return ["-no-reboot"] if phase is Phase.INSTALL else []


def format_argv(argv: Sequence[str]) -> str:
    """The argv as one copy-pasteable shell command, one option per line."""
    lines: list[str] = [shlex.quote(argv[0])]
    for arg in argv[1:]:
        if arg.startswith("-") or len(lines) == 1:
            lines.append(shlex.quote(arg))
        else:
            lines[-1] += " " + shlex.quote(arg)
    return " \\\n    ".join(lines)
