"""Process plumbing for the QEMU processes treeboot starts: die with the parent, stop, reap.

Every QEMU treeboot runs in the foreground is started with :func:`popen_tied` so that it
receives SIGTERM when treeboot dies, however treeboot dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger("treeboot.qemu")

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child between fork and exec. prctl ties the child's life to the thread
        # that forked it; if the parent is already gone, the signal would never come.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


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
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        process_group=0,
        preexec_fn=_die_with_parent(os.getpid()),
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
