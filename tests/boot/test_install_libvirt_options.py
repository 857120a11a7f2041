"""``install --connect``: the keyboard on ``--console attach`` and ``--wait 0``'s background
watcher, on the tests' private libvirtd (fixtures in ``_libvirt_fixtures.py``; every object a
test makes is removed, also on failure).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from _libvirt_helpers import Libvirtd, json_of, needs_libvirtd
from _libvirt_helpers import treeboot_on as _treeboot
from _vm_helpers import (
    DI_KERNEL,
    FIRSTBOOT_MARKER,
    INSTALLER_MARKER,
    TREE_PATH,
    busybox_initrd,
    debian_tree,
    firstboot_disk,
    needs_qemu,
    pid_gone,
    reap_pids,
    state_dir,
    status,
    treeboot_argv,
)
from treeboot.boot.backends.libvirt import Hypervisor

pytestmark = [pytest.mark.qemu, pytest.mark.slow, needs_qemu, needs_libvirtd]
__all__ = ["debian_tree"]

PROMPT = "Select a language"
NEXT_SCREEN = "Select your location"  # d-i's screen after the language is chosen


# -- the keyboard on --console attach ---------------------------------------------------------


def test_keys_on_stdin_reach_the_installer_through_the_console_stream(
    libvirtd: Libvirtd, debian_tree: Path, clean: list[str]
) -> None:
    """Enter, written into treeboot's stdin (a pipe), chooses d-i's language: the installer
    moves on to its next screen, which only a key can make it do."""
    name = f"tb-lv-keys-{os.getpid()}"
    clean.append(name)
    argv = treeboot_argv("install", str(debian_tree / TREE_PATH), "--name", name,
                         "--connect", libvirtd.uri, "--network", "none", "--disk", "none",
                         "--console", "attach", "--wait-for", NEXT_SCREEN,
                         "--wait", "500")  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdin is not None
    log = state_dir(name) / "console.log"
    try:
        deadline = time.monotonic() + 500
        while proc.poll() is None and time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            if PROMPT in text:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(b"\r")  # the highlighted language: English
                    proc.stdin.flush()
                time.sleep(5)  # again if the installer was not reading yet
            else:
                time.sleep(0.2)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert text.index(PROMPT) < text.index(NEXT_SCREEN)


# -- --wait 0 -------------------------------------------------------------------------------


def test_wait_0_returns_and_a_detached_watcher_boots_the_disk(
    libvirtd: Libvirtd, debian_tree: Path, tmp_path: Path, clean: list[str]
) -> None:
    """As on QEMU: ``--wait 0`` returns while phase 1 runs; the watcher it left behind sees the
    installer power off, defines and starts the disk-booting domain, deletes the uploads,
    watches phase 2 to its end and records the outcome for ``treeboot list``."""
    name = f"tb-lv-bg-{os.getpid()}"
    clean.append(name)
    initrd = busybox_initrd(tmp_path / "initrd.cpio",
                            f"echo {INSTALLER_MARKER}\nsleep 20\npoweroff -f\n")  # fmt: skip
    hv = Hypervisor(libvirtd.uri)
    try:
        vol = hv.upload(hv.find_pool(None), firstboot_disk(tmp_path / "disk.img"), f"{name}.img")
    finally:
        hv.close()
    watcher: int | None = None
    try:
        proc = _treeboot(libvirtd, "install", str(debian_tree / TREE_PATH), "--name", name,
                         "--connect", libvirtd.uri, "--network", "none",
                         "--kernel", str(DI_KERNEL), "--initrd", str(initrd),
                         "--disk", f"path={vol.path},format=raw", "--wait", "0",
                         "--json")  # fmt: skip
        st = status(name)
        watcher = st.get("watcher_pid")
        assert proc.returncode == 0, proc.stderr
        assert json_of(proc)["result"]["outcome"] == "running-in-background"
        # treeboot has exited; phase 1 runs, owned by a watcher in a session of its own.
        assert isinstance(watcher, int) and not pid_gone(watcher)
        assert os.getsid(watcher) == watcher
        assert (st["state"], st["phase"]) == ("running", "install")
        assert libvirtd.virsh("domstate", name).stdout.strip() == "running"
        deadline = time.monotonic() + 500
        while status(name).get("state") != "stopped" or not pid_gone(watcher):
            assert time.monotonic() < deadline, status(name)
            time.sleep(0.5)
    finally:
        reap_pids([watcher] if isinstance(watcher, int) else [])
    st = status(name)
    assert (st["phase"], st["outcome"]) == ("firstboot", "powered-off"), st
    log = (state_dir(name) / "console.log").read_text(errors="replace")
    assert log.index(INSTALLER_MARKER) < log.index(FIRSTBOOT_MARKER)
    assert "<kernel>" not in libvirtd.virsh("dumpxml", name).stdout  # phase 2, persistent
    watcher_log = (state_dir(name) / "watcher.log").read_text().splitlines()
    line = next(ln for ln in watcher_log if "libvirt_watch: {" in ln)
    result = json.loads(line[line.index("{") :])
    assert [(p["phase"], p["outcome"]) for p in result["phases"]] == [
        ("install", "installer-finished"),
        ("firstboot", "powered-off"),
    ]
    listed = json.loads(_treeboot(libvirtd, "list", "--json").stdout)
    entry = next(vm for vm in listed if vm["name"] == name)
    assert (entry["state"], entry["phase"], entry["outcome"]) == (
        "stopped", "firstboot", "powered-off")  # fmt: skip
