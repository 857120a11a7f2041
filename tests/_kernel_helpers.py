"""Helpers for the boot-artifact tests: fixtures, real Debian netboot files, QEMU runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data" / "kernels"
NETBOOT = Path("/usr/lib/debian-installer/images/12")


def fixture_meta() -> dict[str, dict[str, object]]:
    meta: dict[str, dict[str, object]] = json.loads((DATA / "fixtures.json").read_text())
    return meta


def fixture(name: str) -> tuple[bytes, int]:
    """The committed fixture's bytes and the size of the file it was cut from."""
    size = fixture_meta()[name]["size"]
    assert isinstance(size, int)
    return (DATA / name).read_bytes(), size


def full_size_copy(name: str, dest: Path) -> Path:
    """The fixture, extended with NULs (sparse) to the size of its real file."""
    data, size = fixture(name)
    dest.write_bytes(data)
    with open(dest, "r+b") as f:
        f.truncate(size)
    return dest


def netboot(arch: str, name: str) -> Path:
    """A file of Debian's netboot package (debian-installer-12-netboot-<arch>), or skip."""
    path = NETBOOT / arch / "text" / "debian-installer" / arch / name
    if not path.is_file():
        pytest.skip(f"{path} missing: apt-get install debian-installer-12-netboot-{arch}")
    return path


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} missing: apt-get install {package}")
    return path


def run_qemu(
    argv: list[str],
    log: Path,
    done: Callable[[str], bool],
    *,
    timeout: float = 60.0,
    wait_exit: bool = False,
) -> tuple[str, int | None]:
    """Start QEMU, wait until ``done(log text)``, its exit or ``timeout``; always reap it.

    With ``wait_exit``, give it 10 s more to exit by itself (the guest powers off).
    Returns the log text and QEMU's exit status (None when it had to be killed).
    """
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and done(log.read_text(errors="replace")):
                break
            time.sleep(0.2)
        status: int | None = proc.poll()
        if status is None and wait_exit:
            try:
                status = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                status = None
        return (log.read_text(errors="replace") if log.exists() else ""), status
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
