"""Every architecture Debian 12 ships a netboot installer for, booted for real under TCG
through ``treeboot install`` from a local mirror-layout tree (``treeboot.devtree``), until the
installer's first prompt shows on the serial console. x86_64 once under SeaBIOS, once under
OVMF (direct kernel boot through the EFI stub).

Each case prints its time to the prompt (``pytest -s``); nothing asserts on time. The
machine-facts table and the firmware of each plan are checked on the argv QEMU really ran.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from _vm_helpers import Reaper, pid_gone, run_treeboot, state_dir, vm_reaper
from treeboot.arch import Architecture
from treeboot.devtree import DEBIAN_ARCHES, DI_IMAGES, build_debian_tree

__all__ = ["vm_reaper"]

PROMPT = "Select a language"
WAIT = "600"  # a shared, loaded 2-core machine: generous, never a measure


# (debian arch, --boot or None, expected console, expected firmware in the plan, a marker
# of that firmware's code in the argv or None)
CASES = {
    "amd64-bios": ("amd64", "bios", "ttyS0", "seabios", None),
    "amd64-uefi": ("amd64", "uefi", "ttyS0", "ovmf", "OVMF_CODE_4M.fd"),
    "i386": ("i386", None, "ttyS0", "seabios", None),
    "arm64": ("arm64", None, "ttyAMA0", "aavmf", "AAVMF_CODE.fd"),
    "armhf": ("armhf", None, "ttyAMA0", "aavmf32", "AAVMF32_CODE.fd"),
    "ppc64el": ("ppc64el", None, "hvc0", "slof", None),
    "mips64el": ("mips64el", None, "ttyS0", "none", None),
}


def _have(debarch: str) -> bool:
    arch = Architecture.from_name(DEBIAN_ARCHES[debarch])
    return (DI_IMAGES / debarch).is_dir() and shutil.which(arch.qemu_binary()) is not None


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_installer_reaches_first_prompt(case: str, tmp_path: Path, vm_reaper: Reaper) -> None:
    debarch, boot, console, firmware, code = CASES[case]
    if not _have(debarch):
        pytest.skip(f"needs debian-installer-12-netboot-{debarch} and its qemu-system package")
    tree = build_debian_tree(tmp_path, debarch)
    name = vm_reaper.vm(f"arch-{case}-{tmp_path.name[-6:]}")
    boot_args = ["--boot", boot] if boot else []
    start = time.monotonic()
    proc = run_treeboot("install", str(tree), "--name", name, "--accel", "tcg", *boot_args,
                        "--disk", "none", "--wait-for", PROMPT, "--wait", WAIT, "--json",
                        timeout=float(WAIT) + 120)  # fmt: skip
    took = time.monotonic() - start
    log = (state_dir(name) / "console.log").read_text(errors="replace")
    print(f"\n{case}: {took:.1f} s to {PROMPT!r} (rc {proc.returncode})")
    assert proc.returncode == 0, f"{proc.stderr}\n--- console tail:\n{log[-2000:]}"
    out: dict[str, Any] = json.loads(proc.stdout)
    assert out["result"]["outcome"] == "wait-for-matched"
    assert PROMPT in log
    arch = Architecture.from_name(DEBIAN_ARCHES[debarch])
    argv = out["result"]["phases"][0]["argv"]
    assert Path(argv[0]).name == arch.qemu_binary(), argv[0]
    assert out["plan"]["firmware"] == firmware
    assert f"console={console}" in out["plan"]["cmdline"]
    joined = " ".join(argv)
    if code:  # UEFI: read-only code + this VM's own copy of the variable store
        assert f"{code},readonly=on" in joined
        assert f"file={state_dir(name) / 'nvram.fd'}" in joined
        assert (state_dir(name) / "nvram.fd").is_file()
    else:
        assert "pflash" not in joined
    for phase in out["result"]["phases"]:
        if phase["qemu_pid"]:
            assert pid_gone(phase["qemu_pid"])


# -- phase 2 on a non-x86 arch: AAVMF boots the installed disk ------------------------------

ARM64 = DI_IMAGES / "arm64/text/debian-installer/arm64"
EMPTY_CMDLINE = r"Kernel command line: *\r?\n"  # only a kernel started by the firmware itself


def _esp_disk(dest: Path, efi_app: Path) -> Path:
    """A FAT disk whose removable-media boot path EFI/BOOT/BOOTAA64.EFI is ``efi_app``: what
    UEFI boots when no boot entry names the disk (dosfstools + mtools, no mounting)."""
    import subprocess

    with dest.open("wb") as f:
        f.truncate(64 << 20)
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run(["mkfs.vfat", "-n", "ESP", str(dest)])
    run(["mmd", "-i", str(dest), "::/EFI", "::/EFI/BOOT"])
    run(["mcopy", "-i", str(dest), str(efi_app), "::/EFI/BOOT/BOOTAA64.EFI"])
    return dest


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.skipif(
    not (ARM64 / "linux").is_file() or not shutil.which("mcopy") or not shutil.which("mkfs.vfat"),
    reason="needs debian-installer-12-netboot-arm64, dosfstools and mtools",
)
def test_arm64_phase2_boots_the_disk_through_the_same_uefi(
    tmp_path: Path, vm_reaper: Reaper
) -> None:
    """Phase 1: the d-i kernel under AAVMF (-kernel via fw_cfg) whose init powers off at once.
    Phase 2: the same AAVMF with the same NVRAM file boots the disk's EFI/BOOT/BOOTAA64.EFI
    (the d-i kernel, an EFI application through its stub), with no -kernel and no -append:
    the kernel's empty command line proves the firmware loaded it from the disk."""
    disk = _esp_disk(tmp_path / "esp.img", ARM64 / "linux")
    name = vm_reaper.vm(f"arm64-p2-{tmp_path.name[-6:]}")
    proc = run_treeboot("install", str(tmp_path), "--name", name, "--arch", "aarch64",
                        "--accel", "tcg", "--kernel", str(ARM64 / "linux"),
                        "--initrd", str(ARM64 / "initrd.gz"),
                        "--extra-args", "rdinit=/bin/busybox -- poweroff -f",
                        "--disk", f"path={disk},format=raw", "--network", "none",
                        "--wait-for", EMPTY_CMDLINE, "--wait", WAIT, "--json",
                        timeout=float(WAIT) + 120)  # fmt: skip
    log = (state_dir(name) / "console.log").read_text(errors="replace")
    assert proc.returncode == 0, f"{proc.stderr}\n--- console tail:\n{log[-3000:]}"
    out: dict[str, Any] = json.loads(proc.stdout)
    phases = out["result"]["phases"]
    assert [p["phase"] for p in phases] == ["install", "firstboot"]
    assert phases[1]["outcome"] == "wait-for-matched"
    install_argv, firstboot_argv = phases[0]["argv"], phases[1]["argv"]
    pflash = [a for a in install_argv if "if=pflash" in a]
    assert len(pflash) == 2 and pflash == [a for a in firstboot_argv if "if=pflash" in a]
    assert "-kernel" not in firstboot_argv and "-append" not in firstboot_argv
    assert log.count("EFI stub: Booting Linux Kernel") == 2  # installer, then the disk's
    assert "BdsDxe: starting Boot" in log  # the firmware's own boot manager, in phase 2
    for phase in phases:
        if phase["qemu_pid"]:
            assert pid_gone(phase["qemu_pid"])
