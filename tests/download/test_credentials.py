"""Credentials in a URL (issue 10, case 10): used for the requests, never stored nor shown --
not in the cache index, the identification cache, ``cache list``, JSON output or the plan --
and never put in the guest's kernel command line."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from test_hostile import cli

from _hostile_helpers import hostile_server, random_tree

pytestmark = pytest.mark.network
SECRET = "s3cr3t-pw"


def assert_no_secret(where: str, text: str) -> None:
    lines = [line.strip()[:200] for line in text.splitlines() if SECRET in line]
    assert not lines, f"the password appears in {where}: {lines}"


@pytest.mark.timeout(180)
def test_password_is_used_but_never_stored_nor_shown(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    root = random_tree(tmp_path / "srv", 64 * 1024, 32 * 1024)
    with hostile_server(root) as srv:
        url = srv.url("ok", "tree/").replace("://", f"://alice:{SECRET}@")
        for run in range(2):  # cold, then warm (the identification cache is revalidated)
            proc = cli(["fetch", url, "--json"], cache)
            assert proc.returncode == 0, proc.stderr
            assert_no_secret(f"fetch output (run {run})", proc.stdout + proc.stderr)
            assert json.loads(proc.stdout)["location"].startswith("http://alice:***@")
        proc = cli(["identify", url, "--json"], cache)
        assert proc.returncode == 0, proc.stderr
        assert_no_secret("identify output", proc.stdout + proc.stderr)
        auth = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
        assert all(r.headers.get("Authorization") == auth for r in srv.state.log)
    for args in (["cache", "list"], ["cache", "list", "--json"]):
        proc = cli(args, cache)
        assert proc.returncode == 0, proc.stderr
        assert_no_secret(" ".join(args), proc.stdout)
        assert "alice:***@" in proc.stdout
    for path in cache.rglob("*"):
        if path.is_file() and "blobs" not in path.parts:
            assert_no_secret(str(path.relative_to(cache)), path.read_text(errors="replace"))


@pytest.mark.timeout(180)
def test_password_never_reaches_the_guest_cmdline(tmp_path: Path) -> None:
    di = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
    if not (di / "linux").is_file():
        pytest.skip("debian-installer-12-netboot-amd64 is not installed")
    from treeboot.devtree import build_debian_tree

    build_debian_tree(tmp_path / "srv" / "debian")
    rel = "debian/dists/bookworm/main/installer-amd64/"
    home = tmp_path / "home"
    with hostile_server(tmp_path / "srv") as srv:
        url = srv.url("ok", rel).replace("://", f"://alice:{SECRET}@")
        env_home = os.environ.get("TREEBOOT_HOME")
        os.environ["TREEBOOT_HOME"] = str(home)
        try:
            proc = cli(["install", url, "--name", f"cred{os.getpid()}", "--dry-run", "--json",
                        "--disk", "none", "--accel", "tcg"], tmp_path / "cache")  # fmt: skip
        finally:
            if env_home is None:
                os.environ.pop("TREEBOOT_HOME")
            else:
                os.environ["TREEBOOT_HOME"] = env_home
    assert proc.returncode == 0, proc.stderr
    assert_no_secret("install --dry-run output (plan, QEMU argv, cmdline)", proc.stdout)
    assert_no_secret("install stderr", proc.stderr)
    for path in home.rglob("*") if home.exists() else []:
        if path.is_file():
            assert_no_secret(str(path), path.read_text(errors="replace"))
