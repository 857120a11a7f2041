"""Helpers for the guest-network tests: a tiny initrd that fetches over the guestfwd relay.

The guest is the Debian 12 installer's amd64 kernel (package debian-installer-12-netboot-amd64)
with an initrd built here: busybox-static (package busybox-static), the kernel's virtio-net
modules copied out of the d-i initrd (virtio_net is a module there, not built in), and an
/init script. Nothing of the installer runs.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from treeboot.artifacts.cpio import CpioEntry, build_newc

DI_DIR = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
DI_KERNEL = DI_DIR / "linux"
DI_INITRD = DI_DIR / "initrd.gz"
BUSYBOX = Path("/bin/busybox")
QEMU = "qemu-system-x86_64"
# virtio_net and what modules.dep says it needs, in load order.
VIRTIO_NET = (
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
)

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
  ifconfig "$interface" "$ip" netmask "$subnet"
  [ -n "$router" ] && ip route add default via "${router%% *}" ;;
esac
"""


def need_guest_tools() -> None:
    """Skip unless the d-i kernel/initrd, busybox-static and QEMU are installed."""
    for path, pkg in (
        (DI_KERNEL, "debian-installer-12-netboot-amd64"),
        (BUSYBOX, "busybox-static"),
    ):
        if not path.is_file():
            pytest.skip(f"{path} missing (apt-get install {pkg})")
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} missing (apt-get install qemu-system-x86)")


def iter_newc(data: bytes) -> Iterator[tuple[str, int, bytes]]:
    """(name, mode, content) of each entry of one uncompressed newc archive."""
    off = 0
    while off + 110 <= len(data):
        head = data[off : off + 110]
        if head[:6] not in (b"070701", b"070702"):
            raise ValueError(f"no newc header at {off}")
        fields = [int(head[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[off + 110 : off + 110 + namesize - 1].decode()
        start = (off + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return
        yield name, mode, data[start : start + size]
        off = (start + size + 3) & ~3


def modules_from_di_initrd(wanted: Sequence[str]) -> dict[str, bytes]:
    """Module files (paths relative to lib/modules/<version>/) from the d-i initrd."""
    found: dict[str, bytes] = {}
    for name, _mode, content in iter_newc(gzip.decompress(DI_INITRD.read_bytes())):
        for w in wanted:
            if name.startswith("lib/modules/") and name.endswith("/" + w):
                found[w] = content
    missing = set(wanted) - set(found)
    if missing:
        pytest.skip(f"{DI_INITRD} has no {sorted(missing)}")
    return found


def build_net_initrd(dest: Path, commands: str, *, modules: Sequence[str] = VIRTIO_NET) -> Path:
    """An initrd whose /init loads ``modules``, configures eth0 with DHCP, runs ``commands``
    (busybox sh) with output on the console, then powers off."""
    loads = "\n".join(f"insmod /mods/{Path(m).name}" for m in modules)
    net = f"""{loads}
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -n -q -t 5 -T 2 -s /udhcpc.sh >/dev/null 2>&1 || echo DHCP-FAILED
echo "NET: $(ip -4 addr show dev eth0 | grep inet)"
"""
    return build_busybox_initrd(dest, net + commands, modules=modules)


def build_busybox_initrd(dest: Path, commands: str, *, modules: Sequence[str] = ()) -> Path:
    """An initrd with busybox, ``modules`` under /mods and an /init that runs ``commands``,
    prints INIT-DONE and powers off."""
    mods = modules_from_di_initrd(modules) if modules else {}
    init = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
{commands}
echo INIT-DONE
poweroff -f
"""
    entries = [
        CpioEntry.directory("bin"),
        CpioEntry.directory("dev"),
        CpioEntry.char_device("dev/console", 5, 1),
        CpioEntry.directory("proc"),
        CpioEntry.directory("sys"),
        CpioEntry.directory("tmp"),
        CpioEntry.directory("mods"),
        CpioEntry.file("bin/busybox", BUSYBOX, 0o755),
        CpioEntry.file("init", init.encode(), 0o755),
        CpioEntry.file("udhcpc.sh", UDHCPC_SCRIPT.encode(), 0o755),
        *(CpioEntry.file(f"mods/{Path(m).name}", data) for m, data in mods.items()),
    ]
    dest.write_bytes(build_newc(entries))
    return dest


def boot_kernel(
    initrd: Path,
    serial_log: Path,
    extra_args: Sequence[str],
    *,
    append: str = "console=ttyS0 panic=-1",
    timeout: float = 240.0,
    done_marker: str = "INIT-DONE",
) -> str:
    """Boot the d-i kernel with ``initrd`` under TCG; return the serial log.

    QEMU is reaped by PID whatever happens; the guest powers itself off at the end of /init.
    """
    argv = [
        QEMU, "-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", f"file:{serial_log}", "-kernel", str(DI_KERNEL), "-initrd", str(initrd),
        "-append", append, *extra_args,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if serial_log.exists() and done_marker in serial_log.read_text(errors="replace"):
                proc.wait(timeout=30)  # poweroff -f follows the marker
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    text = serial_log.read_text(errors="replace") if serial_log.exists() else ""
    if done_marker not in text:
        raise AssertionError(
            f"guest did not finish (rc={proc.returncode}):\n{err.decode(errors='replace')}\n"
            f"--- serial log tail ---\n{text[-3000:]}"
        )
    return text
