"""How QEMU processes are started (issue 10, case 13): the parent-death signal is set by
``setpriv`` (no Python between fork and exec while other threads run), and a process
started with :func:`popen_tied` still dies when treeboot dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from treeboot.boot import _qemuproc


def test_no_preexec_fn(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real = subprocess.Popen

    def spy(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        seen.update(kw, argv=argv)
        return real(argv, **kw)

    monkeypatch.setattr(subprocess, "Popen", spy)
    proc = _qemuproc.popen_tied(["true"])
    assert proc.wait(30) == 0
    assert seen.get("preexec_fn") is None, "Python code would run between fork and exec"
    assert os.path.basename(seen["argv"][0]) == "setpriv"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(60)
def test_tied_process_dies_with_its_parent(tmp_path: Path) -> None:
    """A Python parent (with a busy second thread) starts ``sleep`` tied to it and is killed
    with SIGKILL: the sleep gets SIGTERM from the kernel."""
    script = textwrap.dedent("""
        import threading, time
        from treeboot.boot._qemuproc import popen_tied
        threading.Thread(target=lambda: [time.sleep(0) for _ in iter(int, 1)], daemon=True).start()
        proc = popen_tied(["sleep", "300"])
        print(proc.pid, flush=True)
        time.sleep(300)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        for _ in range(100):  # setpriv execs sleep: then the pid's command is sleep
            if Path(f"/proc/{child}/comm").read_text().strip() == "sleep":
                break
            time.sleep(0.05)
        parent.kill()
        parent.wait(30)
        for _ in range(200):
            if not _alive(child):
                break
            time.sleep(0.05)
        assert not _alive(child), "the tied process outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(30)
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
