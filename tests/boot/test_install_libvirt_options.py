"""``install --connect``: the keyboard on ``--console attach``, ``--wait 0``'s background
watcher, ``--pool``, ``--network bridge=`` and the default network, on the tests' private
libvirtd (fixtures in ``_libvirt_fixtures.py``; every object a test makes is removed, also on
failure).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from _libvirt_helpers import (
    Libvirtd,
    firstboot_volume,
    isolated_network,
    json_of,
    leftover_objects,
    needs_libvirtd,
)
from _libvirt_helpers import treeboot_on as _treeboot
from _vm_helpers import (
    DI_KERNEL,
    FIRSTBOOT_MARKER,
    INSTALLER_MARKER,
    TREE_PATH,
    busybox_initrd,
    debian_tree,
    needs_qemu,
    pid_gone,
    reap_pids,
    state_dir,
    status,
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


# -- --wait 0 -------------------------------------------------------------------------------


def test_wait_0_returns_and_a_detached_watcher_boots_the_disk(
    libvirtd: Libvirtd, debian_tree: Path, tmp_path: Path, clean: list[str]
) -> None:
    """As on QEMU: ``--wait 0`` returns while phase 1 runs; the watcher it left behind sees the
    installer power off, defines and starts the disk-booting domain, deletes the uploads,
    watches phase 2 to its end and records the outcome for ``treeboot list``."""
    name = f"tb-lv-bg-{os.getpid()}"
    clean.append(name)
    initrd = busybox_initrd(tmp_path / "initrd.cpio",
                            f"echo {INSTALLER_MARKER}\nsleep 20\npoweroff -f\n")  # fmt: skip
    disk = firstboot_volume(libvirtd, tmp_path, name)
    watcher: int | None = None
    try:
        proc = _treeboot(libvirtd, "install", str(debian_tree / TREE_PATH), "--name", name,
                         "--connect", libvirtd.uri, "--network", "none",
                         "--kernel", str(DI_KERNEL), "--initrd", str(initrd),
                         "--disk", f"path={disk},format=raw", "--wait", "0",
                         "--json")  # fmt: skip
        st = status(name)
        watcher = st.get("watcher_pid")
        assert proc.returncode == 0, proc.stderr
        assert json_of(proc)["result"]["outcome"] == "running-in-background"
        # treeboot has exited; phase 1 runs, owned by a watcher in a session of its own.
        assert isinstance(watcher, int) and not pid_gone(watcher)
        assert os.getsid(watcher) == watcher
        assert (st["state"], st["phase"]) == ("running", "install")
        assert libvirtd.virsh("domstate", name).stdout.strip() == "running"
        deadline = time.monotonic() + 500
        while status(name).get("state") != "stopped" or not pid_gone(watcher):
            assert time.monotonic() < deadline, status(name)
            time.sleep(0.5)
    finally:
        reap_pids([watcher] if isinstance(watcher, int) else [])
    st = status(name)
    assert (st["phase"], st["outcome"]) == ("firstboot", "powered-off"), st
    log = (state_dir(name) / "console.log").read_text(errors="replace")
    assert log.index(INSTALLER_MARKER) < log.index(FIRSTBOOT_MARKER)
    assert "<kernel>" not in libvirtd.virsh("dumpxml", name).stdout  # phase 2, persistent
    watcher_log = (state_dir(name) / "watcher.log").read_text().splitlines()
    line = next(ln for ln in watcher_log if "libvirt_watch: {" in ln)
    result = json.loads(line[line.index("{") :])
    assert [(p["phase"], p["outcome"]) for p in result["phases"]] == [
        ("install", "installer-finished"),
        ("firstboot", "powered-off"),
    ]
    listed = json.loads(_treeboot(libvirtd, "list", "--json").stdout)
    entry = next(vm for vm in listed if vm["name"] == name)
    assert (entry["state"], entry["phase"], entry["outcome"]) == (
        "stopped", "firstboot", "powered-off")  # fmt: skip


# -- --pool ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _dir_pool(daemon: Libvirtd, name: str) -> Iterator[Path]:
    """A dir pool under the daemon's root (which its QEMU user may traverse); removed after,
    with whatever volumes are left in it."""
    import libvirt

    target = daemon.root / name
    xml = f"<pool type='dir'><name>{name}</name><target><path>{target}</path></target></pool>"
    conn = libvirt.open(daemon.uri)
    pool = None
    try:
        pool = conn.storagePoolDefineXML(xml, 0)
        pool.build(0)
        pool.create(0)
        yield target
    finally:
        if pool is not None:
            with contextlib.suppress(libvirt.libvirtError):
                for vol in pool.listAllVolumes():
                    vol.delete(0)
            with contextlib.suppress(libvirt.libvirtError):
                pool.destroy()
            pool.undefine()
        conn.close()


def test_pool_option_holds_the_disk_and_the_uploads_until_deleted(
    libvirtd: Libvirtd, debian_tree: Path, tmp_path: Path, clean: list[str]
) -> None:
    name = f"tb-lv-pool-{os.getpid()}"
    pool = f"tbpool{os.getpid() % 100000}"
    clean.append(name)
    initrd = busybox_initrd(tmp_path / "initrd.cpio", f"echo {INSTALLER_MARKER}\npoweroff -f\n")
    with _dir_pool(libvirtd, pool) as target:
        proc = _treeboot(libvirtd, "install", str(debian_tree / TREE_PATH), "--name", name,
                         "--connect", libvirtd.uri, "--pool", pool, "--network", "none",
                         "--kernel", str(DI_KERNEL), "--initrd", str(initrd),
                         "--disk", "size=1", "--no-reboot", "--wait", "400", "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        out = json_of(proc)
        assert out["result"]["outcome"] == "installer-finished"
        assert out["plan"]["disk"]["path"] == f"{target}/{name}.qcow2"
        xml = ET.fromstring((state_dir(name) / "install.xml").read_text())
        for tag in ("kernel", "initrd"):  # booted from volumes uploaded into that pool
            assert xml.findtext(f"os/{tag}") == f"{target}/treeboot-{name}-{tag}"
        left = leftover_objects(libvirtd)["volumes"]
        assert [v for v in left if v.startswith(f"{pool}/")] == [f"{pool}/{name}.qcow2"]
        assert [v for v in left if name in v] == [f"{pool}/{name}.qcow2"]  # no other pool


# -- --network ------------------------------------------------------------------------------


@contextlib.contextmanager
def _bridge_with_server(
    daemon: Libvirtd, tree: Path, subnet: int = 78
) -> Iterator[tuple[str, str]]:
    """A bridge in the daemon's network namespace (made by the tests) with the host address
    192.168.SUBNET.1, and an HTTP server of ``tree`` bound there: (bridge, server URL)."""
    bridge, address = f"tbbr{os.getpid() % 100000}", f"192.168.{subnet}.1"
    ns = daemon.netns
    subprocess.run([*ns, "ip", "link", "add", bridge, "type", "bridge"], check=True)
    server: subprocess.Popen[str] | None = None
    try:
        subprocess.run([*ns, "ip", "addr", "add", f"{address}/24", "dev", bridge], check=True)
        subprocess.run([*ns, "ip", "link", "set", bridge, "up"], check=True)
        # nsenter execs the server (no --fork): this PID is the server's.
        server = subprocess.Popen([*ns, sys.executable, "-u", "-m", "http.server", "0",
                                   "--bind", address, "--directory", str(tree)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)  # fmt: skip
        assert server.stdout is not None
        line = server.stdout.readline()  # "Serving HTTP on ADDRESS port N (...)"
        port = line.split(" port ")[1].split()[0]
        yield bridge, f"http://{address}:{port}/"
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        subprocess.run([*ns, "ip", "link", "del", bridge], check=False)


def test_bridge_network_gives_the_domain_a_nic_on_that_bridge(
    libvirtd: Libvirtd, debian_tree: Path, tmp_path: Path, clean: list[str]
) -> None:
    """``--network bridge=BR`` on a bridge that exists where libvirtd runs: the domain XML
    names it, and libvirt starts the guest with its tap on it (it refuses a missing bridge)."""
    name = f"tb-lv-br-{os.getpid()}"
    clean.append(name)
    initrd = busybox_initrd(tmp_path / "initrd.cpio", "echo BRIDGED\npoweroff -f\n")
    with _bridge_with_server(libvirtd, debian_tree) as (bridge, url):
        proc = _treeboot(libvirtd, "install", url + TREE_PATH, "--name", name,
                         "--connect", libvirtd.uri, "--network", f"bridge={bridge}",
                         "--kernel", str(DI_KERNEL), "--initrd", str(initrd),
                         "--disk", "none", "--wait", "400", "--json", netns=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["result"]["outcome"] == "installer-finished"
    assert "BRIDGED" in (state_dir(name) / "console.log").read_text(errors="replace")
    iface = ET.fromstring((state_dir(name) / "install.xml").read_text()).find(
        "devices/interface")  # fmt: skip
    assert iface is not None and iface.get("type") == "bridge"
    assert iface.find("source").get("bridge") == bridge  # type: ignore[union-attr]


def _interfaces(proc: subprocess.CompletedProcess[str]) -> list[ET.Element]:
    xml = ET.fromstring(json_of(proc)["domain_xml"])
    return xml.findall("devices/interface")


def test_default_network_is_libvirts_default_when_it_exists_else_none(
    libvirtd: Libvirtd, debian_tree: Path, clean: list[str]
) -> None:
    """No ``--network``: libvirt's "default" network if the connection has one (here an
    isolated one the test defines: no ``<forward>``), else no network, with a notice."""
    import libvirt

    args = ("install", str(debian_tree / TREE_PATH), "--name", "tb-lv-default",
            "--connect", libvirtd.uri, "--disk", "none", "--dry-run", "--json")  # fmt: skip
    assert "default" not in leftover_objects(libvirtd)["networks"]
    proc = _treeboot(libvirtd, *args)
    assert proc.returncode == 0, proc.stderr
    assert _interfaces(proc) == []
    assert "has no 'default' network" in proc.stderr
    with isolated_network(libvirtd, "default", subnet=79):
        conn = libvirt.open(libvirtd.uri)
        try:
            assert ET.fromstring(conn.networkLookupByName("default").XMLDesc(0)).find(
                "forward") is None  # fmt: skip
        finally:
            conn.close()
        proc = _treeboot(libvirtd, *args)
    assert proc.returncode == 0, proc.stderr
    [iface] = _interfaces(proc)
    assert iface.get("type") == "network"
    assert iface.find("source").get("network") == "default"  # type: ignore[union-attr]
