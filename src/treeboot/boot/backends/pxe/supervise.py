"""Run Debian's dnsmasq as treeboot's child (proxy-DHCP + TFTP), and what it needs around it.

- :func:`interface_ipv4` reads the named interface's address and network (``ip -j addr``);
- :func:`build_tftp_root` copies the small boot programs into a fresh directory, readable by
  the unprivileged user dnsmasq drops to: iPXE's ``undionly.kpxe``/``snponly.efi``/``ipxe.efi``
  (Debian ``ipxe``) and, for Secure Boot, the tree's own signed shim and GRUB at the prefix
  GRUB looks in, with a ``grub.cfg`` that fetches the per-MAC config over HTTP;
- :class:`Dnsmasq` checks the config (``dnsmasq --test``), starts dnsmasq in the foreground
  tied to our process, relays its log lines, and stops it by PID.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from treeboot.boot._qemuproc import popen_tied, stop_process
from treeboot.boot.backends.pxe.dnsmasq import BIOS_LOADER, GRUB, SHIM, UefiLoader
from treeboot.errors import BootError, MissingToolError, UsageError
from treeboot.run import find_binary, run

IPXE_DIR = Path("/usr/lib/ipxe")
_READY = "TFTP root is "
GRUB_PREFIX = "debian-installer/amd64/grub"  # built into Debian's signed grubx64.efi


def find_dnsmasq() -> str:
    for cand in (shutil.which("dnsmasq"), "/usr/sbin/dnsmasq"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise MissingToolError("dnsmasq was not found", hint="install it: apt-get install dnsmasq-base")


def interface_ipv4(interface: str) -> tuple[str, ipaddress.IPv4Network]:
    """The first IPv4 address of ``interface`` and its network."""
    proc = run([find_binary("ip"), "-j", "-4", "addr", "show", "dev", interface], check=False)
    try:
        infos = json.loads(proc.stdout or b"[]") if proc.returncode == 0 else []
        addr = next(a for i in infos for a in i.get("addr_info", []) if a.get("family") == "inet")
    except (ValueError, StopIteration):
        raise UsageError(
            f"--interface {interface}: no such interface, or it has no IPv4 address",
            hint="name an interface of this host on the clients' network (see `ip addr`)",
        ) from None
    net = ipaddress.IPv4Network(f"{addr['local']}/{addr['prefixlen']}", strict=False)
    return str(addr["local"]), net


def build_tftp_root(dest: Path, *, shim_dir: Path | None, grub_stub: str | None) -> Path:
    """Fill ``dest`` with the boot programs (world-readable: dnsmasq runs as nobody)."""
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    names = [BIOS_LOADER, *[str(u) for u in UefiLoader]]
    missing = [n for n in names if not (IPXE_DIR / n).is_file()]
    if missing:
        raise MissingToolError(
            f"{IPXE_DIR} lacks {', '.join(missing)}", hint="install them: apt-get install ipxe"
        )
    for n in names:
        _copy(IPXE_DIR / n, dest / n)
    if shim_dir is not None:
        _copy(shim_dir / SHIM, dest / SHIM)
        _copy(shim_dir / GRUB, dest / GRUB)
        gdir = dest / GRUB_PREFIX
        gdir.mkdir(parents=True, exist_ok=True)
        for d in [Path(GRUB_PREFIX), *Path(GRUB_PREFIX).parents]:
            (dest / d).chmod(0o755)
        cfg = gdir / "grub.cfg"
        cfg.write_text(grub_stub or "")
        cfg.chmod(0o644)
    return dest


def _copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    dst.chmod(0o644)


def check_config(conf: Path) -> None:
    """``dnsmasq --test``: BootError with dnsmasq's own words when it refuses the config."""
    proc = run([find_dnsmasq(), "--test", f"--conf-file={conf}"], check=False)
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise BootError(f"dnsmasq refuses the generated config {conf}: {err}")


class Dnsmasq:
    """dnsmasq in the foreground as our child; ``on_line`` gets each log line."""

    def __init__(
        self, conf: Path, *, on_line: Callable[[str], None] | None = None, timeout: float = 30
    ) -> None:
        check_config(conf)
        argv = [find_dnsmasq(), "--keep-in-foreground", f"--conf-file={conf}", "--log-facility=-"]
        self.proc = popen_tied(argv, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self._on_line = on_line
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True, name="dnsmasq-log")
        self._reader.start()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """dnsmasq logs its TFTP root once its sockets are bound; fail fast if it exits."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            self.check_alive()
            if time.monotonic() > deadline:
                raise BootError(f"dnsmasq did not start within {timeout:g} s")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if _READY in line:
                self._ready.set()
            if self._on_line is not None:
                self._on_line(line)

    def check_alive(self) -> None:
        """BootError if dnsmasq has exited (port 67 taken, interface gone, ...)."""
        code = self.proc.poll()
        if code is not None:
            raise BootError(
                f"dnsmasq exited with status {code}",
                hint="see its log lines above; is another DHCP proxy running on this interface?",
            )

    def stop(self) -> int:
        code = stop_process(self.proc)
        self._reader.join(timeout=5)
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
