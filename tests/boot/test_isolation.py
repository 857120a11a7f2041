"""Guest isolation: the guest reaches only treeboot's server (restricted user network), and that
server serves only the files of the tree (no ``..``, ``%2e%2e``, absolute paths or symlinks out).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _iso_helpers import build_iso, debian_netinst_files, need_debian_netboot, need_xorriso
from _paths import SHARED
from _signature_helpers import make_debian_tree

SECRET = b"treeboot-isolation-secret\n"
DI = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
FAKEMEDIA = SHARED / "fixtures" / "fakemedia"


# --- the guest server -----------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    from treeboot.boot.serve import GuestServer

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    tree = tmp_path / "tree"
    (tree / "images" / "pxeboot").mkdir(parents=True)
    (tree / "images" / "pxeboot" / "vmlinuz").write_bytes(b"kernel\n")
    (tree / "link-out").symlink_to(outside / "secret.txt")
    (tree / "dir-out").symlink_to(outside)
    (tree / "images" / "link-in").symlink_to(tree / "images" / "pxeboot" / "vmlinuz")
    with GuestServer(tree) as srv:
        yield srv.port, outside


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """Send the request line as is: HTTP clients would normalise the hostile part away."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 10.0.2.100\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


TRAVERSALS = [
    "/../outside/secret.txt",
    "/../../../../etc/passwd",
    "/%2e%2e/outside/secret.txt",
    "/%2E%2E/%2E%2E/etc/passwd",
    "/images/..%2f..%2foutside/secret.txt",
    "/images/%2e%2e%2f%2e%2e%2foutside%2fsecret.txt",
    "/..%5c..%5coutside%5csecret.txt",
    "/images/../../outside/secret.txt",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "http://10.0.2.100/../outside/secret.txt",
    "http://127.0.0.1/etc/passwd",
    "/link-out",
    "/dir-out/secret.txt",
    "/images/pxeboot/vmlinuz%00.txt",
    "/.%2e/outside/secret.txt",
    "/%252e%252e/outside/secret.txt",
    "etc/passwd",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", TRAVERSALS)
def test_guest_server_refuses_to_leave_the_tree(served: tuple[int, Path], target: str) -> None:
    port, _ = served
    status, body = raw_get(port, target)
    assert status in (400, 403, 404), (status, body[:200])
    assert SECRET not in body and b"root:" not in body


@pytest.mark.timeout(60)
def test_guest_server_serves_the_tree(served: tuple[int, Path]) -> None:
    port, _ = served
    assert raw_get(port, "/images/pxeboot/vmlinuz") == (200, b"kernel\n")
    assert raw_get(port, "/images/link-in") == (200, b"kernel\n")  # a symlink inside is fine
    status, _ = raw_get(port, "/")
    assert status in (403, 404)  # no directory listing


# --- install --dry-run: every mode with a served tree uses a restricted network ---------------


def dry_run(location: str, tmp_path: Path, *extra: str) -> dict[str, object]:
    env = dict(os.environ, TREEBOOT_CACHE=str(tmp_path / "cache"),
               TREEBOOT_HOME=str(tmp_path / "home"))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "treeboot", "install", location, "--name", "iso-test",
         "--disk", "size=1", "--accel", "tcg", "--dry-run", "--json", *extra],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def assert_restricted(argv: list[str]) -> None:
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-netdev", "-nic", "-net")]
    for value in values:
        if value.split(",")[0] == "user":
            assert "restrict=on" in value.split(","), value
            assert "hostfwd" not in value, value
            for fwd in (o for o in value.split(",") if o.startswith("guestfwd=")):
                assert "127.0.0.1" in fwd, fwd
    assert not any(v.startswith(("tap", "bridge", "socket", "vde")) for v in values), values
    assert "-nic" not in argv or any(
        argv[i + 1] == "none" for i, a in enumerate(argv) if a == "-nic"
    )
    if not values:
        assert "-nodefaults" in argv or "-nic" in argv, "no network given: QEMU adds a default NIC"


@pytest.fixture(scope="module")
def di_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (DI / "linux").is_file():
        pytest.skip("debian-installer-12-netboot-amd64 is not installed")
    base = tmp_path_factory.mktemp("di")
    tree = make_debian_tree(base, None, mode="none", kernel=(DI / "linux").read_bytes(),
                            initrd=(DI / "initrd.gz").read_bytes())  # fmt: skip
    return tree.location


@pytest.mark.timeout(300)
@pytest.mark.parametrize("network", [None, "user", "none"])
def test_dry_run_local_tree_network_is_restricted(
    di_tree: Path, tmp_path: Path, network: str | None
) -> None:
    out = dry_run(str(di_tree) + "/", tmp_path, *(["--network", network] if network else []))
    argv = out["argv"]
    assert isinstance(argv, list)
    assert_restricted(argv)
    if network == "none":
        nets = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-netdev", "-nic", "-net")]
        assert all(not str(v).startswith("user") for v in nets), nets


@pytest.mark.timeout(300)
def test_dry_run_http_tree_network_is_restricted(di_tree: Path, tmp_path: Path) -> None:
    from _hostile_server import HostileServer

    root = di_tree.parents[4]  # <base>/debian/dists/bookworm/main/installer-amd64 -> <base>
    srv = HostileServer(root).start()
    try:
        out = dry_run(srv.url("ok", str(di_tree.relative_to(root)) + "/"), tmp_path)
    finally:
        srv.close()
    argv = out["argv"]
    assert isinstance(argv, list)
    assert_restricted(argv)


@pytest.mark.timeout(300)
def test_dry_run_iso_network_is_restricted(tmp_path: Path) -> None:
    # A Debian netinst image built here with the real d-i kernel and initrd: it plans an
    # install (the shared fake media carry no kernel), with or without ../shared.
    need_xorriso()
    need_debian_netboot()
    iso = build_iso(tmp_path / "debian-12.iso", debian_netinst_files(),
                    volume_id="Debian 12.4.0 amd64 n")  # fmt: skip
    env = dict(os.environ, TREEBOOT_CACHE=str(tmp_path / "cache"),
               TREEBOOT_HOME=str(tmp_path / "home"))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "treeboot", "install", str(iso), "--name", "iso", "--disk",
         "size=1", "--accel", "tcg", "--dry-run", "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    argv = json.loads(proc.stdout)["argv"]
    assert_restricted(argv)
