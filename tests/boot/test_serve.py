"""The guest's file server, the per-connection relay, and the restricted guest network."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _iso_helpers import build_iso
from _paths import ROOT
from _serve_helpers import boot_kernel, build_net_initrd, need_guest_tools
from treeboot.boot.serve import (
    GUEST_URL,
    GuestServer,
    guest_netdev_args,
    reachable_check,
    relay_argv,
    rewrite_for_guest,
)
from treeboot.errors import BootError, UsageError
from treeboot.locate.open import open_location

BODY = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "images" / "pxeboot").mkdir(parents=True)
    (root / "images" / "pxeboot" / "vmlinuz").write_bytes(BODY)
    (root / ".treeinfo").write_text("[general]\nfamily = Fedora\n")
    (root / "dists").symlink_to("images")  # a symlink inside the tree is fine
    (tmp_path / "secret").write_text("host secret\n")
    (root / "escape").symlink_to(tmp_path / "secret")
    return root


@pytest.fixture
def server(tree: Path, tmp_path: Path) -> Iterator[GuestServer]:
    with GuestServer(tree, access_log=tmp_path / "access.log") as srv:
        yield srv


def request(
    srv: GuestServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# -- serving --------------------------------------------------------------------------------


def test_get_and_head(server: GuestServer) -> None:
    status, headers, body = request(server, "/images/pxeboot/vmlinuz")
    assert (status, body) == (200, BODY)
    assert headers["content-length"] == str(len(BODY)) and headers["accept-ranges"] == "bytes"
    assert "last-modified" in headers
    status, headers, body = request(server, "/images/pxeboot/vmlinuz", "HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", str(len(BODY)))
    assert request(server, "/dists/pxeboot/vmlinuz")[2] == BODY  # symlink within the tree
    assert request(server, "/images//pxeboot/./vmlinuz?x=1")[0] == 200
    assert server.guest_url == GUEST_URL == "http://10.0.2.100/"


@pytest.mark.parametrize(
    "rng, status, content_range, part",
    [
        ("bytes=0-99", 206, "bytes 0-99/10240", BODY[:100]),
        ("bytes=10000-", 206, "bytes 10000-10239/10240", BODY[10000:]),
        ("bytes=-40", 206, "bytes 10200-10239/10240", BODY[-40:]),
        ("bytes=10200-99999", 206, "bytes 10200-10239/10240", BODY[10200:]),
        ("bytes=0-1,5-6", 200, None, BODY),  # several ranges: the whole file
        ("bytes=5-1", 200, None, BODY),  # invalid: ignored
        ("items=0-1", 200, None, BODY),
        ("bytes=10240-", 416, "bytes */10240", None),
    ],
)
def test_ranges(
    server: GuestServer, rng: str, status: int, content_range: str | None, part: bytes | None
) -> None:
    got, headers, body = request(server, "/images/pxeboot/vmlinuz", headers={"Range": rng})
    assert got == status
    assert headers.get("content-range") == content_range
    if part is not None:
        assert body == part


def test_if_range_mismatch_sends_everything(server: GuestServer) -> None:
    headers = {"Range": "bytes=0-9", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"}
    assert request(server, "/images/pxeboot/vmlinuz", headers=headers)[0] == 200
    _, h, _ = request(server, "/images/pxeboot/vmlinuz", "HEAD")
    headers["If-Range"] = h["last-modified"]
    assert request(server, "/images/pxeboot/vmlinuz", headers=headers)[0] == 206


@pytest.mark.parametrize(
    "path, status",
    [
        ("/../secret", 400),
        ("/images/../../secret", 400),
        ("/%2e%2e/secret", 400),
        ("/images/%2E%2E/%2e%2e/secret", 400),
        ("/escape", 403),  # symlink out of the tree
        ("/images\\..\\..\\secret", 400),
        ("/a%00b", 400),
        ("/images", 404),  # no directory listings
        ("/", 404),
        ("/nonexistent", 404),
        ("//etc/passwd", 404),  # just a path inside the tree
    ],
)
def test_nothing_outside_the_tree(server: GuestServer, path: str, status: int) -> None:
    got, _, body = request(server, path)
    assert got == status
    assert b"host secret" not in body and b"root:" not in body


def test_raw_request_targets(server: GuestServer) -> None:
    for target, status in ((b"http://10.0.2.100/.treeinfo", 200), (b"*", 400), (b"x", 400)):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:80]


def test_other_methods_are_refused(server: GuestServer) -> None:
    assert request(server, "/.treeinfo", "POST")[0] == 501
    assert request(server, "/.treeinfo", "PUT")[0] == 501


def test_keep_alive_serves_several_requests_on_one_connection(server: GuestServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/.treeinfo")
            r = conn.getresponse()
            assert r.status == 200 and r.read().startswith(b"[general]")
        conn.request("GET", "/missing")
        r = conn.getresponse()
        assert r.status == 404
        r.read()
        conn.request("GET", "/.treeinfo")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def _wait_for_records(server: GuestServer, count: int) -> None:
    """The server records a request after its last byte is sent: the client may be faster."""
    deadline = time.monotonic() + 10
    while len(server.requests) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_access_log(server: GuestServer, tmp_path: Path) -> None:
    request(server, "/images/pxeboot/vmlinuz", headers={"Range": "bytes=0-9"})
    _wait_for_records(server, 1)
    request(server, "/../secret")
    _wait_for_records(server, 2)
    records = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert [(r["method"], r["path"], r["status"], r["bytes"]) for r in records] == [
        ("GET", "/images/pxeboot/vmlinuz", 206, 10),
        ("GET", "/../secret", 400, 0),
    ]
    assert records[0]["range"] == "bytes=0-9" and records[1]["note"] == "'..' in path"
    assert [r.status for r in server.requests] == [206, 400]


def test_add_file_and_bytes(server: GuestServer, tmp_path: Path) -> None:
    image = tmp_path / "big.iso"
    image.write_bytes(b"ISO" * 1000)
    assert server.add_file("/images/big.iso", image) == "http://10.0.2.100/images/big.iso"
    assert server.add_bytes("preseed.cfg", b"d-i x y\n") == "http://10.0.2.100/preseed.cfg"
    assert request(server, "/images/big.iso")[2] == b"ISO" * 1000
    assert request(server, "/preseed.cfg", headers={"Range": "bytes=2-"})[2] == b"i x y\n"
    with pytest.raises(UsageError):
        server.add_bytes("/", b"")
    with pytest.raises(UsageError):
        server.add_bytes("../x", b"")


def test_serves_a_location(tree: Path) -> None:
    with open_location(str(tree)) as loc, GuestServer(loc) as srv:
        assert request(srv, "/images/pxeboot/vmlinuz")[2] == BODY
        assert (
            request(srv, "/images/pxeboot/vmlinuz", headers={"Range": "bytes=-5"})[2] == (BODY[-5:])
        )
        assert request(srv, "/images")[0] == 404
        assert request(srv, "/../x")[0] == 400


def test_serves_an_iso_and_the_image_itself(tmp_path: Path) -> None:
    iso = build_iso(tmp_path / "My Ubuntu.iso", {"casper/vmlinuz": BODY, "md5sum.txt": "x\n"},
                    volume_id="Ubuntu-Server 24.04 LTS amd64")  # fmt: skip
    with GuestServer(str(iso)) as srv:
        assert request(srv, "/casper/vmlinuz")[2] == BODY
        status, headers, _ = request(srv, "/My_Ubuntu.iso", "HEAD")
        assert status == 200 and int(headers["content-length"]) == iso.stat().st_size
        assert request(srv, "/My_Ubuntu.iso", headers={"Range": "bytes=32769-32773"})[2] == (
            b"CD001"
        )


def test_unservable_sources(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        GuestServer(tmp_path / "missing")


def test_close_drops_idle_keep_alive_connections(tree: Path) -> None:
    srv = GuestServer(tree)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/.treeinfo")
    conn.getresponse().read()
    srv.close()  # must not wait for the idle connection
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/.treeinfo")
        conn.getresponse()
    conn.close()


# -- the relay ------------------------------------------------------------------------------


def run_relay(port: int, payload: bytes, *, half_close: bool = False) -> tuple[int, bytes]:
    """Start the relay the way libslirp does (fds 0-2 on one socketpair end)."""
    ours, theirs = socket.socketpair()
    with ours:
        fd = theirs.fileno()
        proc = subprocess.Popen(relay_argv(port), stdin=fd, stdout=fd, stderr=fd)
        theirs.close()
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                ours.sendall(payload)  # a relay that could not connect may be gone already
                if half_close:
                    ours.shutdown(socket.SHUT_WR)
            reply = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := ours.recv(65536):
                    reply += chunk
            ours.close()
            return proc.wait(timeout=30), reply
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_relay_carries_http_both_ways(server: GuestServer, tree: Path) -> None:
    req = b"GET /images/pxeboot/vmlinuz HTTP/1.1\r\nHost: 10.0.2.100\r\nConnection: close\r\n\r\n"
    rc, reply = run_relay(server.port, req)
    assert rc == 0
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(BODY)
    big = BODY * 800  # 8 MiB: many chunks each way of the relay's loop
    (tree / "big").write_bytes(big)
    rc, reply = run_relay(server.port, b"GET /big HTTP/1.0\r\n\r\n", half_close=True)
    assert rc == 0 and reply.endswith(b"\r\n\r\n" + big)


def test_relay_to_a_closed_port_closes_quietly(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        rc, reply = run_relay(port, b"GET / HTTP/1.0\r\n\r\n")
    assert rc == 3 and reply == b""  # nothing (no traceback) reaches the guest


def test_relay_needs_no_site_packages() -> None:
    argv = relay_argv(1)
    assert argv[1:3] == ["-I", "-S"] and Path(argv[3]).name == "_relay.py"
    rc = subprocess.run([*argv[:4], "only-one-arg"], stdin=subprocess.DEVNULL, check=False)
    assert rc.returncode == 2


# -- guest network arguments ----------------------------------------------------------------


def test_user_network_with_a_forward() -> None:
    args = guest_netdev_args(8080, "user", python="/opt/my py,thon/bin/python3")
    assert args[0] == "-netdev" and len(args) == 2
    relay = ROOT / "src" / "treeboot" / "boot" / "_relay.py"
    assert args[1] == (
        "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:"
        f"'/opt/my py,,thon/bin/python3' -I -S {relay} 127.0.0.1 8080"
    )
    with_device = guest_netdev_args(8080, "user", device_model="e1000")
    assert with_device[2:] == ["-device", "e1000,netdev=net0"]
    assert guest_netdev_args(None, "user") == ["-netdev", "user,id=net0,restrict=on"]


def test_no_network() -> None:
    assert guest_netdev_args(None, "none") == ["-nic", "none"]
    with pytest.raises(UsageError):
        guest_netdev_args(8080, "none")
    with pytest.raises(UsageError, match="not supported"):
        guest_netdev_args(None, "bridge")
    with pytest.raises(UsageError):
        guest_netdev_args(70000, "user")


@pytest.mark.parametrize(
    "url, guest, port",
    [
        ("http://127.0.0.1:8000/debian/", "http://10.0.2.100/debian/", 8000),
        ("http://localhost/x?y=1", "http://10.0.2.100/x?y=1", 80),
        ("http://127.1.2.3:9/", "http://10.0.2.100/", 9),
        ("http://[::1]:8000/tree/", "http://10.0.2.100/tree/", 8000),
        ("http://u:p@127.0.0.1:81/t/", "http://u:p@10.0.2.100/t/", 81),
        ("http://deb.debian.org/debian/", "http://deb.debian.org/debian/", None),
        ("https://10.1.2.3/x/", "https://10.1.2.3/x/", None),
    ],
)
def test_rewrite_for_guest(url: str, guest: str, port: int | None) -> None:
    assert rewrite_for_guest(url) == (guest, port)


def test_rewrite_refuses_loopback_https_and_ftp() -> None:
    for url in ("https://127.0.0.1:8443/x/", "ftp://localhost/pub/"):
        with pytest.raises(BootError, match="only plain http") as e:
            rewrite_for_guest(url)
        assert e.value.hint


def test_reachable_check(server: GuestServer) -> None:
    reachable_check(server.url + ".treeinfo")
    with pytest.raises(BootError, match="404"):
        reachable_check(server.url + "nonexistent")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(BootError, match="host itself cannot"):
            reachable_check(f"http://127.0.0.1:{port}/", timeout=5)
    reachable_check("ftp://127.0.0.1:1/")  # not probed


# -- end to end: a real kernel fetching through the relay -----------------------------------


@pytest.mark.qemu
@pytest.mark.slow
def test_guest_fetches_through_the_relay_and_nothing_else(tmp_path: Path) -> None:
    """The Debian 12 kernel with a busybox initrd, under TCG: several wget connections to
    10.0.2.100 reach the server; the host's loopback (10.0.2.2) and a TEST-NET address do not.
    """
    need_guest_tools()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "marker.txt").write_text("treeboot-relay-marker\n")
    with GuestServer(tree, access_log=tmp_path / "access.log") as srv:
        probe = "printf 'GET /marker.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {0} {1} | grep -c marker"
        commands = f"""
for i in 1 2 3; do echo "GOT $i: $(wget -q -O - http://10.0.2.100/marker.txt)"; done
echo "HOSTLOOP: $({probe.format("10.0.2.2", srv.port)})"
echo "OUTSIDE: $({probe.format("192.0.2.1", 80)})"
echo "GUESTFWD: $({probe.format("10.0.2.100", 80)})"
"""
        initrd = build_net_initrd(tmp_path / "initrd.cpio", commands)
        netdev = guest_netdev_args(srv.port, "user", device_model="virtio-net-pci,romfile=")
        log = boot_kernel(initrd, tmp_path / "serial.log", netdev)
        requests = list(srv.requests)
    assert "NET:     inet 10.0.2.15/24" in log, log[-2000:]
    assert log.count("GOT ") == 3
    assert log.count(": treeboot-relay-marker") == 3, log[-2000:]
    assert "HOSTLOOP: 0" in log  # restrict=on: no way to the host's other ports
    assert "OUTSIDE: 0" in log
    assert "GUESTFWD: 1" in log  # the same probe through the forward works
    assert [r.status for r in requests] == [200] * 4
    assert os.path.getsize(tmp_path / "access.log") > 0
