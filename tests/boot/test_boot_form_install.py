"""``treeboot install --boot-form``: the derived forms in the plan, and QEMU's own trace proving
the hand-off (pvh.bin for the fast form, linuxboot_dma.bin for the classic one)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest

from _vm_helpers import (
    DI_KERNEL,
    INSTALLER_MARKER,
    Reaper,
    busybox_initrd,
    debian_tree,
    needs_qemu,
    run_treeboot,
    state_dir,
    tree_url,
    vm_reaper,
)

pytestmark = [needs_qemu]
__all__ = ["debian_tree", "tree_url", "vm_reaper"]  # the fixtures, imported for pytest


def _tiny(tmp_path: Path) -> list[str]:
    raw = busybox_initrd(tmp_path / "initrd.cpio", f"echo {INSTALLER_MARKER}\npoweroff -f\n")
    gz = tmp_path / "initrd.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    return ["--kernel", str(DI_KERNEL), "--initrd", str(gz)]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Derived forms go to this test's cache, not the session's (other tests' dry-runs)."""
    monkeypatch.setenv("TREEBOOT_CACHE", str(tmp_path / "cache"))


def _install(*args: str) -> dict[str, Any]:
    proc = run_treeboot("install", *args, "--json", timeout=1000)
    assert proc.returncode == 0, (proc.returncode, proc.stderr, proc.stdout[-2000:])
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_dry_run_shows_the_choice_and_its_reason(tree_url: str, tmp_path: Path) -> None:
    tiny = _tiny(tmp_path)
    auto = _install(tree_url, "--name", "bf-dry", "--accel", "tcg", *tiny, "--dry-run")
    form = auto["boot_form"]
    assert (form["form"], form["kernel"], form["initrd"]) == ("fast", "vmlinux-pvh", "raw")
    assert "pvh.bin" in form["handoff"] and form["firmware"] == "bios"
    assert auto["argv"][auto["argv"].index("-kernel") + 1] == str(DI_KERNEL)  # not derived yet
    classic = _install(tree_url, "--name", "bf-dry", "--accel", "tcg", *tiny, "--dry-run",
                       "--boot-form", "classic")  # fmt: skip
    assert classic["boot_form"]["reason"] == "--boot-form classic"
    assert "linuxboot_dma.bin" in classic["boot_form"]["handoff"]
    bad = run_treeboot("install", tree_url, "--name", "x", "--boot-form", "turbo", "--dry-run")
    assert bad.returncode == 2


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize(
    ("form", "rom", "kernel_form"),
    [("fast", "genroms/pvh.bin", "vmlinux-pvh"), ("classic", "genroms/linuxboot_dma.bin", None)],
)
def test_trace_boot_proves_the_hand_off(
    tree_url: str, tmp_path: Path, vm_reaper: Reaper, form: str, rom: str, kernel_form: str | None
) -> None:
    name = vm_reaper.vm(f"bf-{form}")
    out = _install(tree_url, "--name", name, "--accel", "tcg", *_tiny(tmp_path), "--disk",
                   "none", "--network", "none", "--no-reboot", "--wait", "900",
                   "--boot-form", form, "--trace-boot")  # fmt: skip
    assert out["result"]["outcome"] == "installer-finished"
    assert INSTALLER_MARKER in (state_dir(name) / "console.log").read_text(errors="replace")
    assert f"option ROM  {rom}" in out["trace_report"]
    # treeboot's model of QEMU's loader (artifacts/fwcfg.py) agrees with QEMU on both paths
    agree = re.search(r"prediction: all (\d+) values agree \((.*)\)", out["trace_report"])
    assert agree is not None, out["trace_report"]
    checked = set(agree[2].split(", "))
    assert {"kernel_addr", "kernel_size", "initrd_addr", "initrd_size", "option_rom"} <= checked
    assert ("kernel_entry" in checked) == (form == "fast")
    kernel = Path(out["argv"][out["argv"].index("-kernel") + 1])
    initrd = Path(out["argv"][out["argv"].index("-initrd") + 1])
    derived = out["boot_form"]["derived"]
    if kernel_form:
        assert kernel.parent.name == kernel_form and kernel.read_bytes()[:4] == b"\x7fELF"
        assert derived["kernel"]["source_sha256"] == kernel.name
        assert initrd.read_bytes()[:6] == b"070701"  # inflated: no decompressor in the guest
        again = _install(tree_url, "--name", name, "--accel", "tcg", *_tiny(tmp_path),
                         "--boot-form", form, "--dry-run")  # fmt: skip
        assert again["argv"][again["argv"].index("-kernel") + 1] == str(kernel)  # warm
    else:
        assert kernel == DI_KERNEL and derived == {}
