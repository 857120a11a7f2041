"""``treeboot pxe``'s HTTP side on 127.0.0.1 (no DHCP: ``--listen`` only), with a real Debian
netboot tree: scripts per MAC, kernel/initrd with HEAD and Range, the per-MAC initrd with its
unattended file appended, boot once, bounds, and only the intended paths."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _vm_helpers import DI, TREE_PATH, debian_tree
from treeboot.artifacts.cpio import injected_offset
from treeboot.boot.backends.pxe.server import PER_CLIENT_CONNECTIONS
from treeboot.boot.netboot import NetbootRequest, NetbootService, start_netboot
from treeboot.errors import UsageError

__all__ = ["debian_tree"]
MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:00:00:02"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx7uE4CkIYUdFrXwG8KbUJ4wfzpwD9sm9QGJjEhaN1o t@x\n"

pytestmark = pytest.mark.skipif(not (DI / "linux").is_file(), reason="needs d-i netboot amd64")


def _get(svc: NetbootService, path: str, method: str = "GET", headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", svc.server.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.fixture
def serve(debian_tree: Path, tmp_path: Path) -> Iterator[object]:
    started: list[NetbootService] = []

    def start(**kw: object) -> NetbootService:
        key = tmp_path / "key.pub"
        key.write_text(KEY)
        args: dict[str, object] = {"listen": "127.0.0.1:0", "state_dir": tmp_path / "state"}
        req = NetbootRequest([str(debian_tree / TREE_PATH)], **(args | kw))  # type: ignore[arg-type]
        svc = start_netboot(req)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.close()


def test_script_chains_with_the_mac_then_boots_kernel_and_initrd(serve: object) -> None:
    svc = serve()  # type: ignore[operator]
    status, _, body = _get(svc, "/boot.ipxe", headers={"Host": "192.0.2.9:1234"})
    assert status == 200
    # URLs come from the Host the client used (NAT, port forwards).
    assert (
        body.decode()
        == "#!ipxe\nchain --autofree http://192.0.2.9:1234/boot.ipxe?mac=${net0/mac}\n"
    )
    status, _, body = _get(svc, f"/boot.ipxe?mac={MAC.replace(':', '%3A')}")
    script = body.decode()
    base = svc.server.url
    assert f"kernel {base}e0/linux initrd=initrd.img console=ttyS0" in script
    assert f"initrd --name initrd.img {base}e0/initrd/{MAC}" in script
    status, headers, kernel = _get(svc, "/e0/linux")
    assert status == 200 and kernel == (DI / "linux").read_bytes()
    assert headers["Content-Length"] == str(len(kernel))
    status, headers, body = _get(svc, "/e0/linux", "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(kernel)))
    status, headers, part = _get(svc, "/e0/linux", headers={"Range": "bytes=512-1023"})
    assert status == 206 and part == kernel[512:1024]
    assert headers["Content-Range"] == f"bytes 512-1023/{len(kernel)}"


def test_each_mac_gets_its_own_unattended_file_in_the_initrd(serve: object, tmp_path: Path) -> None:
    svc = serve(unattended=f"profile=minimal,ssh-key={tmp_path / 'key.pub'}",  # type: ignore[operator]
                machines=[f"{MAC},hostname=web1"])  # fmt: skip
    original = (DI / "initrd.gz").read_bytes()
    bodies = {}
    for mac in (MAC, OTHER):
        status, headers, body = _get(svc, f"/e0/initrd/{mac}")
        assert status == 200 and int(headers["Content-Length"]) == len(body)
        assert body[: len(original)] == original
        bodies[mac] = body[injected_offset(len(original)) :]
    assert b"preseed.cfg" in bodies[MAC] and b"web1" in bodies[MAC]
    assert b"web1" not in bodies[OTHER]
    # The callback for boot once names the MAC and the address the client used.
    assert f"{svc.server.url}done/{MAC}".encode() in bodies[MAC]
    # A range across the join of the original and the appended archive.
    whole = _get(svc, f"/e0/initrd/{MAC}")[2]
    start = len(original) - 10
    rng = {"Range": f"bytes={start}-{start + 99}"}
    status, _, part = _get(svc, f"/e0/initrd/{MAC}", headers=rng)
    assert status == 206 and part == whole[start : start + 100]


def test_initrd_with_secrets_goes_only_to_its_own_mac(serve: object, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret-password\n")
    svc = serve(unattended=f"profile=minimal,admin-password-file={pw}")  # type: ignore[operator]
    # 127.0.0.1 has no neighbour entry with that MAC: the secret-carrying initrd is refused.
    status, _, body = _get(svc, f"/e0/initrd/{MAC}")
    assert status == 403 and b"secrets" in body


def test_boot_once_then_local_boot_and_status(serve: object, tmp_path: Path) -> None:
    svc = serve()  # type: ignore[operator]
    assert b"kernel " in _get(svc, f"/boot.ipxe?mac={MAC}")[2]
    _get(svc, f"/e0/initrd/{MAC}", "HEAD")
    assert _get(svc, f"/done/{MAC}")[0] == 200
    assert _get(svc, f"/boot.ipxe?mac={MAC}")[2].decode().endswith("exit\n")
    # --max-boots 1: a MAC that never calls back gets the installer once.
    assert b"kernel " in _get(svc, f"/boot.ipxe?mac={OTHER}")[2]
    second = _get(svc, f"/boot.ipxe?mac={OTHER}")[2].decode()
    assert second.endswith("exit\n") and "--max-boots 1" in second
    out = subprocess.run(
        [sys.executable, "-m", "treeboot", "pxe", "--status", "--json",
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    machines = json.loads(out)["machines"]
    assert machines[MAC]["state"] == "done"
    assert machines[OTHER]["state"] == "local boot" and machines[OTHER]["boots"] == 1


def test_max_boots_per_machine(serve: object) -> None:
    svc = serve(max_boots=0, machines=[f"{MAC},max-boots=2"])  # type: ignore[operator]
    assert _get(svc, f"/boot.ipxe?mac={OTHER}")[2].decode().endswith("exit\n")
    for _ in range(2):
        assert b"kernel " in _get(svc, f"/boot.ipxe?mac={MAC}")[2]
    assert _get(svc, f"/boot.ipxe?mac={MAC}")[2].decode().endswith("exit\n")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 404), ("/e0/", 404), ("/e0", 404), ("/e1/linux", 404), ("/../../etc/passwd", 400),
        ("/e0/%2e%2e/%2e%2e/etc/passwd", 400), ("/e0/linux/../../x", 400), ("/etc/passwd", 404),
        ("/e0/initrd/not-a-mac", 400), ("/boot.ipxe?mac=zz", 400), ("/tftp/undionly.kpxe", 404),
        ("/e0/initrd.gz", 404), ("/snponly.efi", 404),
    ],
)  # fmt: skip
def test_only_the_intended_paths_exist(serve: object, path: str, status: int) -> None:
    svc = serve()  # type: ignore[operator]
    assert _get(svc, path)[0] == status


def test_writes_are_refused(serve: object) -> None:
    svc = serve()  # type: ignore[operator]
    for method in ("PUT", "POST", "DELETE"):
        assert _get(svc, "/e0/linux", method)[0] == 405


def test_many_clients_at_once(serve: object) -> None:
    svc = serve()  # type: ignore[operator]
    kernel = (DI / "linux").read_bytes()
    size = len(kernel)

    def fetch(i: int) -> bool:
        lo = i * size // 6
        hi = (i + 1) * size // 6 - 1
        st, _, body = _get(svc, "/e0/linux", headers={"Range": f"bytes={lo}-{hi}"})
        return st == 206 and body == kernel[lo : hi + 1]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert all(pool.map(fetch, range(6)))


def test_connections_per_client_are_bounded(serve: object) -> None:
    svc = serve()  # type: ignore[operator]
    idle = [socket.create_connection(("127.0.0.1", svc.server.port)) for _ in
            range(PER_CLIENT_CONNECTIONS)]  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while len(svc.server._conns) < PER_CLIENT_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.05)
        extra = socket.create_connection(("127.0.0.1", svc.server.port))
        extra.settimeout(10)
        extra.sendall(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n\r\n")
        assert extra.recv(100) == b""  # closed without an answer
        extra.close()
    finally:
        for s in idle:
            s.close()
    # Once they are gone, the client is served again.
    deadline = time.monotonic() + 10
    while svc.server._conns and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _get(svc, "/boot.ipxe")[0] == 200


def test_binding_is_explicit() -> None:
    with pytest.raises(UsageError, match="binds only where it is told"):
        NetbootRequest(["/tree"])
    proc = subprocess.run([sys.executable, "-m", "treeboot", "pxe", "/tree"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "hint: give --interface IF" in proc.stderr


def test_access_log_has_one_line_per_request(debian_tree: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "treeboot", "pxe", str(debian_tree / TREE_PATH),
         "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None and proc.stdout is not None
        line = ""
        while "serving on" not in line:
            line = proc.stderr.readline()
            assert line, "treeboot pxe exited early"
        url = line.split("serving on ", 1)[1].split()[0]
        host, port = url.split("//")[1].rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/boot.ipxe")
        conn.getresponse().read()
        conn.request("HEAD", "/nothing")
        conn.getresponse().read()
        conn.close()
        assert proc.stdout.readline().startswith("127.0.0.1 GET /boot.ipxe 200 ")
        assert proc.stdout.readline().startswith("127.0.0.1 HEAD /nothing 404 0 ")
        proc.send_signal(2)  # Ctrl-C: a clean stop
        assert proc.wait(30) == 0
        assert "stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_menu_offers_every_location(debian_tree: Path, tmp_path: Path) -> None:
    tree = str(debian_tree / TREE_PATH)
    with pytest.raises(UsageError, match="--menu"):
        NetbootRequest([tree, tree], listen="127.0.0.1:0")
    req = NetbootRequest([tree, tree], listen="127.0.0.1:0", menu=True, state_dir=tmp_path)
    with start_netboot(req) as svc:
        script = _get(svc, f"/boot.ipxe?mac={MAC}")[2].decode()
        assert script.startswith("#!ipxe\nmenu treeboot\n")
        assert f"{svc.server.url}e1/initrd/{MAC}" in script
        assert _get(svc, "/e1/linux", "HEAD")[0] == 200
