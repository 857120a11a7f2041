"""End to end: the real Debian 12 installer, under TCG, driven by an injected preseed.

The generated preseed (plus an ``early_command`` that writes a marker to the serial port) is
appended to the netboot initrd. With ``auto=true priority=critical`` d-i must load it from the
initrd root, run the early command, skip the language and keyboard questions, and go on to
network configuration, where it stops because the guest has no network (``-nic none``): the
serial console then shows "No network interfaces detected". The test then kills QEMU by PID.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from _unattended_helpers import (
    DI_DIR,
    make_ident,
    make_secret_files,
    need_debian_installer,
    reaped,
    wait_for,
)
from treeboot.cpio import InjectFile, inject_files, injected_offset
from treeboot.unattended import UnattendedOptions, UnattendedPayload, render_unattended

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
