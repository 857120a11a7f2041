"""End to end: the real Debian 12 installer, under TCG, driven by an injected preseed.

The generated preseed (plus an ``early_command`` that writes a marker to the serial port) is
appended to the netboot initrd. With ``auto=true priority=critical`` d-i must load it from the
initrd root, run the early command, skip the language and keyboard questions, and go on to
network configuration, where it stops because the guest has no network (``-nic none``): the
serial console then shows "No network interfaces detected". The test then kills QEMU by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _unattended_helpers import (
    DI_DIR,
    ROOT_TOKEN,
    USER_TOKEN,
    make_ident,
    make_secret_files,
    need_debian_installer,
    reaped,
    strip_ansi,
    wait_for,
)
from treeboot.artifacts.cpio import InjectFile, injected_offset
from treeboot.prepare.inject import inject_files
from treeboot.prepare.unattended import UnattendedOptions, UnattendedPayload, render_unattended

MARKER = "TREEBOOT-PRESEED-MARKER"
EARLY = f"d-i preseed/early_command string echo {MARKER} > /dev/ttyS0\n"
# Text d-i shows when it asks for language or keyboard (localechooser, keyboard-configuration).
ASKED = ("Select a language", "Choose language", "Select your location", "Configure the keyboard")
REACHED = "No network interfaces detected"
BOOT_TIMEOUT = 540  # safety net only: the test waits for text, not for time


def _preseed_payload(tmp_path: Path) -> UnattendedPayload:
    files = make_secret_files(tmp_path)
    ident = make_ident("debian-installer", location=str(DI_DIR))
    return render_unattended(ident, UnattendedOptions.parse(files.spec(hostname="tbtest")))


def _appended_entry(initrd: Path, original_size: int) -> tuple[str, int]:
    """Name and mode of the first entry of the archive inject_files appended."""
    with initrd.open("rb") as f:
        f.seek(injected_offset(original_size))
        header = f.read(110)
        namesize = int(header[94:102], 16)
        name = f.read(namesize).rstrip(b"\0").decode()
    return name, int(header[14:22], 16)


def _qemu_argv(kernel: Path, initrd: Path, cmdline: list[str], log: Path) -> list[str]:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu is not None
    return [
        qemu,
        "-accel", "tcg",
        "-machine", "q35",
        "-m", "1024",
        "-smp", "1",
        "-nodefaults",
        "-display", "none",
        "-serial", f"file:{log}",
        "-nic", "none",
        "-no-reboot",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", " ".join(cmdline),
    ]  # fmt: skip


@pytest.mark.qemu
@pytest.mark.slow
def test_injected_preseed_drives_debian_installer(tmp_path: Path) -> None:
    kernel, initrd = need_debian_installer()
    payload = _preseed_payload(tmp_path)
    (preseed,) = payload.files
    assert isinstance(preseed.data, bytes)
    injected = inject_files(
        initrd,
        [InjectFile(data=preseed.data + EARLY.encode(), name="preseed.cfg", mode=preseed.mode)],
        tmp_path / "private" / "initrd.gz",
    )
    assert injected.stat().st_mode & 0o777 == 0o600
    assert _appended_entry(injected, initrd.stat().st_size) == ("preseed.cfg", 0o100600)
    cmdline = ["console=ttyS0", *payload.kernel_args]
    assert not any(s in " ".join(cmdline) for s in payload.secret_values)

    log = tmp_path / "serial.log"
    argv = _qemu_argv(kernel, injected, cmdline, log)
    try:
        with (
            (tmp_path / "qemu.out").open("wb") as out,
            reaped(argv, stdout=out, stderr=subprocess.STDOUT) as proc,
        ):
            text = wait_for(
                log, proc, lambda t: REACHED in t or any(a in t for a in ASKED), BOOT_TIMEOUT
            )
            assert proc.poll() is None, f"QEMU exited early:\n{text[-3000:]}"
    finally:
        injected.unlink()
    assert MARKER in text, text[-3000:]
    assert not [a for a in ASKED if a in text], text[-3000:]
    assert "Detecting network hardware" in text
    assert REACHED in text, text[-3000:]
    raw = log.read_bytes().decode("latin-1")
    assert not [s for s in payload.secret_values if s in raw]


# --- the same through `treeboot install` -------------------------------------------------------

PLAIN_TOKEN = "plainpw-TREEBOOT-SECRET-c0ffee"
WAIT_FOR = "No network interfaces detected"


def _debian_tree(tmp_path: Path) -> str:
    """A Debian mirror-style installer tree whose netboot files are the packaged ones."""
    kernel, initrd = need_debian_installer()
    base = tmp_path / "mirror" / "dists" / "bookworm" / "main" / "installer-amd64"
    netboot = base / "current" / "images" / "netboot" / "debian-installer" / "amd64"
    netboot.mkdir(parents=True)
    (netboot / "linux").symlink_to(kernel)
    (netboot / "initrd.gz").symlink_to(initrd)
    (base / "current" / "images" / "MANIFEST").write_text(
        "netboot/debian-installer/amd64/initrd.gz -- initrd for netboot\n"
        "netboot/debian-installer/amd64/linux     -- kernel for netboot\n"
    )
    return str(base) + "/"


def _treeboot(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treeboot", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _state_dir(name: str) -> Path:
    return Path(os.environ["TREEBOOT_HOME"]) / "vms" / name


def _user_preseed(tmp_path: Path) -> Path:
    """A hand-written preseed with a plaintext root password (which must never be shown)."""
    path = tmp_path / "preseed.cfg"
    path.write_text(
        EARLY + "d-i debian-installer/locale string en_US.UTF-8\n"
        "d-i keyboard-configuration/xkb-keymap select us\n"
        "d-i netcfg/get_hostname string tbcli\nd-i netcfg/get_domain string\n"
        f"d-i passwd/root-password password {PLAIN_TOKEN}\n"
        f"d-i passwd/root-password-again password {PLAIN_TOKEN}\n"
    )
    return path


def _install_args(tree: str, name: str, *more: str) -> list[str]:
    return ["install", tree, "--name", name, "--vcpus", "1", "--accel", "tcg",
            "--disk", "none", "--network", "none", *more]  # fmt: skip


@pytest.mark.slow
def test_dry_run_and_json_hide_secrets(tmp_path: Path) -> None:
    tree = _debian_tree(tmp_path)
    files = make_secret_files(tmp_path)
    for source in (
        ["--unattended", files.spec()],
        ["--unattended-file", str(_user_preseed(tmp_path))],
    ):
        for mode in (["--dry-run"], ["--dry-run", "--json"]):
            proc = _treeboot(*_install_args(tree, "tb-unattended-dry", *source, *mode))
            assert proc.returncode == 0, proc.stderr
            out = proc.stdout + proc.stderr
            assert "auto=true priority=critical" in out or '"priority=critical"' in out
            for token in (ROOT_TOKEN, USER_TOKEN, PLAIN_TOKEN, "$6$"):
                assert token not in out


@pytest.mark.qemu
@pytest.mark.slow
def test_preseed_through_treeboot_install(tmp_path: Path) -> None:
    tree = _debian_tree(tmp_path)
    name = "tb-preseed-e2e"
    argv = [sys.executable, "-m", "treeboot",
            *_install_args(tree, name, "--unattended-file", str(_user_preseed(tmp_path)),
                           "--wait-for", WAIT_FOR, "--console", "log", "--force")]  # fmt: skip
    out_path = tmp_path / "treeboot.out"
    with out_path.open("wb") as out, reaped(argv, stdout=out, stderr=subprocess.STDOUT) as proc:
        try:
            rc = proc.wait(timeout=BOOT_TIMEOUT)
        finally:
            _kill_leftover_qemu(_state_dir(name))
    output = out_path.read_text()
    state = _state_dir(name)
    console = strip_ansi((state / "console.log").read_bytes())
    assert rc == 0, output + console[-3000:]
    assert "wait-for-matched" in output
    assert MARKER in console
    assert not [a for a in ASKED if a in console], console[-3000:]
    # The private initrd copy holding the preseed is gone; no state file shows the password.
    assert not (state / "initrd.img").exists()
    for path in [out_path, *state.iterdir()]:
        if path.is_file():
            assert PLAIN_TOKEN.encode() not in path.read_bytes(), path


def _kill_leftover_qemu(state: Path) -> None:
    """treeboot stops its QEMU itself; if it did not (test failure), stop it by its PID."""
    try:
        pid = int((state / "qemu.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(state).encode() in cmdline:  # still our QEMU, not a recycled PID
        os.kill(pid, signal.SIGKILL)
