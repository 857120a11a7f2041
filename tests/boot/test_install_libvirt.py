"""``treeboot install --connect URI`` against a real libvirtd started by the tests.

The daemon runs in its own mount and network namespace (see ``_libvirt_helpers``), so the
isolated network a test defines, its bridge and its dnsmasq live in a namespace the tests made;
commands that must see that network (the CLI serving a local tree on the bridge address) run
in it through ``nsenter``. Every domain, volume, pool and network is removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from _libvirt_helpers import (
    NET,
    Libvirtd,
    firstboot_volume,
    leftover_objects,
    needs_libvirtd,
    throwaway_sshd,
)
from _libvirt_helpers import json_of as _json
from _libvirt_helpers import treeboot_on as _treeboot
from _net_helpers import serve_http
from _vm_helpers import (
    DI_KERNEL,
    FIRSTBOOT_MARKER,
    INSTALLER_MARKER,
    TREE_PATH,
    busybox_initrd,
    debian_tree,
    needs_qemu,
    state_dir,
    treeboot_argv,
)
from treeboot.arch import Architecture
from treeboot.boot.backends.libvirt import Hypervisor
from treeboot.boot.backends.libvirt_xml import render_domain_xml
from treeboot.boot.plan import BootPlan, DiskPlan, NetworkPlan, Phase, VMPaths
from treeboot.boot.request import InstallRequest
from treeboot.detect.identify import identify
from treeboot.errors import UsageError

pytestmark = [pytest.mark.qemu, pytest.mark.slow, needs_qemu, needs_libvirtd]
__all__ = ["debian_tree"]

PROMPT = "Select a language"


def test_debian_installer_from_local_tree_on_isolated_network(
    libvirtd: Libvirtd, network: str, debian_tree: Path, clean: list[str]
) -> None:
    """The real installer reaches its prompt; the tree is served on the network's bridge."""
    name = f"tb-lv-di-{os.getpid()}"
    clean.append(name)
    proc = _treeboot(libvirtd, "install", str(debian_tree / TREE_PATH), "--name", name,
                     "--connect", libvirtd.uri, "--network", f"network={NET}",
                     "--disk", "none", "--wait-for", PROMPT, "--wait", "500", "--json",
                     netns=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = _json(proc)
    assert out["result"]["outcome"] == "wait-for-matched"
    assert PROMPT in (state_dir(name) / "console.log").read_text(errors="replace")
    xml = (state_dir(name) / "install.xml").read_text()
    assert "<on_reboot>destroy</on_reboot>" in xml and f"network=\"{NET}\"" in xml
    assert "treeboot-" in xml and "-kernel</kernel>" in xml  # booted from uploaded volumes


_SERVE_SNIPPET = """
import contextlib, sys, httpx
from treeboot.boot import libvirt_run
from treeboot.boot.request import InstallRequest
from treeboot.detect.identify import identify
req = InstallRequest(sys.argv[1], name="serve", connect=sys.argv[2], network=sys.argv[3])
ident = identify(req.location)
with libvirt_run.connect(req.connect) as hv, contextlib.ExitStack() as stack:
    net, url = libvirt_run.guest_network(hv, req, ident, stack, dry_run=False)
    print(net.mode, net.source, url)
    print(httpx.get(url + ident.kernel).status_code)
"""


def test_local_tree_is_served_on_the_networks_bridge_address(
    libvirtd: Libvirtd, network: str, debian_tree: Path
) -> None:
    """What the guest on the isolated network fetches the tree from: treeboot's server, bound
    to the network's host address (run in libvirtd's network namespace, where it exists)."""
    import sys

    proc = subprocess.run([*libvirtd.netns, sys.executable, "-c", _SERVE_SNIPPET,
                           str(debian_tree / TREE_PATH), libvirtd.uri, f"network={NET}"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    mode, source, url, status = proc.stdout.split()
    assert (mode, source, status) == ("network", NET, "200")
    assert url.startswith(f"http://{network}:")


def test_local_tree_is_refused_on_a_remote_connection(debian_tree: Path) -> None:
    from treeboot.boot import libvirt_run

    hv = Hypervisor.__new__(Hypervisor)  # no connection needed to decide this
    hv.uri = "qemu+ssh://root@hypervisor.example/system"
    assert hv.remote
    hv.network_exists = lambda name: True  # type: ignore[method-assign]
    req = InstallRequest(str(debian_tree / TREE_PATH), name="r", connect=hv.uri)
    ident = identify(req.location)
    with contextlib.ExitStack() as stack, pytest.raises(UsageError, match="on this machine"):
        libvirt_run.guest_network(hv, req, ident, stack, dry_run=True)


def test_poweroff_ends_phase1_and_phase2_boots_the_defined_domain(
    libvirtd: Libvirtd, debian_tree: Path, tmp_path: Path, clean: list[str]
) -> None:
    name = f"tb-lv-p2-{os.getpid()}"
    clean.append(name)
    initrd = busybox_initrd(tmp_path / "initrd.cpio", f"echo {INSTALLER_MARKER}\npoweroff -f\n")
    disk = firstboot_volume(libvirtd, tmp_path, name)  # an existing volume on the hypervisor
    proc = _treeboot(libvirtd, "install", str(debian_tree / TREE_PATH), "--name", name,
                     "--connect", libvirtd.uri, "--network", "none",
                     "--kernel", str(DI_KERNEL), "--initrd", str(initrd),
                     "--disk", f"path={disk},format=raw", "--wait", "400", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    phases = _json(proc)["result"]["phases"]
    assert [(p["phase"], p["outcome"]) for p in phases] == [
        ("install", "installer-finished"),
        ("firstboot", "powered-off"),
    ]
    log = (state_dir(name) / "console.log").read_text(errors="replace")
    assert log.index(INSTALLER_MARKER) < log.index(FIRSTBOOT_MARKER)
    out = libvirtd.virsh("dumpxml", name).stdout  # phase 2 was made persistent
    assert "<kernel>" not in out and "treeboot:install" in out
    # Found through its metadata from anywhere, without treeboot's local state:
    env = {**os.environ, "TREEBOOT_HOME": str(tmp_path / "elsewhere")}
    listed = subprocess.run(treeboot_argv("list", "--connect", libvirtd.uri, "--json"),
                            capture_output=True, text=True, env=env, check=True)  # fmt: skip
    entry = next(d for d in json.loads(listed.stdout) if d["name"] == name)
    assert entry["phase"] == "firstboot" and entry["state"] == "stopped"


def test_domain_destroyed_from_outside_is_exit_13(
    libvirtd: Libvirtd, debian_tree: Path, tmp_path: Path, clean: list[str]
) -> None:
    name = f"tb-lv-kill-{os.getpid()}"
    clean.append(name)
    initrd = busybox_initrd(tmp_path / "initrd.cpio", "echo READY-TO-DIE\nsleep 600\n")
    argv = treeboot_argv("install", str(debian_tree / TREE_PATH), "--name", name,
                         "--connect", libvirtd.uri, "--network", "none",
                         "--kernel", str(DI_KERNEL), "--initrd", str(initrd),
                         "--disk", "none", "--wait", "400")  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = state_dir(name) / "console.log"
        deadline = time.monotonic() + 300
        while not (log.exists() and "READY-TO-DIE" in log.read_text(errors="replace")):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.2)
        assert libvirtd.virsh("destroy", name).returncode == 0
        assert proc.wait(60) == 13, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_deletes_volumes_and_destroys_the_domain(
    libvirtd: Libvirtd, debian_tree: Path, tmp_path: Path, clean: list[str]
) -> None:
    name = f"tb-lv-term-{os.getpid()}"
    clean.append(name)
    initrd = busybox_initrd(tmp_path / "initrd.cpio", "echo RUNNING\nsleep 600\n")
    argv = treeboot_argv("install", str(debian_tree / TREE_PATH), "--name", name,
                         "--connect", libvirtd.uri, "--network", "none",
                         "--kernel", str(DI_KERNEL), "--initrd", str(initrd),
                         "--disk", "size=1", "--wait", "400")  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = state_dir(name) / "console.log"
        deadline = time.monotonic() + 300
        while not (log.exists() and "RUNNING" in log.read_text(errors="replace")):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.2)
        proc.terminate()
        assert proc.wait(60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = leftover_objects(libvirtd)
    assert left["domains"] == []
    assert left["volumes"] == [f"treeboot-boot/{name}.qcow2"]  # the disk is kept, uploads gone


# -- compared with virt-install ---------------------------------------------------------------


def _device_tags(root: ET.Element) -> set[str]:
    devices = root.find("devices")
    return {child.tag for child in devices} if devices is not None else set()


def _remove_pools_under(daemon: Libvirtd, directory: Path) -> None:
    import libvirt

    conn = libvirt.open(daemon.uri)
    try:
        for pool in conn.listAllStoragePools():
            target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""
            if target.startswith(str(directory)):
                with contextlib.suppress(libvirt.libvirtError):
                    pool.destroy()
                pool.undefine()
    finally:
        conn.close()


def test_same_guest_as_virt_install_print_xml(
    libvirtd: Libvirtd, network: str, tmp_path: Path
) -> None:
    """virt-install's --print-xml for the same inputs, against the same libvirtd: the
    differences are the ones docs/libvirt.md lists."""
    kernel, initrd, disk = tmp_path / "linux", tmp_path / "initrd.gz", tmp_path / "deb.qcow2"
    for file in (kernel, initrd, disk):
        file.write_bytes(b"x")
    argv = [
        "virt-install", "--connect", libvirtd.uri, "--print-xml", "1", "--dry-run",
        "--name", "deb", "--memory", "1024", "--vcpus", "2", "--machine", "q35",
        "--virt-type", "qemu", "--arch", "x86_64",
        "--osinfo", "debian11",  # the newest that Debian 12's osinfo-db knows
        "--boot", f"kernel={kernel},initrd={initrd},kernel_args=console=ttyS0",
        "--disk", f"path={disk},format=qcow2,bus=virtio", "--network", f"network={NET}",
        "--graphics", "none", "--console", "pty,target_type=serial", "--noautoconsole",
    ]  # fmt: skip
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    finally:
        _remove_pools_under(libvirtd, tmp_path)  # virt-install makes one for the disk's dir
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "virt-install.xml").write_text(proc.stdout)
    theirs = ET.fromstring(proc.stdout)
    plan = BootPlan(
        name="deb", arch=Architecture.X86_64, accel="tcg", memory_mib=1024, vcpus=2,
        paths=VMPaths.in_dir(tmp_path / "state"), kernel=kernel, initrd=initrd,
        cmdline=["console=ttyS0"], disk=DiskPlan(disk, "qcow2"),
        network=NetworkPlan("network", source=NET),
    )  # fmt: skip
    ours = ET.fromstring(render_domain_xml(plan, Phase.INSTALL))
    for path in ("name", "vcpu", "os/kernel", "os/initrd", "os/cmdline"):
        assert ours.findtext(path) == theirs.findtext(path), path
    # virt-install prints no on_reboot for its install phase: it restarts the domain itself.
    assert theirs.findtext("on_reboot") is None and ours.findtext("on_reboot") == "destroy"
    assert ours.find("os/type").get("machine") == theirs.find("os/type").get("machine")  # type: ignore[union-attr]
    assert int(ours.findtext("memory") or 0) * 1024 == int(theirs.findtext("memory") or 0)
    for tag in ("disk", "interface", "console", "rng"):
        assert tag in _device_tags(ours) and tag in _device_tags(theirs), tag
    # The documented differences (docs/libvirt.md):
    assert "panic" in _device_tags(ours) and "panic" not in _device_tags(theirs)
    assert ours.find("devices/memballoon").get("model") == "none"  # type: ignore[union-attr]
    assert theirs.find("devices/memballoon").get("model") == "virtio"  # type: ignore[union-attr]
    assert ours.find("devices/disk/driver").get("cache") == "unsafe"  # type: ignore[union-attr]
    assert theirs.find("devices/disk/driver").get("cache") is None  # type: ignore[union-attr]
    assert ours.find("devices/interface/rom").get("enabled") == "no"  # type: ignore[union-attr]
    assert theirs.find("devices/interface/rom") is None
    assert ours.find("cpu").get("mode") == "maximum"  # type: ignore[union-attr]


# -- remote: qemu+ssh:// ----------------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("sshd", path="/usr/sbin") or not shutil.which("nc"),
                    reason="needs openssh-server and netcat-openbsd")  # fmt: skip
def test_installer_prompt_over_qemu_ssh_through_uploaded_volumes(
    libvirtd: Libvirtd, debian_tree: Path, tmp_path: Path, clean: list[str]
) -> None:
    """Nothing shared but the SSH connection: the artifacts reach the hypervisor as uploaded
    volumes, the console comes back over the stream."""
    name = f"tb-lv-ssh-{os.getpid()}"
    clean.append(name)
    with throwaway_sshd(tmp_path / "ssh") as sshd, serve_http(debian_tree) as srv:
        uri = sshd.uri(libvirtd)
        proc = _treeboot(libvirtd, "install", srv.url + TREE_PATH, "--name", name,
                         "--connect", uri, "--network", "none", "--disk", "none",
                         "--wait-for", PROMPT, "--wait", "500", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = _json(proc)
    assert out["result"]["outcome"] == "wait-for-matched"
    assert PROMPT in (state_dir(name) / "console.log").read_text(errors="replace")
    xml = (state_dir(name) / "install.xml").read_text()
    assert "/var/lib/libvirt/boot/treeboot/treeboot-" in xml  # the hypervisor's volume paths


def test_local_tree_refused_over_ssh_with_a_network(libvirtd: Libvirtd, debian_tree: Path,
                                                     tmp_path: Path) -> None:  # fmt: skip
    with throwaway_sshd(tmp_path / "ssh") as sshd:
        proc = _treeboot(libvirtd, "install", str(debian_tree / TREE_PATH), "--name", "x",
                         "--connect", sshd.uri(libvirtd), "--network", f"network={NET}",
                         "--disk", "none", "--dry-run")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "is on this machine" in proc.stderr and "hint:" in proc.stderr


# -- list / console / stop ----------------------------------------------------------------------


def test_list_console_stop_see_a_libvirt_install(
    libvirtd: Libvirtd, debian_tree: Path, tmp_path: Path, clean: list[str]
) -> None:
    name = f"tb-lv-list-{os.getpid()}"
    clean.append(name)
    initrd = busybox_initrd(tmp_path / "initrd.cpio", "echo LISTED-AND-RUNNING\nsleep 600\n")
    argv = treeboot_argv("install", str(debian_tree / TREE_PATH), "--name", name,
                         "--connect", libvirtd.uri, "--network", "none",
                         "--kernel", str(DI_KERNEL), "--initrd", str(initrd),
                         "--disk", "none", "--wait", "400")  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = state_dir(name) / "console.log"
        deadline = time.monotonic() + 300
        while not (log.exists() and "LISTED-AND-RUNNING" in log.read_text(errors="replace")):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.2)
        listed = json.loads(_treeboot(libvirtd, "list", "--json").stdout)
        assert {"name": name, "state": "running"}.items() <= next(
            vm for vm in listed if vm["name"] == name).items()  # fmt: skip
        console = _treeboot(libvirtd, "console", name, "--no-follow")
        assert "LISTED-AND-RUNNING" in console.stdout
        stop = _treeboot(libvirtd, "stop", name, "--json")
        assert stop.returncode == 0, stop.stderr
        assert json.loads(stop.stdout)["was"] == "running"
        assert proc.wait(60) == 13  # stopped from outside
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    listed = json.loads(_treeboot(libvirtd, "list", "--json").stdout)
    assert next(vm for vm in listed if vm["name"] == name)["state"] == "stopped"
