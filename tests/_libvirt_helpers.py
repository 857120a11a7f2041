"""A private, real libvirtd for tests (and the libvirt benchmark).

    with private_libvirtd(tmp) as lv:
        lv.uri            # "qemu:///system?socket=/tmp/.../run/libvirt-sock"
        lv.netns          # nsenter argv prefix: run a command in libvirtd's network namespace
        with isolated_network(lv, "tbnet12") as net: ...   # no <forward>: reaches nothing

libvirtd and virtlogd run as root in their own mount *and* network namespace
(``unshare -m -n``):

- ``/dev/kvm`` is masked by a device node the QEMU user cannot open (KVM hangs on this host,
  and a libvirtd that sees it spends 8-12 s probing it on every capabilities call);
- ``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and
  ``/var/cache/libvirt`` are bind-mounted from a private directory, so the daemons share
  nothing with another libvirtd on the machine;
- the bridges and dnsmasq of the networks a test defines live in a namespace the test made;
- the client reaches the daemon through the socket in the private ``run`` directory;
- both daemons write PID files there and are ended by those PIDs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NET = f"tbnet{os.getpid() % 100000}"  # the isolated network of a test session
LIBVIRTD = shutil.which("libvirtd", path="/usr/sbin:/usr/bin")
VIRTLOGD = shutil.which("virtlogd", path="/usr/sbin:/usr/bin")

_PRIVATE = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}

needs_libvirtd = pytest.mark.skipif(
    os.geteuid() != 0 or not LIBVIRTD or not VIRTLOGD or not shutil.which("unshare"),
    reason="needs root, libvirtd and virtlogd (libvirt-daemon, libvirt-daemon-driver-qemu)",
)


@dataclass
class Libvirtd:
    root: Path
    libvirtd_pid: int
    virtlogd_pid: int

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    @property
    def netns(self) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.libvirtd_pid}/ns/net", "--"]

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["virsh", "-c", self.uri, *args], capture_output=True, text=True, check=check,
            timeout=120,
        )  # fmt: skip


def _script(root: Path, share_boot_dir: bool) -> str:
    mounts = "\n".join(f"mkdir -p {dst}; mount --bind {root / src} {dst}"
                       for src, dst in _PRIVATE.items())  # fmt: skip
    if share_boot_dir:  # virt-install (a "local" client) writes kernels to the host's dir
        mounts = (f"mkdir -p /var/lib/libvirt/boot {root}/host-boot\n"
                  f"mount --bind /var/lib/libvirt/boot {root}/host-boot\n{mounts}\n"
                  f"mount --bind {root}/host-boot /var/lib/libvirt/boot")  # fmt: skip
    return f"""set -e
mount --make-rprivate /
if [ -e /dev/kvm ]; then mount --bind {root}/kvm-masked /dev/kvm; fi
{mounts}
ip link set lo up
{VIRTLOGD} -d -p {root}/run/virtlogd.pid
{LIBVIRTD} -d -p {root}/run/libvirtd.pid
"""


def _prepare_root(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # the qemu user traverses it to reach pool volumes
    # What /dev/kvm shows the daemon: a file the QEMU user may not open. libvirt then sees no
    # usable KVM, which agrees with what QEMU reports, so its capabilities cache stays valid
    # (masking with /dev/null, which anyone may open, makes it re-probe QEMU on every call).
    # A character device (libvirt copies /dev/kvm into QEMU's private /dev, which only works
    # for device nodes): the null device's numbers, mode 000.
    masked = root / "kvm-masked"
    masked.unlink(missing_ok=True)
    os.mknod(masked, 0o000 | stat.S_IFCHR, os.makedev(1, 3))
    masked.chmod(0)
    for sub in _PRIVATE:
        (root / sub).mkdir(exist_ok=True)
    etc = root / "etc"
    shutil.rmtree(etc)
    if Path("/etc/libvirt").is_dir():  # libvirt-daemon-system's config, when installed
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
    # No NAT'd "default" network, no host storage pools: a test defines its own.
    for path in (etc / "qemu" / "networks", etc / "storage"):
        shutil.rmtree(path, ignore_errors=True)
    (etc / "qemu" / "networks" / "autostart").mkdir(parents=True)
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:  # without libvirt-daemon-system (which pulls systemd and makes the user)
        with (etc / "qemu.conf").open("a") as f:
            f.write('user = "nobody"\ngroup = "nogroup"\n')
    for sub in ("qemu", "dnsmasq", "images", "boot"):
        (root / "lib" / sub).mkdir(exist_ok=True)
    (root / "log" / "qemu").mkdir(exist_ok=True)


def _read_pid(path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not appear")


def _kill(pid: int | None, name: str) -> None:
    if pid is None:
        return
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return
    if comm != name:  # the PID was reused: not ours
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def private_libvirtd(root: Path, *, share_boot_dir: bool = False) -> Iterator[Libvirtd]:
    """Start libvirtd + virtlogd as described above; stop both (by PID) afterwards.

    ``share_boot_dir``: the daemon sees the host's /var/lib/libvirt/boot, where virt-install
    on a local URI puts the kernels it downloads (the benchmark's peer)."""
    _prepare_root(root)
    logd: int | None = None
    lvd: int | None = None
    try:
        subprocess.run(["unshare", "-m", "-n", "sh", "-c", _script(root, share_boot_dir)],
                       check=True,
                       timeout=60)  # fmt: skip
        logd = _read_pid(root / "run" / "virtlogd.pid", 30)
        lvd = _read_pid(root / "run" / "libvirtd.pid", 30)
        daemon = Libvirtd(root, lvd, logd)
        _wait_answers(daemon)
        yield daemon
    finally:
        _kill_domains(root)  # libvirtd leaves running domains behind when it stops
        _kill(lvd, "libvirtd")
        _kill(logd, "virtlogd")
        _kill_children_of_namespace(root)


def _wait_answers(daemon: Libvirtd, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = daemon.virsh("uri", check=False)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"libvirtd does not answer: {proc.stderr.strip()}")
        time.sleep(0.2)


def _kill_domains(root: Path) -> None:
    """QEMU processes of this daemon's domains: their PID files are in its private run dir."""
    for pidfile in (root / "run" / "qemu").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if "qemu-system" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGKILL)


def _kill_children_of_namespace(root: Path) -> None:
    """dnsmasq of a network a test forgot to destroy: its PID file is in our private dir."""
    for pidfile in (root / "run" / "network").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            _kill(int(pidfile.read_text().strip()), "dnsmasq")


# -- objects a test defines ----------------------------------------------------------------


def _destroy_quietly(obj: Any, *calls: str) -> None:
    for call in calls:
        with contextlib.suppress(Exception):
            getattr(obj, call)()


@contextlib.contextmanager
def isolated_network(daemon: Libvirtd, name: str, subnet: int = 77) -> Iterator[str]:
    """A libvirt network with no ``<forward>``: guests reach the host's bridge address and
    nothing else. Yields the bridge address (192.168.SUBNET.1)."""
    import libvirt

    bridge = f"tb{os.getpid() % 100000}n{subnet}"
    xml = f"""<network><name>{name}</name><bridge name='{bridge}'/>
  <ip address='192.168.{subnet}.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.{subnet}.10' end='192.168.{subnet}.50'/></dhcp>
  </ip></network>"""
    conn = libvirt.open(daemon.uri)
    net = None
    try:
        net = conn.networkCreateXML(xml)
        yield f"192.168.{subnet}.1"
    finally:
        if net is not None:
            _destroy_quietly(net, "destroy")
        conn.close()


def leftover_objects(daemon: Libvirtd) -> dict[str, list[str]]:
    """Domains, pools, volumes and networks still on the daemon (what a test must have
    removed); pools and networks also when they are defined but inactive."""
    import libvirt

    conn = libvirt.open(daemon.uri)
    try:
        vols = []
        for pool in conn.listAllStoragePools():
            if pool.isActive():
                pool.refresh(0)
                vols += [f"{pool.name()}/{v}" for v in pool.listVolumes()]
        return {
            "domains": [d.name() for d in conn.listAllDomains()],
            "volumes": vols,
            "pools": sorted(p.name() for p in conn.listAllStoragePools()),
            "networks": sorted(n.name() for n in conn.listAllNetworks()),
        }
    finally:
        conn.close()


def treeboot_on(
    daemon: Libvirtd, *args: str, netns: bool = False, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The CLI, run to its end (in the daemon's network namespace with ``netns``)."""
    from _vm_helpers import treeboot_argv

    prefix = daemon.netns if netns else []
    return subprocess.run([*prefix, *treeboot_argv(*args)], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def firstboot_volume(daemon: Libvirtd, work: Path, name: str) -> str:
    """The first-boot test disk uploaded into a volume of the daemon's default pool: what
    ``--disk path=`` names on the hypervisor. Returns the volume's path there."""
    from _vm_helpers import firstboot_disk
    from treeboot.boot.backends.libvirt import Hypervisor

    hv = Hypervisor(daemon.uri)
    try:
        vol = hv.upload(hv.find_pool(None), firstboot_disk(work / "disk.img"), f"{name}.img")
        return str(vol.path)
    finally:
        hv.close()


def json_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.stdout, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def remove_domain(daemon: Libvirtd, name: str) -> None:
    """Destroy and undefine ``name`` if it exists (test cleanup, also on failure)."""
    import libvirt

    conn = libvirt.open(daemon.uri)
    try:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            return
        _destroy_quietly(dom, "destroy", "undefine")
    finally:
        conn.close()


# -- a throwaway sshd on 127.0.0.1, for qemu+ssh:// ----------------------------------------


@dataclass
class Sshd:
    port: int
    keyfile: Path
    proc: subprocess.Popen[bytes]

    def uri(self, daemon: Libvirtd) -> str:
        """qemu+ssh to this sshd; netcat reaches the private daemon's socket on the far end."""
        return (f"qemu+ssh://root@127.0.0.1:{self.port}/system?keyfile={self.keyfile}"
                f"&no_verify=1&proxy=netcat&socket={daemon.socket}")  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def throwaway_sshd(root: Path) -> Iterator[Sshd]:
    """sshd on 127.0.0.1 with its own host key, config, port and a fresh client key for root
    (only that key may log in, only from 127.0.0.1). Killed by PID afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)],
                       check=True)  # fmt: skip
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {root / "host_key"}
PidFile {root / "sshd.pid"}
AuthorizedKeysFile {root / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers root@127.0.0.1
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    sshd = shutil.which("sshd", path="/usr/sbin:/usr/bin") or "/usr/sbin/sshd"
    with (root / "sshd.log").open("wb") as log:
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)],
                                stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    try:
        _wait_port(port, proc)
        yield Sshd(port, root / "client_key", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError("sshd did not listen")
