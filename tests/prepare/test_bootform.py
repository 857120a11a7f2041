"""Boot forms: the rule table, the choice, --boot-form, derivation and its fallback."""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import pytest

from _kernel_helpers import netboot
from treeboot.artifacts.cpio import CpioEntry, build_newc
from treeboot.errors import UsageError
from treeboot.prepare.bootform import (
    BootForm,
    InitrdForm,
    KernelForm,
    choose_form,
    firmware_kind,
    load_form_rules,
    prepare_forms,
)
from treeboot.store.cache import Cache
from treeboot.store.derived import DerivedStore


def test_every_rule_loads_and_every_combination_has_one() -> None:
    rules = load_form_rules()
    assert rules.rules and all(r.why for r in rules.rules)
    for arch in ("x86_64", "i686", "aarch64", "ppc64le", "s390x", "riscv64"):
        for firmware in ("bios", "uefi", "none"):
            for accel in ("tcg", "kvm"):
                choice = choose_form(arch, firmware, accel, "auto")
                assert choice.form in (BootForm.CLASSIC, BootForm.FAST)
                assert choice.handoff
    # only measured combinations boot a derived form by default; KVM keeps the classic one
    fast = {(r.arches, r.firmware, r.accel) for r in rules.rules if r.auto is BootForm.FAST}
    assert all(accel == "tcg" for _, _, accel in fast)


def test_x86_tcg_seabios_boots_vmlinux_through_pvh() -> None:
    choice = choose_form("x86_64", firmware_kind("x86_64", None), "tcg", "auto")
    assert (choice.form, choice.kernel, choice.initrd) == (
        BootForm.FAST, KernelForm.VMLINUX_PVH, InitrdForm.RAW)  # fmt: skip
    assert "pvh.bin" in choice.handoff
    assert "bench/time_to_installer.py" in choice.reason


def test_kvm_keeps_classic_and_the_linuxboot_rom() -> None:
    choice = choose_form("x86_64", "bios", "kvm", "auto")
    assert (choice.kernel, choice.initrd) == (KernelForm.ORIGINAL, InitrdForm.ORIGINAL)
    assert "linuxboot_dma.bin" in choice.handoff
    forced = choose_form("x86_64", "bios", "kvm", "fast")
    assert forced.kernel is KernelForm.VMLINUX_PVH and forced.reason == "--boot-form fast"


def test_uefi_never_gets_an_elf_vmlinux() -> None:
    assert firmware_kind("x86_64", Path("/usr/share/OVMF/OVMF_CODE.fd")) == "uefi"
    choice = choose_form("x86_64", "uefi", "tcg", "fast")
    assert choice.kernel is KernelForm.ORIGINAL and choice.initrd is InitrdForm.RAW
    assert "EFI stub" in choice.handoff


def test_classic_override_and_bad_value() -> None:
    choice = choose_form("x86_64", "bios", "tcg", "classic")
    assert (choice.kernel, choice.initrd) == (KernelForm.ORIGINAL, InitrdForm.ORIGINAL)
    with pytest.raises(UsageError, match="auto, classic or fast"):
        choose_form("x86_64", "bios", "tcg", "fastest")


def _initrd(tmp_path: Path) -> Path:
    path = tmp_path / "initrd.gz"
    path.write_bytes(gzip.compress(build_newc([CpioEntry.file("init", b"#!/bin/sh\n")])))
    return path


def test_fast_form_is_derived_then_found_warm(tmp_path: Path) -> None:
    kernel = shutil.copy(netboot("amd64", "linux"), tmp_path / "linux")
    initrd = _initrd(tmp_path)
    store = DerivedStore(Cache(tmp_path / "cache"))
    choice = choose_form("x86_64", "bios", "tcg", "fast")
    dry = prepare_forms(choice, Path(kernel), initrd, store=store, dry_run=True)
    assert (dry.kernel, dry.initrd) == (Path(kernel), initrd) and len(dry.fallbacks) == 2
    cold = prepare_forms(choice, Path(kernel), initrd, store=store)
    assert cold.kernel.read_bytes()[:4] == b"\x7fELF"
    assert cold.initrd.read_bytes()[:6] == b"070701"
    assert cold.derived["kernel"].source_sha256 == store.path("vmlinux-pvh", cold.kernel.name).name
    warm = prepare_forms(choice, Path(kernel), initrd, store=store, dry_run=True)
    assert (warm.kernel, warm.initrd, warm.fallbacks) == (cold.kernel, cold.initrd, [])


def test_no_pvh_note_falls_back_with_one_notice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # an arm64 Image is no bzImage: nothing to extract, so the original kernel is booted
    kernel = netboot("arm64", "linux")
    initrd = _initrd(tmp_path)
    store = DerivedStore(Cache(tmp_path / "cache"))
    choice = choose_form("x86_64", "bios", "tcg", "fast")
    with caplog.at_level(logging.WARNING, logger="treeboot.notice"):
        prepared = prepare_forms(choice, kernel, initrd, store=store)
    assert prepared.kernel == kernel and prepared.initrd != initrd
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and notices[0].startswith("booting the original kernel (linux)")
    assert "\n" not in notices[0]


def test_broken_initrd_falls_back_and_the_install_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(gzip.compress(b"no cpio in here" * 100))
    choice = choose_form("aarch64", "none", "tcg", "fast")
    store = DerivedStore(Cache(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="treeboot.notice"):
        prepared = prepare_forms(choice, netboot("arm64", "linux"), initrd, store=store)
    assert prepared.initrd == initrd
    assert any("booting the original initrd" in r.getMessage() for r in caplog.records)
    # a plain arm64 Image is already the fast form: used as it is, silently
    assert prepared.kernel == netboot("arm64", "linux") and "kernel" not in prepared.derived
