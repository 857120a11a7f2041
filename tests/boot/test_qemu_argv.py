"""QEMU argv rendering against golden files (tests/data/golden/<case>.argv, one arg per line).

Regenerate after an intended change: TREEBOOT_UPDATE_GOLDEN=1 pytest tests/test_qemu_argv.py
"""

from __future__ import annotations

import os
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from _paths import GOLDEN
from treeboot.arch import Architecture
from treeboot.boot.backends.qemu import format_argv, quote_cmdline, render_qemu_argv
from treeboot.boot.plan import BootPlan, DiskPlan, NetworkPlan, Phase, VMPaths

STATE = Path("/var/lib/treeboot/vms")
NETDEV = [
    "-netdev",
    "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:python3 -I -S"
    " /usr/lib/treeboot/_relay.py 127.0.0.1 8080",
]


def _plan(name: str, arch: Architecture, **kw: object) -> BootPlan:
    base = BootPlan(
        name=name,
        arch=arch,
        accel="tcg",
        memory_mib=1024,
        vcpus=2,
        paths=VMPaths.in_dir(STATE / name),
        kernel=Path(f"/cache/{name}/linux"),
        initrd=Path(f"/cache/{name}/initrd.gz"),
        cmdline=["console=" + arch.default_console(), "priority=low", "label=a b"],
        disk=DiskPlan(STATE / name / "disk.qcow2", "qcow2", 20.0, create=True),
        network=NetworkPlan("user", list(NETDEV)),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


CASES: dict[str, tuple[BootPlan, Phase]] = {
    "x86_64-install": (_plan("deb", Architecture.X86_64), Phase.INSTALL),
    "x86_64-firstboot": (_plan("deb", Architecture.X86_64), Phase.FIRSTBOOT),
    "x86_64-kvm-nodisk-nonet": (
        _plan("kvm", Architecture.X86_64, accel="kvm", disk=None, network=NetworkPlan("none")),
        Phase.INSTALL,
    ),
    "x86_64-trace-media": (
        _plan(
            "iso,comma",
            Architecture.X86_64,
            trace_boot=True,
            paths=replace(VMPaths.in_dir(STATE / "iso"), trace_file=STATE / "iso/fw_cfg.trace"),
            cdrom=Path("/srv/isos/ubuntu,24.04.iso"),
            seed_iso=STATE / "iso" / "seed.iso",
            memory_mib=4096,
        ),
        Phase.INSTALL,
    ),
    "aarch64-install": (_plan("arm", Architecture.AARCH64), Phase.INSTALL),
    "aarch64-firstboot": (_plan("arm", Architecture.AARCH64), Phase.FIRSTBOOT),
    "s390x-install": (_plan("z", Architecture.S390X), Phase.INSTALL),
    "ppc64le-install": (_plan("power", Architecture.PPC64LE), Phase.INSTALL),
    "riscv64-firstboot": (_plan("rv", Architecture.RISCV64), Phase.FIRSTBOOT),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_argv_matches_golden(case: str) -> None:
    plan, phase = CASES[case]
    argv = render_qemu_argv(plan, phase)
    path = GOLDEN / f"{case}.argv"
    text = "\n".join(argv) + "\n"
    if os.environ.get("TREEBOOT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.read_text() == text


def test_install_phase_boots_kernel_without_reboot() -> None:
    plan, _ = CASES["x86_64-install"]
    argv = render_qemu_argv(plan, Phase.INSTALL)
    assert argv[argv.index("-kernel") + 1] == "/cache/deb/linux"
    assert argv[argv.index("-append") + 1] == 'console=ttyS0 priority=low label="a b"'
    assert "-no-reboot" in argv
    assert "cache=unsafe" in argv[argv.index("-drive") + 1]


def test_firstboot_is_install_minus_kernel_and_no_reboot() -> None:
    plan, _ = CASES["x86_64-install"]
    install = render_qemu_argv(plan, Phase.INSTALL)
    firstboot = render_qemu_argv(plan, Phase.FIRSTBOOT)
    for opt in ("-kernel", "-initrd", "-append", "-no-reboot"):
        assert opt not in firstboot
    # Same devices: every -device/-netdev/-chardev of the install phase is still there.
    def devices(argv: list[str]) -> list[str]:
        return [argv[i + 1] for i, a in enumerate(argv) if a in ("-device", "-netdev", "-chardev")]

    assert devices(install) == devices(firstboot)


def test_fast_guest_defaults() -> None:
    argv = render_qemu_argv(*CASES["x86_64-install"])
    assert {"-nodefaults", "-no-user-config"} <= set(argv)
    assert argv[argv.index("-display") + 1] == "none"
    assert argv[argv.index("-machine") + 1] == "q35"
    assert argv[argv.index("-smp") + 1] == "2"
    assert "virtio-net-pci,netdev=net0,romfile=" in argv
    assert "virtio-blk-pci,drive=disk0,bootindex=1" in argv
    assert "pvpanic" in argv
    assert "-vga" not in argv and "-serial" in argv


def test_commas_in_paths_are_escaped() -> None:
    argv = render_qemu_argv(*CASES["x86_64-trace-media"])
    drive = next(a for a in argv if "cdrom0" in a and a.startswith("if="))
    assert "file=/srv/isos/ubuntu,,24.04.iso," in drive
    assert argv[argv.index("-name") + 1].startswith("iso,,comma,process=")


def test_quote_cmdline() -> None:
    assert quote_cmdline(["a", "b=c d", "x y"]) == 'a b="c d" "x y"'
    assert quote_cmdline([]) == ""


def test_format_argv_round_trips_through_a_shell() -> None:
    argv = render_qemu_argv(*CASES["x86_64-trace-media"])
    assert shlex.split(format_argv(argv).replace("\\\n", " ")) == argv
