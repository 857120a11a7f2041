"""``treeboot install`` options that were accepted and then ignored or guessed (issue 10):
``--wait 0 --wait-for``, ``-q`` and the format of an existing disk image (never probed)."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from treeboot.boot.request import InstallRequest
from treeboot.errors import UsageError

DI = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from treeboot.devtree import build_debian_tree

    if not (DI / "linux").is_file():
        pytest.skip("debian-installer-12-netboot-amd64 is not installed")
    return build_debian_tree(tmp_path_factory.mktemp("mirror") / "debian")


def install(
    tmp_path: Path, *args: str, stderr_tty: bool = False
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TREEBOOT_HOME=str(tmp_path / "home"),
               TREEBOOT_CACHE=str(tmp_path / "cache"), COLUMNS="200")  # fmt: skip
    argv = [sys.executable, "-m", "treeboot", *args]
    if not stderr_tty:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=follower, text=True, env=env,
                              timeout=300)  # fmt: skip
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the writer is gone and everything was read
                break
            if not data:
                break
            chunks.append(data)
        proc.stderr = b"".join(chunks).decode(errors="replace")
        return proc
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_wait_0_with_wait_for_is_rejected(mirror: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--wait-for"):
        InstallRequest(str(mirror), name="w0", wait=0, wait_for="login:")
    proc = install(tmp_path, "install", str(mirror), "--name", "w0", "--wait", "0",
                   "--wait-for", "login:", "--disk", "none", "--dry-run")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--wait-for" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.timeout(300)
def test_quiet_install_draws_no_progress_bars(mirror: Path, tmp_path: Path) -> None:
    args = ["install", str(mirror), "--name", "q", "--disk", "none", "--dry-run"]
    loud = install(tmp_path / "loud", *args, stderr_tty=True)
    assert loud.returncode == 0, loud.stderr
    assert "initrd.gz" in loud.stderr, "no progress bar on a terminal: the test proves nothing"
    quiet = install(tmp_path / "quiet", "-q", *args, stderr_tty=True)
    assert quiet.returncode == 0, quiet.stderr
    assert "initrd.gz" not in quiet.stderr, quiet.stderr


@pytest.mark.timeout(300)
def test_existing_disk_format_is_never_probed(mirror: Path, tmp_path: Path) -> None:
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        pytest.skip("qemu-img is not installed (apt-get install qemu-utils)")
    disk = tmp_path / "disk.img"  # a raw disk a guest wrote a qcow2 header into
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    base = ["install", str(mirror), "--name", "fmt", "--dry-run", "--json"]
    proc = install(tmp_path, *base, "--disk", f"path={disk}")
    assert proc.returncode == 2, proc.stderr
    assert "format=qcow2" in proc.stderr and "format=raw" in proc.stderr
    for fmt in ("qcow2", "raw"):
        proc = install(tmp_path, *base, "--disk", f"path={disk},format={fmt}")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["plan"]["disk"]["format"] == fmt
    plain = tmp_path / "plain.img"
    plain.write_bytes(bytes(1 << 20))
    proc = install(tmp_path, *base, "--disk", f"path={plain}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["plan"]["disk"]["format"] == "raw"
