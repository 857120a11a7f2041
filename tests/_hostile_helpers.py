"""Shared set-up for tests that run ``treeboot fetch`` processes against a
:class:`_hostile_server.HostileServer`: a tree with random kernel/initrd bytes, the server
around it (closed also on failure) and the CLI started in a subprocess with its own cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _hostile_server import HostileServer

KERNEL = "images/pxeboot/vmlinuz"
INITRD = "images/pxeboot/initrd.img"


def treeinfo(kernel: bytes, initrd: bytes, *, kernel_path: str = KERNEL) -> str:
    return f"""[header]
type = productmd.treeinfo
version = 1.2

[release]
name = Fedora
short = Fedora
version = 42

[tree]
arch = x86_64
platforms = x86_64

[general]
family = Fedora
version = 42
arch = x86_64
name = Fedora 42

[images-x86_64]
kernel = {kernel_path}
initrd = {INITRD}

[checksums]
{KERNEL} = sha256:{hashlib.sha256(kernel).hexdigest()}
{INITRD} = sha256:{hashlib.sha256(initrd).hexdigest()}
"""


def write_tree(base: Path, name: str, kernel: bytes, initrd: bytes, info: str) -> None:
    tree = base / name
    (tree / "images" / "pxeboot").mkdir(parents=True)
    (tree / KERNEL).write_bytes(kernel)
    (tree / INITRD).write_bytes(initrd)
    (tree / ".treeinfo").write_text(info)


# --- the clean-cache invariant --------------------------------------------------------------


def assert_clean_cache(root: Path, *, partials_allowed: bool = True) -> None:
    """Blobs are complete and named by their sha256; nothing half-written is visible.

    ``tmp/<key>.part`` (+ ``.json``) may stay for a resumable download, unless the download is
    known bad (``partials_allowed=False``).
    """
    if not root.exists():
        return
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        rel = path.relative_to(root)
        top = rel.parts[0]
        if top == "blobs":
            assert rel.parts[:2] == ("blobs", "sha256"), f"stray file {rel}"
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest == path.name, f"blob {rel} does not hold what its name says"
        elif top == "index":
            entry = json.loads(path.read_text())
            assert (root / "blobs" / "sha256" / entry["sha256"]).is_file(), f"{rel}: no blob"
        elif top == "tmp":
            assert path.suffix in (".part", ".json"), f"stray temp file {rel}"
            assert partials_allowed or path.suffix != ".part", f"bad download kept: {rel}"
        elif top == "osinfo":  # the detection's parsed-database cache
            assert path.suffix == ".json", f"stray file {rel}"
        elif top == "ident":  # identifications to revalidate (treeboot.detect.identcache)
            assert rel.parts[1:] and path.suffix == ".json", f"stray file {rel}"
            json.loads(path.read_text())
        else:
            assert top in ("locks", "cache.lock"), f"unexpected file {rel}"


def blobs(root: Path) -> set[str]:
    d = root / "blobs" / "sha256"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()



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
