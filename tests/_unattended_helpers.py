"""Shared bits for the unattended tests: identifications, secret files, a public key, QEMU."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from treeboot.model import Identification, Media

# A real ed25519 public key (private half discarded).
PUBKEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMHE3SHRjnre56bXa4Y/9ybQTf7Yj0Tm/sAc+oHFTNis alice@host"
)
ROOT_TOKEN = "rootpw-TREEBOOT-SECRET-7f3a9c"
USER_TOKEN = "userpw-TREEBOOT-SECRET-b41e2d"

DEBIAN_MIRROR = "http://deb.debian.org/debian/dists/bookworm/main/installer-amd64/current/images/"
# installer -> (family, version, location)
FAMILIES = {
    "anaconda": ("fedora", "40", "http://127.0.0.1:8000/fedora/releases/40/Everything/x86_64/os/"),
    "debian-installer": ("debian", "12", DEBIAN_MIRROR),
    "linuxrc": ("opensuse", "15.5", "http://127.0.0.1:8000/distribution/leap/15.5/repo/oss/"),
    "subiquity": ("ubuntu", "24.04", "/srv/iso/ubuntu-24.04-live-server-amd64.iso"),
}

DI_DIR = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")


def make_ident(
    installer: str, family: str | None = None, version: str | None = None, location: str = ""
) -> Identification:
    fam, ver, loc = FAMILIES.get(installer, ("linux", "1", "/srv/tree"))
    family = family or fam
    version = version or ver
    return Identification(
        location=location or loc,
        media=Media.TREE,
        os=f"{family}{version}",
        family=family,
        name=f"{family.capitalize()} {version}",
        version=version,
        arch="x86_64",
        installer=installer,
        kernel="linux",
        initrd="initrd.gz",
    )


@dataclass(frozen=True)
class SecretFiles:
    root: Path
    user: Path
    key: Path

    def spec(self, **extra: str) -> str:
        items = {
            "admin-user": "alice",
            "user-password-file": str(self.user),
            "admin-password-file": str(self.root),
            "ssh-key": str(self.key),
        } | extra
        return ",".join(f"{k}={v}" for k, v in items.items())


def make_secret_files(tmp_path: Path) -> SecretFiles:
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "root.pw").write_text(ROOT_TOKEN + "\n")
    (d / "user.pw").write_text(USER_TOKEN + "\r\nsecond line ignored\n")
    (d / "id.pub").write_text("# my key\n" + PUBKEY + "\n")
    return SecretFiles(d / "root.pw", d / "user.pw", d / "id.pub")


def strip_ansi(raw: bytes) -> str:
    """Serial output of d-i's newt frontend as plain text: escape sequences become newlines."""
    text = raw.decode("latin-1")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9AB]|\x1b[=>]", "\n", text)


def need_debian_installer() -> tuple[Path, Path]:
    kernel, initrd = DI_DIR / "linux", DI_DIR / "initrd.gz"
    if not (kernel.is_file() and initrd.is_file()):
        pytest.skip("apt-get install debian-installer-12-netboot-amd64")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("apt-get install qemu-system-x86")
    return kernel, initrd


def wait_for(
    log: Path, proc: subprocess.Popen[bytes], done: Callable[[str], bool], timeout: float
) -> str:
    """Poll the serial log until ``done(text)`` or the guest exits; the timeout is a safety net."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = strip_ansi(log.read_bytes()) if log.exists() else ""
        if done(text) or proc.poll() is not None:
            return text
        time.sleep(1)
    return text


@contextlib.contextmanager
def reaped(argv: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv``; on exit kill it by PID (if still running) and reap it, pass or fail."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
