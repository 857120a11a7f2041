"""Per-arch machine facts (rules/machines.toml), --boot, the kernel arch check, and the plans
for arches this machine cannot boot: s390x and riscv64 fixture trees identify and
``--dry-run`` to argv checked against golden files."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
from test_install import _normalize

from _net_helpers import serve_http
from _paths import GOLDEN
from treeboot.arch import Architecture, BootKind, Firmware, firmware_info, load_machines
from treeboot.boot.backends.qemu import render_qemu_argv
from treeboot.boot.plan import BootPlan, NetworkPlan, Phase, VMPaths
from treeboot.cli.main import main
from treeboot.devtree import DI_IMAGES, build_debian_tree
from treeboot.errors import UsageError

AMD64 = DI_IMAGES / "amd64/text/debian-installer/amd64"


def test_every_arch_has_a_row_and_every_firmware_is_described() -> None:
    machines, firmware = load_machines()
    assert set(machines) == {a.value for a in Architecture}
    assert set(firmware) == set(Firmware)
    for arch in Architecture:
        facts = arch.facts()
        assert facts.qemu.startswith("qemu-system-") and facts.package
        assert facts.disk.endswith(facts.bus) and facts.nic.endswith(facts.bus)
        assert arch.firmwares() and arch.default_firmware() == arch.firmwares()[0]
    for info in firmware.values():
        assert (info.code is None) == (info.vars is None)  # UEFI: code and variable store
        assert info.boots_disk or info.kind is BootKind.DIRECT


def test_arch_names_and_facts() -> None:
    assert Architecture.from_name("armhf") is Architecture.ARMV7L
    assert Architecture.from_name("mips64el") is Architecture.MIPS64EL
    assert Architecture.ARMV7L.default_console() == "ttyAMA0"
    assert Architecture.S390X.default_console() == "ttysclp0"
    assert Architecture.PPC64LE.default_console() == "hvc0"
    assert Architecture.MIPS64EL.machine() == "malta"
    assert Architecture.PPC64LE.qemu_package() == "qemu-system-ppc"
    assert Architecture.X86_64.default_firmware(BootKind.UEFI) is Firmware.OVMF
    assert Architecture.X86_64.default_firmware() is Firmware.SEABIOS
    assert Architecture.AARCH64.default_firmware(BootKind.DIRECT) is Firmware.NONE
    with pytest.raises(UsageError, match="--boot uefi: ppc64le"):
        Architecture.PPC64LE.default_firmware(BootKind.UEFI)


def _plan(arch: Architecture, firmware: Firmware | None = None) -> BootPlan:
    paths = VMPaths.in_dir(Path("/state/vm"))
    return BootPlan("vm", arch, "tcg", 512, 1, paths, Path("/k"), Path("/i"), ["console=x"],
                    None, NetworkPlan("none"), firmware=firmware)  # fmt: skip


def test_plan_has_a_firmware_and_round_trips() -> None:
    plan = _plan(Architecture.AARCH64)
    assert plan.firmware is Firmware.AAVMF
    again = BootPlan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan and again.firmware is Firmware.AAVMF
    old = {**plan.to_json(), "firmware": "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"}
    assert BootPlan.from_json(old).firmware is Firmware.AAVMF  # plans saved before


@pytest.mark.parametrize("arch", list(Architecture))
def test_both_phases_run_the_same_firmware(arch: Architecture) -> None:
    plan = _plan(arch)
    install, firstboot = (render_qemu_argv(plan, p) for p in Phase)
    info = firmware_info(plan.boot_firmware)
    for argv in (install, firstboot):
        pflash = [a for a in argv if "if=pflash" in a]
        assert len(pflash) == (2 if info.code else 0)
        assert ("-bios" in argv) == (info.bios is not None)
    if info.disk_kernel:  # riscv64: OpenSBI alone cannot read a disk; U-Boot can
        assert firstboot[firstboot.index("-kernel") + 1] == str(info.disk_kernel)
    else:
        assert "-kernel" not in firstboot


def _riscv_image() -> bytes:
    """A riscv/boot-image-header.rst header (version 0.2), then zeros."""
    head = struct.pack("<IIQQQIIQ8s4sI", 0, 0, 0x200000, 0x1000000, 0, 2, 0, 0,
                       b"RISCV\0\0\0", b"RSC\x05", 0)  # fmt: skip
    return head + bytes(4096 - len(head))


def _fixture_tree(root: Path, debarch: str, suite: str, files: dict[str, bytes]) -> Path:
    """A d-i mirror tree with MANIFEST and SHA256SUMS around small fixture files."""
    images = root / "dists" / suite / "main" / f"installer-{debarch}" / "current" / "images"
    manifest, sums = [], []
    for rel, data in files.items():
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes(data)
        manifest.append(f"{rel:<55} -- fixture\n")
        sums.append(f"{hashlib.sha256(data).hexdigest()}  ./{rel}\n")
    (images / "MANIFEST").write_text("".join(manifest))
    (images / "SHA256SUMS").write_text("".join(sorted(sums)))
    return images.parent.parent


_GZ = b"\x1f\x8b" + bytes(1024)
_RV = "netboot/debian-installer/riscv64/"
FIXTURES = {
    "s390x": ("bookworm", {"generic/kernel.debian": bytes(4096), "generic/initrd.debian": _GZ}),
    "riscv64": ("trixie", {_RV + "linux": _riscv_image(), _RV + "initrd.gz": _GZ}),
}


@pytest.mark.parametrize("debarch", sorted(FIXTURES))
def test_foreign_fixture_tree_dry_runs_to_golden_plan(
    debarch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite, files = FIXTURES[debarch]
    tree = _fixture_tree(tmp_path, debarch, suite, files)
    with serve_http(tmp_path) as srv:
        url = srv.url + tree.relative_to(tmp_path).as_posix() + "/"
        rc = main(["install", url, "--name", f"dry-{debarch}", "--accel", "tcg",
                   "--disk", "size=8", "--dry-run", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["identification"]["arch"] == Architecture.from_name(debarch).value
    argv = _normalize(out["argv"], url)
    golden = GOLDEN / f"dry-run-debian-{debarch}.argv"
    if os.environ.get("TREEBOOT_UPDATE_GOLDEN"):
        golden.write_text("\n".join(argv) + "\n")
    assert argv == golden.read_text().splitlines()


@pytest.mark.skipif(not AMD64.is_dir(), reason="needs debian-installer-12-netboot-amd64")
def test_a_kernel_for_another_arch_is_refused_before_boot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["install", str(tmp_path), "--name", "wrong-arch", "--arch", "aarch64",
               "--kernel", str(AMD64 / "linux"), "--initrd", str(AMD64 / "initrd.gz"),
               "--disk", "none", "--network", "none", "--accel", "tcg"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err  # one line (and a hint), before any VM exists
    assert "linux is a x86_64 kernel (x86-bzimage), not aarch64" in errors[0]
    assert "--arch x86_64" in err


def test_boot_uefi_where_the_arch_has_none_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    suite, files = FIXTURES["s390x"]
    tree = _fixture_tree(tmp_path, "s390x", suite, files)
    rc = main(["install", str(tree), "--name", "no-uefi", "--boot", "uefi", "--disk", "none",
               "--dry-run"])  # fmt: skip
    assert rc == 2 and "--boot uefi: s390x guests have no uefi firmware" in capsys.readouterr().err


@pytest.mark.parametrize("debarch", ["armhf", "mips64el", "i386", "ppc64el"])
def test_mirror_layouts_identify(debarch: str, tmp_path: Path) -> None:
    if not (DI_IMAGES / debarch).is_dir():
        pytest.skip(f"needs debian-installer-12-netboot-{debarch}")
    from treeboot.detect.identify import identify

    tree = build_debian_tree(tmp_path, debarch)
    ident = identify(str(tree))
    assert ident.os == "debian12" and ident.arch == Architecture.from_name(debarch).value
    assert ident.kernel is not None and ident.initrd is not None
    if debarch == "mips64el":  # the file name carries the kernel version: found via the lists
        assert ident.kernel.startswith("current/images/malta/netboot/vmlinuz-")
        assert ident.kernel.endswith("-5kc-malta")
    assert (tree / ident.kernel).is_file() and (tree / ident.initrd).is_file()


@pytest.mark.skipif(not (DI_IMAGES / "mips64el").is_dir(), reason="needs d-i mips64el")
def test_malta_plan_has_one_vcpu_and_no_phase2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = build_debian_tree(tmp_path, "mips64el")
    rc = main(["install", str(tree), "--name", "malta", "--accel", "tcg", "--disk", "size=4",
               "--dry-run", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    plan = json.loads(captured.out)["plan"]
    assert rc == 0 and plan["vcpus"] == 1 and plan["firmware"] == "none"
    assert plan["no_reboot"] is True and "has no firmware that boots a disk" in captured.err
    rc = main(["install", str(tree), "--name", "malta", "--accel", "tcg", "--vcpus", "2",
               "--disk", "none", "--dry-run"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--vcpus 2: QEMU's malta (mips64el) runs at most 1" in err


def test_the_uefi_variable_store_is_copied_with_holes(tmp_path: Path) -> None:
    """Each install gets a fresh copy of the firmware's template; its zero MiBs stay holes
    (AAVMF's 64 MiB template is all zeros, so a plain copy wrote 64 MiB per install)."""
    from treeboot.boot.steps import copy_sparse

    src = tmp_path / "vars.fd"
    with open(src, "wb") as f:
        f.write(b"\x00" * (3 << 20) + b"NVRAM" + b"\x00" * (2 << 20) + b"tail")
    dest = tmp_path / "nvram.fd"
    copy_sparse(src, dest)
    assert dest.read_bytes() == src.read_bytes()
    assert dest.stat().st_blocks * 512 < src.stat().st_size // 2  # the zero MiBs are holes
    template = firmware_info(Firmware.AAVMF).vars
    if template is not None and template.is_file():
        copy_sparse(template, dest)
        assert dest.read_bytes() == template.read_bytes()
