"""The one subprocess wrapper: logs the command, says which package provides a missing binary."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Sequence

from treeboot.errors import MissingToolError, TreebootError

log = logging.getLogger("treeboot.run")

# Which Debian package provides a program we run.
PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-i386": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-system-arm": "qemu-system-arm",
    "qemu-system-ppc64": "qemu-system-ppc",
    "qemu-system-mips64el": "qemu-system-mips",
    "qemu-system-s390x": "qemu-system-misc",
    "qemu-system-riscv64": "qemu-system-misc",
    "qemu-img": "qemu-utils",
    "gpgv": "gpgv",
    "xorriso": "xorriso",
    "virt-install": "virtinst",
    "setpriv": "util-linux",
}


def find_binary(name: str) -> str:
    """Return the absolute path of ``name`` or raise an error naming its package."""
    path = shutil.which(name)
    if path is None:
        pkg = PACKAGES.get(name, name)
        raise MissingToolError(
            f"{name} was not found on PATH",
            hint=f"install it: apt-get install {pkg}",
        )
    return path


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion; on failure raise with the command and its status."""
    log.debug("running: %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=capture,
            timeout=timeout,
            input=input,
            check=False,
        )
    except FileNotFoundError as e:
        raise MissingToolError(
            f"{argv[0]} was not found",
            hint=f"install it: apt-get install {PACKAGES.get(argv[0], argv[0])}",
        ) from e
    except subprocess.TimeoutExpired as e:
        raise TreebootError(f"{shlex.join(argv)} did not finish within {timeout} s") from e
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip()
        raise TreebootError(
            f"{shlex.join(argv)} failed with exit status {proc.returncode}"
            + (f": {err[-2000:]}" if err else "")
        )
    return proc
