"""``install --connect``: the keyboard on ``--console attach``, on the tests' private libvirtd
(fixtures in ``_libvirt_fixtures.py``; every object a test makes is removed, also on failure).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from _libvirt_helpers import Libvirtd, needs_libvirtd
from _vm_helpers import (
    TREE_PATH,
    debian_tree,
    needs_qemu,
    state_dir,
    treeboot_argv,
)

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
