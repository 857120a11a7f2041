"""``treeboot pxe``: identify, fetch and prepare like ``install``, then serve real machines.

    with start_netboot(NetbootRequest(["http://mirror/debian/.../installer-amd64/"],
                                      listen="192.168.1.5:8067", interface="eth0")) as svc:
        while True:
            svc.check(); time.sleep(1)

The preparation reuses install's steps (:mod:`treeboot.boot.steps`): the same identification,
verified cache, unattended files and kernel arguments. What differs is the hand-over: the
HTTP server and dnsmasq of :mod:`treeboot.boot.backends.pxe` instead of QEMU. Each MAC gets its
own unattended files (``--machine``), appended to the initrd as it is streamed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Self

from treeboot.artifacts.cpio import InjectFile
from treeboot.boot import steps
from treeboot.boot.backends.pxe import callback, grub
from treeboot.boot.backends.pxe.dnsmasq import (
    GRUB,
    SHIM,
    DnsmasqConfig,
    UefiLoader,
    render_dnsmasq_conf,
)
from treeboot.boot.backends.pxe.entry import BootEntry, LocalBoot
from treeboot.boot.backends.pxe.machines import Loader, Machine, merge_machines
from treeboot.boot.backends.pxe.server import ClientProfile, NetbootEntry, NetbootServer
from treeboot.boot.backends.pxe.state import BootState, MachineState, load_status
from treeboot.boot.backends.pxe.supervise import (
    GRUB_PREFIX,
    Dnsmasq,
    build_tftp_root,
    check_config,
    interface_ipv4,
)
from treeboot.boot.request import InstallRequest
from treeboot.boot.serve import AccessRecord
from treeboot.boot.vm import state_root
from treeboot.errors import UsageError
from treeboot.locate.open import open_location
from treeboot.model import Identification
from treeboot.notices import notice
from treeboot.prepare.inject import inject_files

DEFAULT_PORT = 8067


@dataclass(frozen=True)
class NetbootRequest:
    """What ``treeboot pxe`` was asked for."""

    locations: Sequence[str]
    listen: str | None = None  # ADDR:PORT for HTTP
    interface: str | None = None  # DHCP (proxy) + TFTP on this interface only
    extra_args: Sequence[str] = ()
    unattended: str | None = None
    initrd_inject: Sequence[Path] = ()
    machines: Sequence[str] = ()  # --machine MAC[,key=value,...]
    machines_files: Sequence[Path] = ()
    menu: bool = False
    max_boots: int = 1
    uefi_loader: UefiLoader = UefiLoader.SNPONLY
    dnsmasq_conf: Path | None = None  # write the config there; start no DHCP
    state_dir: Path | None = None
    arch: str | None = None
    insecure: bool = False
    require_signature: bool = False
    keyring: Path | None = None

    def __post_init__(self) -> None:
        if not self.locations:
            raise UsageError("give a LOCATION to serve")
        if len(self.locations) > 1 and not self.menu:
            raise UsageError("several locations need --menu", hint="add --menu to offer them all")
        if self.listen is None and self.interface is None:
            raise UsageError(
                "treeboot pxe binds only where it is told to",
                hint="give --interface IF (DHCP proxy + TFTP + HTTP on IF's address) and/or"
                " --listen ADDR:PORT for HTTP",
            )
        if self.max_boots < 0:
            raise UsageError("--max-boots must be 0 or more")
        if self.dnsmasq_conf is not None and self.interface is None:
            raise UsageError("--dnsmasq-conf needs --interface (the interface dnsmasq serves)")


def parse_listen(spec: str | None, default_host: str | None) -> tuple[str, int]:
    """``ADDR:PORT``, ``[v6]:PORT``, ``ADDR`` or ``:PORT`` -> (addr, port)."""
    if not spec:
        if default_host is None:
            raise UsageError("no address to listen on", hint="give --listen ADDR:PORT")
        return default_host, DEFAULT_PORT
    host, port = spec, str(DEFAULT_PORT)
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest.lstrip(":") or port
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    host = host or default_host or ""
    try:
        ipaddress.ip_address(host)
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError(port)
    except ValueError as e:
        raise UsageError(f"--listen {spec}: give ADDR:PORT with an IP address") from e
    return host, number


def _install_request(req: NetbootRequest, location: str, machine: Machine | None) -> InstallRequest:
    unattended = req.unattended
    if machine is not None and machine.unattended:
        extra = ",".join(f"{k}={v}" for k, v in machine.unattended.items())
        unattended = f"{unattended},{extra}" if unattended else extra
    extra_args = steps.split_extra_args(
        [*req.extra_args, *([machine.extra_args] if machine and machine.extra_args else [])]
    )
    return InstallRequest(
        location, name="pxe", arch=req.arch, extra_args=extra_args, unattended=unattended,
        initrd_inject=req.initrd_inject, insecure=req.insecure,
        require_signature=req.require_signature, keyring=req.keyring,
    )  # fmt: skip


def _repo_url(ident: Identification) -> str | None:
    if urllib.parse.urlsplit(ident.location).scheme in ("http", "https", "ftp"):
        return ident.location
    if "repo-url" in ident.needs:
        notice(f"{ident.location} is local: serve it over HTTP and give that URL so that the"
               " installer can reach the rest of the tree")  # fmt: skip
    return None


class _Location:
    """One location, prepared once; per-MAC profiles made on first request and kept."""

    def __init__(self, req: NetbootRequest, location: str, machines: dict[str, Machine]):
        self.req, self.machines = req, machines
        base = _install_request(req, location, None)
        self.ident, _, self.kernel, self.initrd = steps.identify_and_fetch(base)
        self.arch = steps.guest_arch(base, self.ident)
        self.repo_url = _repo_url(self.ident)
        self._lock = threading.Lock()
        self._profiles: dict[tuple[str, str], ClientProfile] = {}
        self.profile("00:00:00:00:00:00", "http://127.0.0.1/")  # fail now, not per client
        self.label = self.ident.name or self.ident.os or location

    def profile(self, mac: str, base_url: str) -> ClientProfile:
        with self._lock:
            key = (mac, base_url)
            if key not in self._profiles:
                self._profiles[key] = self._make(mac, base_url)
            return self._profiles[key]

    def _make(self, mac: str, base_url: str) -> ClientProfile:
        machine = self.machines.get(mac)
        req = _install_request(self.req, self.ident.location, machine)
        payload = steps.unattended_payload(req, self.ident)
        if payload.delivery != "initrd":
            raise UsageError(
                f"the {self.ident.installer} installer reads its unattended file from a CIDATA"
                " volume, which a network boot cannot attach",
                hint="drop --unattended for this location",
            )
        files = _with_callback(payload.files, f"{base_url}done/{mac}")
        cmdline = steps.kernel_cmdline(req, self.ident, self.arch, self.repo_url,
                                       replace(payload, files=files), self.kernel,
                                       medium_attached=False)  # fmt: skip
        inject = files + [InjectFile(Path(p).resolve()) for p in req.initrd_inject]
        return ClientProfile(
            cmdline, inject, secret=bool(payload.secrets),
            max_boots=machine.max_boots if machine else None,
            loader=machine.loader if machine else Loader.IPXE,
        )  # fmt: skip


def _with_callback(files: list[InjectFile], url: str) -> list[InjectFile]:
    out = []
    for f in files:
        if isinstance(f.data, bytes):
            text = callback.add_callback(f.archive_name, f.data.decode(), url)
            if text is not None:
                f = InjectFile(text.encode(), f.archive_name, f.mode)
        out.append(f)
    return out


@dataclass
class NetbootService:
    """A running ``treeboot pxe``: the HTTP server, and dnsmasq unless it was not asked for."""

    server: NetbootServer
    state: BootState
    http_url: str
    dnsmasq: Dnsmasq | None = None
    dnsmasq_conf: Path | None = None
    workdir: Path | None = None
    _closed: bool = field(default=False, repr=False)

    def check(self) -> None:
        """BootError if dnsmasq died."""
        if self.dnsmasq is not None:
            self.dnsmasq.check_alive()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.dnsmasq is not None:
                self.dnsmasq.stop()
        finally:
            self.server.close()
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def status_path(state_dir: Path | None) -> Path:
    return (state_dir or state_root() / "pxe") / "state.json"


def start_netboot(
    req: NetbootRequest,
    *,
    on_access: Callable[[str, AccessRecord], None] | None = None,
    on_dnsmasq_line: Callable[[str], None] | None = None,
) -> NetbootService:
    """Prepare every location, then start serving (see the module docstring)."""
    machines = merge_machines(req.machines, req.machines_files)
    locations = [_Location(req, loc, machines) for loc in req.locations]
    if_addr, subnet = interface_ipv4(req.interface) if req.interface else (None, None)
    listen = parse_listen(req.listen, if_addr)
    state = BootState(status_path(req.state_dir), max_boots=req.max_boots)
    entries = [NetbootEntry(loc.label, loc.kernel, loc.initrd, loc.profile) for loc in locations]
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="treeboot-pxe-"))
        workdir.chmod(0o755)  # dnsmasq drops to nobody and must reach tftp/
        stack.callback(shutil.rmtree, workdir, True)
        # For --dnsmasq-conf the TFTP root must outlive us: it goes next to the config.
        tftp = workdir / "tftp" if req.dnsmasq_conf is None else Path(f"{req.dnsmasq_conf}.tftp")
        grub_files = _GrubFiles(tftp, locations[0], machines, state)
        server = NetbootServer(entries, state, listen=listen, loaders_dir=tftp, menu=req.menu,
                               on_access=on_access, on_done=grub_files.write)  # fmt: skip
        stack.callback(server.close)
        svc = NetbootService(server, state, server.url, workdir=workdir)
        if req.interface is None:
            stack.pop_all()
            return svc
        assert if_addr is not None and subnet is not None
        host = if_addr if listen[0] in ("0.0.0.0", "::") else listen[0]
        http_base = f"http://{host}:{server.port}/"
        shim_dir = _shim_dir(locations, machines, workdir / "shim")
        build_tftp_root(tftp, shim_dir=shim_dir, grub_stub=grub.render_grub_stub())
        if shim_dir is not None:
            grub_files.start(http_base)
        cfg = DnsmasqConfig(
            req.interface, str(subnet.network_address), str(tftp), http_base, if_addr,
            uefi_loader=req.uefi_loader,
            secure_boot_macs=[m for m, v in machines.items() if v.loader is Loader.SHIM],
        )  # fmt: skip
        conf = req.dnsmasq_conf or workdir / "dnsmasq.conf"
        conf.write_text(render_dnsmasq_conf(cfg))
        svc.dnsmasq_conf, svc.http_url = conf, http_base
        if req.dnsmasq_conf is not None:
            check_config(conf)
            notice(f"wrote {conf}; its tftp-root {tftp} stays after treeboot stops")
            stack.pop_all()
            return svc
        svc.dnsmasq = Dnsmasq(conf, on_line=on_dnsmasq_line)
        stack.pop_all()
        return svc
    raise AssertionError("unreachable")


class _GrubFiles:
    """The Secure Boot chain's files on TFTP: Debian's signed GRUB has no HTTP, so it reads
    its per-MAC config, the kernel and the initrd over TFTP. Each ``loader=shim`` MAC gets
    its config (rewritten to local boot when its install calls back) and, when files are
    appended, its own initrd; files that carry secrets are refused (TFTP has no per-MAC
    access control)."""

    def __init__(
        self, tftp: Path, loc: _Location, machines: dict[str, Machine], state: BootState
    ) -> None:
        self.loc, self.state = loc, state
        self.macs = [m for m, v in machines.items() if v.loader is Loader.SHIM]
        self.cfg_dir = tftp / GRUB_PREFIX / "treeboot"
        self.files = tftp / "treeboot"
        self._entries: dict[str, BootEntry] = {}

    def start(self, http_base: str) -> None:
        self.cfg_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.files.mkdir(mode=0o755, exist_ok=True)
        _public_copy(self.loc.kernel, self.files / "linux")
        for mac in self.macs:
            prof = self.loc.profile(mac, http_base)
            if prof.secret:
                raise UsageError(
                    f"--machine {mac},loader=shim: its unattended file carries secrets, and"
                    " the Secure Boot chain fetches the initrd over TFTP, open to any client",
                    hint="use ssh-key= instead of a password file for this machine, or loader=ipxe",
                )
            initrd = "initrd"
            if prof.inject:
                initrd = f"initrd-{mac.replace(':', '-')}"
                inject_files(self.loc.initrd, list(prof.inject), self.files / initrd)
                (self.files / initrd).chmod(0o644)
            elif not (self.files / initrd).exists():
                _public_copy(self.loc.initrd, self.files / initrd)
            self._entries[mac] = BootEntry(self.loc.label, "/treeboot/linux",
                                           f"/treeboot/{initrd}", tuple(prof.cmdline))  # fmt: skip
            self.write(mac)

    def write(self, mac: str) -> None:
        entry = self._entries.get(mac)
        if entry is None:
            return
        done = load_status(self.state.path).get(mac, {}).get("state") == str(MachineState.DONE)
        choice: BootEntry | LocalBoot = LocalBoot("install done") if done else entry
        path = self.cfg_dir / f"{mac}.cfg"
        path.write_text(grub.render_grub_cfg(choice))
        path.chmod(0o644)


def _public_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    dst.chmod(0o644)


def _shim_dir(locations: list[_Location], machines: dict[str, Machine], dest: Path) -> Path | None:
    """The directory of the tree's signed shim and GRUB (next to its kernel), if any."""
    if not any(m.loader is Loader.SHIM for m in machines.values()):
        return None
    loc = locations[0]
    kernel_dir = (loc.ident.kernel or "").rsplit("/", 1)[0]
    dest.mkdir()
    with open_location(loc.ident.location, insecure=loc.req.insecure) as tree:
        for name in (SHIM, GRUB):
            rel = f"{kernel_dir}/{name}" if kernel_dir else name
            if tree.size(rel) is None:
                raise UsageError(
                    f"--machine ...,loader=shim: {loc.ident.location} has no {rel}",
                    hint="Secure Boot needs a tree that ships its signed shim and GRUB (Debian)",
                )
            (dest / name).write_bytes(tree.read_range(rel, 0, tree.size(rel) or 0))
    return dest
