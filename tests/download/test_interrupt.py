"""Interruptions: ``kill -9`` in the middle of a download resumes with Range on the next run; a
full disk is a clear error that leaves no partial file; killing ``treeboot install`` leaves no
QEMU behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _hostile_helpers import KERNEL, assert_clean_cache, hostile_server, random_tree, start_cli
from _hostile_server import HostileServer
from _signature_helpers import make_debian_tree

pytestmark = pytest.mark.network

KERNEL_SIZE = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_tree(tmp_path_factory.mktemp("big"), KERNEL_SIZE, 64 * 1024)


@pytest.fixture
def server(big_tree: Path) -> Iterator[HostileServer]:
    with hostile_server(big_tree) as srv:
        yield srv


def start_fetch(url: str, cache: Path) -> subprocess.Popen[str]:
    return start_cli("fetch", url, "--json", "--timeout", "10", cache=cache)


def wait_for(predicate: object, proc: subprocess.Popen[str], what: str) -> None:
    """Poll (bounded by the test's pytest-timeout) until ``predicate()`` or the process ends."""
    while not predicate():  # type: ignore[operator]
        if proc.poll() is not None:
            pytest.fail(f"fetch ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")  # type: ignore[union-attr]
        time.sleep(0.05)


def kernel_body_bytes(server: HostileServer) -> int:
    return server.state.bytes_sent


@pytest.mark.timeout(180)
def test_kill_9_then_rerun_resumes_with_range(
    server: HostileServer, big_tree: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    url = server.url("ok", "tree/")
    server.state.rate = 1024 * 1024  # 1 MiB/s: the first run is still downloading when killed
    proc = start_fetch(url, cache)
    try:
        wait_for(lambda: server.state.bytes_sent > 2 * 1024 * 1024, proc, "2 MiB arrived")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    first_bytes = server.state.bytes_sent
    assert first_bytes < KERNEL_SIZE, "the first run finished before it was killed"
    assert_clean_cache(cache)  # a .part may stay (that is the point), nothing else

    server.state.rate = 0
    proc2 = start_fetch(url, cache)
    out, err = proc2.communicate(timeout=120)
    assert proc2.returncode == 0, err
    result = json.loads(out)
    want = hashlib.sha256((big_tree / "tree" / KERNEL).read_bytes()).hexdigest()
    assert result["artifacts"]["kernel"]["sha256"] == want
    assert result["verified"] == "sha256"
    assert hashlib.sha256(Path(result["kernel"]).read_bytes()).hexdigest() == want

    kernel_gets = server.state.requests_for(KERNEL)
    assert len(kernel_gets) >= 2
    assert kernel_gets[-1].headers.get("Range", "").startswith("bytes="), kernel_gets[-1].headers
    assert server.state.bytes_sent < 2 * KERNEL_SIZE, "the rerun downloaded the kernel again"
    assert_clean_cache(cache, partials_allowed=False)


# --- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


@pytest.mark.timeout(120)
def test_full_disk_is_a_clear_error_without_partial_files(
    server: HostileServer, small_tmpfs: Path
) -> None:
    cache = small_tmpfs / "cache"
    proc = start_fetch(server.url("ok", "tree/"), cache)
    _, err = proc.communicate(timeout=100)
    assert proc.returncode not in (0, 70), err
    assert "Traceback" not in err and "treeboot: error:" in err, err
    assert "space" in err.lower(), err
    assert_clean_cache(cache, partials_allowed=False)
    # Complete blobs of the small initrd may stay (assert_clean_cache checked them whole).
    partial = [p for p in (cache / "tmp").glob("*") if p.is_file() and p.stat().st_size > 0]
    assert not [p for p in partial if p.suffix == ".part"], partial


# --- killing treeboot install -----------------------------------------------------------------


def _qemu_children(pid: int) -> list[int]:
    """PIDs of processes whose parent chain reaches ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and "qemu-system" in cmd:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.qemu
@pytest.mark.timeout(300)
def test_killing_install_leaves_no_qemu_and_keeps_disk_and_logs(tmp_path: Path) -> None:
    di = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
    if not (di / "linux").is_file():
        pytest.skip("debian-installer-12-netboot-amd64 is not installed")
    tree = make_debian_tree(tmp_path / "srv", None, mode="none", kernel=(di / "linux").read_bytes(),
                            initrd=(di / "initrd.gz").read_bytes())  # fmt: skip
    env = dict(
        os.environ, TREEBOOT_CACHE=str(tmp_path / "cache"), TREEBOOT_HOME=str(tmp_path / "home")
    )
    args = [sys.executable, "-m", "treeboot", "install", str(tree.location) + "/",
            "--name", "killme", "--disk", "size=1", "--accel", "tcg", "--console", "none",
            "--memory", "512"]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    qemu: list[int] = []
    try:
        while not qemu and proc.poll() is None:
            time.sleep(0.2)
            qemu = _qemu_children(proc.pid)
        if not qemu:
            _, err = proc.communicate(timeout=60)
            pytest.fail(f"install did not start QEMU (rc {proc.returncode}): {err[-500:]}")
        time.sleep(2)  # let it write its log and disk
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        for _ in range(100):  # PR_SET_PDEATHSIG delivers at once; give the kernel a moment
            if not any(_alive(q) for q in qemu):
                break
            time.sleep(0.1)
        assert not any(_alive(q) for q in qemu), f"QEMU {qemu} outlived treeboot install"
    finally:
        for q in qemu:
            if _alive(q):
                os.kill(q, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    home = tmp_path / "home"
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix in (".qcow2", ".img", ".raw") for p in files), files
    assert any("log" in p.name for p in files), files
