"""``treeboot install`` booting real guests under TCG: the Debian installer, a tiny installer
that powers off (-> phase 2 from the disk), panics, time limits, Ctrl-C, background VMs."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from _vm_helpers import (
    DI_ARM64_KERNEL,
    DI_KERNEL,
    FIRSTBOOT_MARKER,
    INSTALLER_MARKER,
    TREE_PATH,
    Reaper,
    busybox_initrd,
    debian_tree,
    firstboot_disk,
    needs_qemu,
    pid_gone,
    run_treeboot,
    start_treeboot,
    state_dir,
    status,
    tree_url,
    treeboot_argv,
    vm_reaper,
    wait_for_console,
    wait_for_status,
)
from treeboot.devtree import build_debian_tree

pytestmark = [pytest.mark.qemu, needs_qemu]
__all__ = ["debian_tree", "tree_url", "vm_reaper"]  # the fixtures, imported for pytest

PROMPT = "Select a language"
TCG = ("--accel", "tcg")


def _install_json(proc_stdout: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(proc_stdout)
    return data


def _assert_reaped(result: dict[str, Any]) -> None:
    phases = result["result"]["phases"]
    for phase in phases:
        if phase["qemu_pid"]:
            assert pid_gone(phase["qemu_pid"])


# -- the real Debian installer ------------------------------------------------------------


def test_debian_installer_reaches_prompt_over_loopback_http(
    tree_url: str, vm_reaper: Reaper
) -> None:
    name = vm_reaper.vm("di-http")
    proc = run_treeboot("install", tree_url, "--name", name, *TCG, "--disk", "none",
                        "--wait-for", PROMPT, "--wait", "400", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = _install_json(proc.stdout)
    assert out["result"]["outcome"] == "wait-for-matched"
    assert PROMPT in (state_dir(name) / "console.log").read_text(errors="replace")
    assert "restrict=on" in " ".join(out["argv"])
    _assert_reaped(out)
    assert status(name)["state"] == "stopped"


def test_debian_installer_from_local_directory(debian_tree: Path, vm_reaper: Reaper) -> None:
    """A local tree is served to the guest by treeboot's own HTTP server."""
    name = vm_reaper.vm("di-dir")
    proc = run_treeboot("install", str(debian_tree / TREE_PATH), "--name", name, *TCG,
                        "--disk", "none", "--wait-for", PROMPT, "--wait", "400",
                        "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = _install_json(proc.stdout)
    assert out["result"]["outcome"] == "wait-for-matched"
    assert "guestfwd=tcp:10.0.2.100:80" in " ".join(out["argv"])
    _assert_reaped(out)


@pytest.mark.slow
@pytest.mark.skipif(not DI_ARM64_KERNEL.is_file(), reason="needs debian-installer arm64")
def test_debian_arm64_installer_under_emulation(tmp_path: Path, vm_reaper: Reaper) -> None:
    """The same pipeline for another architecture: virt machine, ttyAMA0, pvpanic-pci."""
    tree = build_debian_tree(tmp_path, "arm64")
    name = vm_reaper.vm("di-arm64")
    proc = run_treeboot("install", str(tree), "--name", name, *TCG, "--disk", "none",
                        "--wait-for", PROMPT, "--wait", "500", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = _install_json(proc.stdout)
    assert out["argv"][0] == "qemu-system-aarch64"
    assert "console=ttyAMA0" in out["plan"]["cmdline"]
    assert out["result"]["outcome"] == "wait-for-matched"
    _assert_reaped(out)


# -- a tiny installer: phase 2, panic, time limit -------------------------------------------


def _tiny(tmp_path: Path, script: str) -> list[str]:
    initrd = busybox_initrd(tmp_path / "initrd.cpio", script)
    return ["--kernel", str(DI_KERNEL), "--initrd", str(initrd)]


def test_installer_poweroff_starts_phase2_from_the_disk(
    tree_url: str, tmp_path: Path, vm_reaper: Reaper
) -> None:
    disk = firstboot_disk(tmp_path / "disk.img")
    tiny = _tiny(tmp_path, f"echo {INSTALLER_MARKER}\npoweroff -f\n")
    name = vm_reaper.vm("phase2")
    proc = run_treeboot("install", tree_url, "--name", name, *TCG, *tiny,
                        "--disk", f"path={disk}", "--network", "none", "--wait", "300",
                        "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = _install_json(proc.stdout)
    phases = out["result"]["phases"]
    assert [(p["phase"], p["outcome"]) for p in phases] == [
        ("install", "installer-finished"),
        ("firstboot", "powered-off"),
    ]
    install_argv, firstboot_argv = phases[0]["argv"], phases[1]["argv"]
    assert "-kernel" in install_argv and "-no-reboot" in install_argv
    assert "-kernel" not in firstboot_argv and "-initrd" not in firstboot_argv
    assert any(str(disk) in a for a in firstboot_argv)
    log = (state_dir(name) / "console.log").read_text(errors="replace")
    assert log.index(INSTALLER_MARKER) < log.index(FIRSTBOOT_MARKER)  # the disk booted after
    _assert_reaped(out)


def test_phase2_runs_in_background_when_nobody_watches(
    tree_url: str, tmp_path: Path, vm_reaper: Reaper
) -> None:
    """Without --wait/--wait-for/attach, the installed system is left running on its own."""
    disk = firstboot_disk(tmp_path / "disk.img")
    tiny = _tiny(tmp_path, f"echo {INSTALLER_MARKER}\npoweroff -f\n")
    name = vm_reaper.vm("phase2bg")
    proc = run_treeboot("install", tree_url, "--name", name, *TCG, *tiny,
                        "--disk", f"path={disk}", "--network", "none", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    phases = _install_json(proc.stdout)["result"]["phases"]
    assert [(p["phase"], p["outcome"]) for p in phases] == [
        ("install", "installer-finished"),
        ("firstboot", "running-in-background"),
    ]
    # The firstboot disk powers the machine off by itself; its watcher records that and exits.
    st = wait_for_status(name, lambda s: s.get("outcome") == "powered-off", timeout=180)
    wait_for_console(name, FIRSTBOOT_MARKER)
    deadline = time.monotonic() + 30
    while not pid_gone(st["watcher_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_gone(st["watcher_pid"]) and pid_gone(st["qemu_pid"])


def test_qemu_that_cannot_start_is_reported(
    tree_url: str, tmp_path: Path, vm_reaper: Reaper
) -> None:
    tiny = _tiny(tmp_path, "poweroff -f\n")
    name = vm_reaper.vm("nomem")
    proc = run_treeboot("install", tree_url, "--name", name, *TCG, *tiny, "--disk", "none",
                        "--network", "none", "--memory", str(1 << 30), "--json")  # fmt: skip
    assert proc.returncode == 12, proc.stderr
    out = _install_json(proc.stdout)
    assert out["result"]["outcome"] == "qemu-failed"
    assert "qemu-system-x86_64" in out["result"]["phases"][0]["detail"]


def test_no_reboot_skips_phase2(tree_url: str, tmp_path: Path, vm_reaper: Reaper) -> None:
    disk = firstboot_disk(tmp_path / "disk.img")
    tiny = _tiny(tmp_path, f"echo {INSTALLER_MARKER}\npoweroff -f\n")
    name = vm_reaper.vm("noreboot")
    proc = run_treeboot("install", tree_url, "--name", name, *TCG, *tiny, "--no-reboot",
                        "--disk", f"path={disk}", "--network", "none", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    phases = _install_json(proc.stdout)["result"]["phases"]
    assert [p["outcome"] for p in phases] == ["installer-finished"]
    assert FIRSTBOOT_MARKER not in (state_dir(name) / "console.log").read_text(errors="replace")


def test_initrd_inject_and_trace_boot(tree_url: str, tmp_path: Path, vm_reaper: Reaper) -> None:
    """An injected file reaches the guest; --trace-boot compares fw_cfg with the prediction."""
    marker = tmp_path / "marker.txt"
    marker.write_text("TREEBOOT-INJECTED-FILE\n")
    tiny = _tiny(tmp_path, "cat /marker.txt\npoweroff -f\n")
    name = vm_reaper.vm("inject")
    proc = run_treeboot("install", tree_url, "--name", name, *TCG, *tiny, "--disk", "none",
                        "--network", "none", "--initrd-inject", str(marker), "--trace-boot",
                        "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = _install_json(proc.stdout)
    assert "TREEBOOT-INJECTED-FILE" in (state_dir(name) / "console.log").read_text()
    assert out["plan"]["initrd"] == str(state_dir(name) / "initrd.img")
    assert not (state_dir(name) / "initrd.img").exists()  # temporary
    report = out["trace_report"]
    assert "initrd" in report and "prediction" in report
    assert (state_dir(name) / "fw_cfg.trace").stat().st_size > 0


def test_guest_panic_has_its_own_exit_code(
    tree_url: str, tmp_path: Path, vm_reaper: Reaper
) -> None:
    tiny = _tiny(tmp_path, "echo c > /proc/sysrq-trigger\nsleep 600\n")
    name = vm_reaper.vm("panic")
    proc = run_treeboot("install", tree_url, "--name", name, *TCG, *tiny, "--disk", "none",
                        "--network", "none", "--wait", "300", "--json")  # fmt: skip
    assert proc.returncode == 10, proc.stderr
    out = _install_json(proc.stdout)
    assert out["result"]["outcome"] == "guest-panicked"
    _assert_reaped(out)


def test_time_limit_stops_the_vm(tree_url: str, tmp_path: Path, vm_reaper: Reaper) -> None:
    tiny = _tiny(tmp_path, f"echo {INSTALLER_MARKER}\nsleep 600\n")
    name = vm_reaper.vm("slow")
    proc = run_treeboot("install", tree_url, "--name", name, *TCG, *tiny, "--disk", "none",
                        "--network", "none", "--wait", "20", "--json")  # fmt: skip
    assert proc.returncode == 11, proc.stderr
    out = _install_json(proc.stdout)
    assert out["result"]["outcome"] == "timed-out"
    _assert_reaped(out)


def test_attached_console_forwards_the_keyboard(
    tree_url: str, tmp_path: Path, vm_reaper: Reaper
) -> None:
    """On a terminal, --console attach sends keystrokes to the guest's serial port."""
    tiny = _tiny(tmp_path, "echo READY\nread line\necho GOT:$line\npoweroff -f\n")
    name = vm_reaper.vm("keys")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        treeboot_argv("install", tree_url, "--name", name, *TCG, *tiny, "--disk", "none",
                      "--network", "none", "--console", "attach", "--wait", "300"),
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    vm_reaper.pids.append(proc.pid)
    try:
        wait_for_console(name, "READY")
        time.sleep(1.0)  # the shell reaches `read`
        os.write(master, b"hello\r")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"GOT:hello" in out  # the live console
    assert "GOT:hello" in (state_dir(name) / "console.log").read_text(errors="replace")


# -- signals and background VMs -------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_qemu_and_keeps_disk_and_log(
    tree_url: str, tmp_path: Path, vm_reaper: Reaper, sig: signal.Signals, code: int
) -> None:
    extra = tmp_path / "extra.cfg"
    extra.write_text("injected\n")
    tiny = _tiny(tmp_path, f"echo {INSTALLER_MARKER}\nsleep 600\n")
    name = vm_reaper.vm(f"sig{int(sig)}")
    proc = start_treeboot("install", tree_url, "--name", name, *TCG, *tiny, "--disk", "size=1",
                          "--initrd-inject", str(extra), "--network", "none")  # fmt: skip
    vm_reaper.pids.append(proc.pid)
    try:
        st = wait_for_status(name, lambda s: s.get("state") == "running" and s.get("qemu_pid"))
        qemu_pid = st["qemu_pid"]
        wait_for_console(name, INSTALLER_MARKER)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert pid_gone(qemu_pid)
    assert (state_dir(name) / "disk.qcow2").exists()
    assert INSTALLER_MARKER in (state_dir(name) / "console.log").read_text(errors="replace")
    assert not (state_dir(name) / "initrd.img").exists()  # temporary: removed
    assert not (state_dir(name) / "qemu.pid").exists()
    assert status(name)["state"] == "stopped"


def test_qemu_dies_with_a_killed_treeboot(
    tree_url: str, tmp_path: Path, vm_reaper: Reaper
) -> None:
    """Even SIGKILL (no cleanup code runs) leaves no QEMU behind: PR_SET_PDEATHSIG."""
    tiny = _tiny(tmp_path, f"echo {INSTALLER_MARKER}\nsleep 600\n")
    name = vm_reaper.vm("killed")
    proc = start_treeboot("install", tree_url, "--name", name, *TCG, *tiny, "--disk", "none",
                          "--network", "none")  # fmt: skip
    vm_reaper.pids.append(proc.pid)
    try:
        st = wait_for_status(name, lambda s: s.get("state") == "running" and s.get("qemu_pid"))
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 30
    while not pid_gone(st["qemu_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_gone(st["qemu_pid"])
    listed = json.loads(run_treeboot("list", "--json").stdout)
    assert next(vm for vm in listed if vm["name"] == name)["state"] == "stopped"


def test_background_vm_list_console_stop(
    tree_url: str, tmp_path: Path, vm_reaper: Reaper
) -> None:
    tiny = _tiny(tmp_path, f"echo {INSTALLER_MARKER}\nsleep 600\n")
    name = vm_reaper.vm("bg")
    proc = run_treeboot("install", tree_url, "--name", name, *TCG, *tiny, "--disk", "none",
                        "--network", "none", "--wait", "0", "--json", timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _install_json(proc.stdout)["result"]["outcome"] == "running-in-background"
    st = status(name)
    qemu_pid, watcher_pid = st["qemu_pid"], st["watcher_pid"]
    vm_reaper.pids += [qemu_pid, watcher_pid]
    assert not pid_gone(qemu_pid)

    listed = json.loads(run_treeboot("list", "--json").stdout)
    mine = next(vm for vm in listed if vm["name"] == name)
    assert mine["state"] == "running" and mine["qemu_pid"] == qemu_pid

    wait_for_console(name, INSTALLER_MARKER)
    shown = run_treeboot("console", name, "--no-follow")
    assert INSTALLER_MARKER in shown.stdout

    stopped = run_treeboot("stop", name, "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["state"] == "stopped"
    deadline = time.monotonic() + 30
    while not (pid_gone(qemu_pid) and pid_gone(watcher_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_gone(qemu_pid) and pid_gone(watcher_pid)
    assert status(name)["outcome"] == "stopped"
    assert os.path.exists(state_dir(name) / "console.log")
