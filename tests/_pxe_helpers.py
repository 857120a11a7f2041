"""A LAN built by the test for ``treeboot pxe``: namespaces, a bridge, two DHCP servers, taps.

    lan namespace:    bridge br0  <- tap per QEMU client
                        |-- veth --> router namespace: Debian dnsmasq, ordinary DHCP, no PXE
                        |-- veth --> pxe namespace:    treeboot pxe --interface p0 (proxy)

Names carry the test process's PID and a counter, so parallel runs never meet. Everything is
removed in :meth:`Lan.close` (called from a fixture's finally): processes by PID, then the
namespaces (which takes their interfaces with them).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

SUBNET = "10.77.0"
ROUTER_IP = f"{SUBNET}.1"
PXE_IP = f"{SUBNET}.2"
HTTP_PORT = 8067
OVMF_DIR = Path("/usr/share/OVMF")
_counter = itertools.count()

needs_root_net = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or not Path("/usr/sbin/dnsmasq").exists(),
    reason="needs root, iproute2 and dnsmasq-base to build a network namespace",
)


def sh(*argv: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    return subprocess.run(full, capture_output=True, text=True, check=check, timeout=30)


def kill_pid(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 10) -> None:
    """SIGTERM, then SIGKILL; always reaped. Only processes this helper started."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


class Lan:
    def __init__(self, workdir: Path, router_args: Sequence[str] = ()) -> None:
        sfx = f"{os.getpid()}-{next(_counter)}"
        self.lan, self.router, self.pxe = f"tbl-{sfx}", f"tbr-{sfx}", f"tbp-{sfx}"
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self._taps = itertools.count()
        self.router_args = list(router_args)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for ns in (self.lan, self.router, self.pxe):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.lan)
        sh("ip", "link", "set", "br0", "up", ns=self.lan)
        for ns, end, ip in ((self.router, "r0", ROUTER_IP), (self.pxe, "p0", PXE_IP)):
            peer = f"v{end}"
            sh("ip", "link", "add", peer, "type", "veth", "peer", "name", end, "netns", ns,
               ns=self.lan)  # fmt: skip
            sh("ip", "link", "set", peer, "master", "br0", "up", ns=self.lan)
            sh("ip", "addr", "add", f"{ip}/24", "dev", end, ns=ns)
            sh("ip", "link", "set", end, "up", ns=ns)
        leases = self.workdir / "router.leases"
        log = (self.workdir / "router-dnsmasq.log").open("wb")
        self.router_dnsmasq = self.start(
            self.router,
            ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--port=0", "--interface=r0",
             "--bind-interfaces", f"--dhcp-range={SUBNET}.100,{SUBNET}.199,1h",
             f"--dhcp-leasefile={leases}", "--log-dhcp", "--log-facility=-",
             f"--pid-file={self.workdir / 'router.pid'}", *self.router_args],
            stdout=log, stderr=log,
        )  # fmt: skip

    def start(self, ns: str, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        """A process in namespace ``ns`` (``ip netns exec`` execs it: the PID is its own)."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc  # type: ignore[no-any-return]

    def tap(self) -> str:
        name = f"tap{next(self._taps)}"
        sh("ip", "tuntap", "add", "dev", name, "mode", "tap", ns=self.lan)
        sh("ip", "link", "set", name, "master", "br0", "up", ns=self.lan)
        return name

    def close(self) -> None:
        for proc in reversed(self.procs):
            kill_pid(proc)
        for ns in (self.lan, self.router, self.pxe):
            sh("ip", "netns", "delete", ns, check=False)


@contextlib.contextmanager
def lan_network(workdir: Path, router_args: Sequence[str] = ()) -> Iterator[Lan]:
    lan = Lan(workdir, router_args)
    try:
        yield lan
    finally:
        lan.close()


def qemu_pxe_argv(
    tap: str,
    mac: str,
    console: Path,
    *,
    firmware: str = "bios",
    vars_file: Path | None = None,
    disk: Path | None = None,
    smp: int = 1,
) -> list[str]:
    """A q35 TCG guest that network-boots from ``tap``; its serial console goes to ``console``."""
    argv = [
        "qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "1024", "-smp", str(smp),
        "-display", "none", "-serial", f"file:{console}", "-monitor", "none",
        "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
    ]  # fmt: skip
    # Under UEFI the NIC gets no iPXE option ROM: OVMF's own PXE stack must do the boot.
    rom = "" if firmware == "bios" else ",romfile="
    argv += ["-device", f"virtio-net-pci,netdev=n0,mac={mac},bootindex=1{rom}"]
    if disk is not None:
        argv += ["-drive", f"file={disk},format=raw,if=none,id=d0",
                 "-device", "virtio-blk-pci,drive=d0,bootindex=2"]  # fmt: skip
    if firmware != "bios":
        code = "OVMF_CODE_4M.secboot.fd" if firmware == "secboot" else "OVMF_CODE_4M.fd"
        assert vars_file is not None
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_DIR / code}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_file}"]  # fmt: skip
        if firmware == "secboot":
            argv[argv.index("q35")] = "q35,smm=on"
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return argv


def wait_for_text(
    path: Path, text: str, timeout: float, procs: Sequence[subprocess.Popen[bytes]] = ()
) -> str:
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.args!r} exited with {p.returncode} before {text!r}")
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s; tail: {content[-2000:]!r}")
