"""Helpers for tests that boot QEMU: tiny installers, a bootable disk, running treeboot.

- :func:`busybox_initrd` builds an initrd (uncompressed newc) around Debian's busybox-static
  whose ``/init`` runs a given shell script: a stand-in installer that boots in seconds with
  the real Debian installer kernel.
- :func:`firstboot_disk` writes a raw disk whose boot sector prints :data:`FIRSTBOOT_MARKER`
  on COM1 and powers the q35 machine off (ACPI PM1a_CNT at 0x604, SLP_EN): what phase 2
  boots when the "installer" has finished.
- :func:`run_treeboot` / :func:`start_treeboot` run the CLI in a subprocess and
  :func:`reap_vm` kills (by PID) whatever QEMU a test left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _net_helpers import serve_http
from treeboot.artifacts.cpio import CpioEntry, build_newc
from treeboot.devtree import build_debian_tree

DI = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
DI_KERNEL = DI / "linux"
DI_ARM64_KERNEL = DI.parents[3] / "arm64/text/debian-installer/arm64/linux"
BUSYBOX = Path("/bin/busybox")
INSTALLER_MARKER = "TREEBOOT-TEST-INSTALLER-DONE"
FIRSTBOOT_MARKER = "TREEBOOT-FIRSTBOOT-OK"
TREE_PATH = "dists/bookworm/main/installer-amd64/"  # the installer tree in a built mirror

# bootsect.S (as --32; ld -m elf_i386 -Ttext=0 --oformat binary), loaded at 0x7c00:
#   cli; xor %ax,%ax; mov %ax,%ds; mov $(0x7c00+msg),%si; mov $0x3f8,%dx
#   1: lodsb; test %al,%al; jz 2f; out %al,%dx; jmp 1b
#   2: mov $0x604,%dx; mov $0x2000,%ax; out %ax,%dx     (ACPI S5 on q35 after SeaBIOS)
#   3: hlt; jmp 3b
#   msg: .asciz "TREEBOOT-FIRSTBOOT-OK\r\n"; .org 510; .word 0xaa55
_BOOT_CODE = bytes.fromhex("fa31c08ed8be1d7cbaf803ac84c07403eeebf8ba0406b80020eff4ebfd")

_APPLETS = ("sh", "mount", "poweroff", "sleep", "echo", "cat")

needs_qemu = pytest.mark.skipif(
    not (DI_KERNEL.is_file() and BUSYBOX.is_file()),
    reason="needs debian-installer-12-netboot-amd64 and busybox-static",
)


def busybox_initrd(dest: Path, script: str) -> Path:
    """An initrd whose /init is ``script`` run by busybox sh (with /proc and /sys mounted)."""
    init = "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n" + script
    entries = [
        CpioEntry.directory("bin"),
        CpioEntry.directory("dev"),
        CpioEntry.directory("proc"),
        CpioEntry.directory("sys"),
        CpioEntry.char_device("dev/console", 5, 1),
        CpioEntry.file("bin/busybox", BUSYBOX, 0o755),
        *[CpioEntry.symlink(f"bin/{cmd}", "busybox") for cmd in _APPLETS],
        CpioEntry.file("init", init.encode(), 0o755),
    ]
    dest.write_bytes(build_newc(entries))
    return dest


def firstboot_disk(dest: Path) -> Path:
    sector = bytearray(512)
    msg = FIRSTBOOT_MARKER.encode() + b"\r\n\0"
    sector[: len(_BOOT_CODE)] = _BOOT_CODE
    sector[len(_BOOT_CODE) : len(_BOOT_CODE) + len(msg)] = msg
    sector[510:512] = b"\x55\xaa"
    with dest.open("wb") as f:
        f.write(sector)
        f.truncate(1 << 20)  # SeaBIOS wants more than one sector
    return dest


def treeboot_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "treeboot", *args]


def run_treeboot(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        treeboot_argv(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


def start_treeboot(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        treeboot_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def state_dir(name: str) -> Path:
    return Path(os.environ["TREEBOOT_HOME"]) / "vms" / name


def status(name: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state_dir(name) / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def wait_for_status(name: str, pred: Any, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(name)
        if pred(st):
            return st
        time.sleep(0.1)
    raise AssertionError(f"status of {name} never matched: {status(name)}")


def wait_for_console(name: str, text: str, timeout: float = 180.0) -> str:
    log = state_dir(name) / "console.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared on the console of {name}")


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def reap_pids(pids: list[int]) -> None:
    """SIGKILL each PID that is still a QEMU or treeboot we started (checked by cmdline)."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline or b"treeboot" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Reaper:
    """What a test started: VM names (their status.json PIDs) and extra PIDs."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.pids: list[int] = []

    def vm(self, name: str) -> str:
        self.names.append(name)
        return name

    def all_pids(self) -> list[int]:
        pids = list(self.pids)
        for name in self.names:
            st = status(name)
            pids += [st[k] for k in ("qemu_pid", "watcher_pid") if isinstance(st.get(k), int)]
        return [p for p in pids if p != os.getpid()]


@pytest.fixture
def vm_reaper() -> Iterator[Reaper]:
    """Every VM/PID a test registers is killed (by PID, after a cmdline check) at the end."""
    reaper = Reaper()
    yield reaper
    reap_pids(reaper.all_pids())


@pytest.fixture(scope="module")
def debian_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Debian mirror built by :func:`treeboot.devtree.build_debian_tree` (once a module)."""
    root = tmp_path_factory.mktemp("mirror")
    build_debian_tree(root)
    return root


@pytest.fixture
def tree_url(debian_tree: Path) -> Iterator[str]:
    """The installer tree of :func:`debian_tree`, served over HTTP on 127.0.0.1."""
    with serve_http(debian_tree) as srv:
        yield srv.url + TREE_PATH
