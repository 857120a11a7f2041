"""Process plumbing for the QEMU processes treeboot starts: die with the parent, stop, reap.

Every QEMU treeboot runs in the foreground is started with :func:`popen_tied` so that it
receives SIGTERM when treeboot dies, however treeboot dies (PR_SET_PDEATHSIG).

The parent-death signal is set by util-linux ``setpriv --pdeathsig TERM --`` (Debian's
essential util-linux), which then execs QEMU in the same process: no Python runs between
fork and exec (a ``preexec_fn`` loading libc through ctypes there can deadlock while other
threads hold locks, as the subprocess documentation warns). The signal comes when the thread
that started the process ends, as with prctl in the child.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from treeboot.run import find_binary

log = logging.getLogger("treeboot.qemu")

SETPRIV = "/usr/bin/setpriv"


def tied_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` run under ``setpriv --pdeathsig TERM``: it gets SIGTERM when we die."""
    setpriv = SETPRIV if os.access(SETPRIV, os.X_OK) else find_binary("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]


def popen_tied(
    argv: Sequence[str],
    *,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (Ctrl-C is ours to handle), dying with us."""
    log.debug("starting: %s", shlex.join(argv))
    return subprocess.Popen(
        tied_argv(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        process_group=0,  # setpgid in the C fork code, no Python in the child
    )


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps. Returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def pid_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pid_matches(pid: int, marker: str) -> bool:
    """True if ``pid`` is alive and its command line mentions ``marker`` (guards PID reuse)."""
    return pid_alive(pid) and any(marker in arg for arg in pid_cmdline(pid))


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def signal_and_wait(pid: int, marker: str, *, grace: float = 10.0) -> bool:
    """Stop a process we do not parent (a background VM): SIGTERM, then SIGKILL.

    Returns True if a matching process was found. Waits until it is gone.
    """
    if not pid_matches(pid, marker):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
    return True
