"""Shared set-up for tests that run ``treeboot fetch`` processes against a
:class:`_hostile_server.HostileServer`: a tree with random kernel/initrd bytes, the server
around it (closed also on failure) and the CLI started in a subprocess with its own cache."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from test_hostile import treeinfo, write_tree

from _hostile_server import HostileServer


def random_tree(base: Path, kernel_size: int, initrd_size: int) -> Path:
    """Write ``base/tree`` (a .treeinfo tree with random kernel/initrd); return ``base``."""
    kernel, initrd = os.urandom(kernel_size), os.urandom(initrd_size)
    write_tree(base, "tree", kernel, initrd, treeinfo(kernel, initrd))
    return base


@contextmanager
def hostile_server(root: Path) -> Iterator[HostileServer]:
    """A started HostileServer over ``root``, closed on exit."""
    srv = HostileServer(root).start()
    try:
        yield srv
    finally:
        srv.close()


def start_cli(*args: str, cache: Path) -> subprocess.Popen[str]:
    """``python -m treeboot ARGS`` with ``TREEBOOT_CACHE=cache``, stdout/stderr piped."""
    env = dict(os.environ, TREEBOOT_CACHE=str(cache))
    return subprocess.Popen(
        [sys.executable, "-m", "treeboot", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
