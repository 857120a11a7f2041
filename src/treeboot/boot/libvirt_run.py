"""The install on a libvirt hypervisor (``--connect URI``): what differs from the QEMU path.

The plan is the same BootPlan; what changes is who opens the files and where they live:

- kernel, initrd (with injected files) and a CIDATA seed are uploaded into volumes of a pool
  on the hypervisor (``backends/libvirt.py``); the domain XML names those volumes' paths, and
  QEMU, started by libvirtd there, reads them. Kernel and initrd volumes are deleted as soon as
  the installer runs (QEMU has read them into guest memory), the others when the phase ends,
  and all of them on failure, Ctrl-C and SIGTERM.
- the disk is a qcow2 volume in the pool (``--pool``) or an existing volume/file.
- phase 1 is a transient domain (``createXML``, ``on_reboot=destroy``); its end comes from
  lifecycle events, with polling as the fallback. Phase 2 is made persistent (``defineXML``).
- the serial console comes over a ``virDomainOpenConsole`` stream into the local console log,
  where ``--wait-for`` and panic detection read it, exactly as on QEMU; virtlogd also keeps a
  log on the hypervisor (``<log file=...>``). ``--console attach`` also sends the keyboard
  into that stream (``_domain_watch.py``).
- ``--wait 0``: a detached watcher (``libvirt_watch.py``) runs both phases, as on QEMU.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from treeboot.arch import Architecture
from treeboot.boot import steps as prep
from treeboot.boot._domain_watch import DomainWatch
from treeboot.boot.accel import Accel, AccelChoice
from treeboot.boot.backends.libvirt import Hypervisor, Volume
from treeboot.boot.backends.libvirt_xml import DomainFacts, render_domain_xml
from treeboot.boot.plan import BootPlan, ConsoleMode, DiskPlan, NetworkPlan, Phase
from treeboot.boot.request import InstallRequest, NetworkRequest
from treeboot.boot.vm import start_background_watcher, write_status
from treeboot.boot.watch import Outcome, PhaseResult, RunResult, WatchOptions
from treeboot.errors import UsageError
from treeboot.model import Identification
from treeboot.notices import notice

log = logging.getLogger("treeboot.boot.libvirt")

_WATCHER = "treeboot.boot.libvirt_watch"  # python -m ...: the background watcher (--wait 0)
_WATCHER_START = 300.0  # seconds for it to upload the artifacts and start the domain


@contextlib.contextmanager
def connect(uri: str) -> Iterator[Hypervisor]:
    hv = Hypervisor(uri)
    try:
        yield hv
    finally:
        hv.close()


def choose_accel(hv: Hypervisor, request: InstallRequest, arch: Architecture) -> AccelChoice:
    domain_type = hv.domain_type(str(arch), request.accel)
    if domain_type == "kvm":
        return AccelChoice(Accel.KVM, f"the hypervisor at {hv.uri} offers KVM")
    return AccelChoice(Accel.TCG, f"domain type qemu on {hv.uri}")


# -- network --------------------------------------------------------------------------------


def guest_network(
    hv: Hypervisor,
    request: InstallRequest,
    ident: Identification,
    stack: contextlib.ExitStack,
    *,
    dry_run: bool,
) -> tuple[NetworkPlan, str | None]:
    """virt-install's ``--network``; the default is libvirt's "default" network if it exists.

    A local tree or ISO (or a URL on this host's loopback) is served by treeboot's server on
    the host's address on that network, which the guest reaches; refused on remote hosts.
    """
    net = NetworkRequest.parse(request.network)
    if net.kind == "default":
        if hv.network_exists("default"):
            net = NetworkRequest("network", "default")
        else:
            notice(f"{hv.uri} has no 'default' network: the guest gets none (see --network)")
            net = NetworkRequest("none")
    if net.kind == "user":
        raise UsageError(
            "--network user with --connect: libvirt's user-mode network cannot be restricted"
            " to the tree as treeboot's is",
            hint="use --network network=NAME, bridge=BR or none",
        )
    if net.kind == "none":
        return NetworkPlan("none"), None
    plan = NetworkPlan(net.kind, source=net.source)
    from treeboot.boot import serve

    if not _needs_server(ident.location, serve):
        return plan, ident.location
    if hv.remote:
        raise UsageError(
            f"{ident.location} is on this machine, and {hv.uri} may be another one",
            hint="serve the tree over HTTP where the guest can reach it and pass its URL"
            " (or use --network none if the installer needs nothing from it)",
        )
    if net.kind != "network":
        raise UsageError(
            f"--network bridge={net.source}: treeboot cannot tell which address the guest"
            f" reaches this host at, to serve {ident.location}",
            hint="use --network network=NAME, or pass a URL the guest can reach",
        )
    if request.wait == 0:
        raise UsageError(
            f"--wait 0 with --connect: {ident.location} would be served to the guest by this"
            " treeboot process, which returns at once",
            hint="serve the tree over HTTP where the guest can reach it and pass its URL, or"
            " drop --wait 0",
        )
    host = hv.network_address(net.source or "")
    if dry_run:
        return plan, f"http://{host}:PORT/"
    server = stack.enter_context(serve.GuestServer(ident.location, host=host))
    return plan, f"http://{host}:{server.port}/"


def _needs_server(location: str, serve: Any) -> bool:
    if prep._is_local(location):
        return True
    return bool(serve.rewrite_for_guest(location)[1] is not None)


# -- disk -----------------------------------------------------------------------------------


def disk_plan(
    hv: Hypervisor,
    request: InstallRequest,
    ident: Identification,
    arch: Architecture,
    *,
    dry_run: bool,
) -> tuple[DiskPlan | None, Volume | None]:
    """``--disk size=N``: a qcow2 volume NAME.qcow2 in the pool; ``path=``: as it is."""
    req = prep.DiskRequest.parse(request.disk)
    if req.none:
        return None, None
    if req.path is not None and req.size_gib is None:
        vol = hv.volume_by_path(str(req.path))
        fmt = req.format or ("qcow2" if str(req.path).endswith(".qcow2") else "raw")
        if vol is None and hv.remote:
            notice(f"--disk path={req.path}: not a volume on {hv.uri}; used as a path there")
        return DiskPlan(req.path, fmt), None
    size = req.size_gib or prep.disk_size(ident, arch)
    fmt = req.format or "qcow2"
    name = f"{request.name}.{fmt}"
    if dry_run:
        return DiskPlan(Path(f"<pool>/{name}"), fmt, size, create=True), None
    pool = hv.find_pool(request.pool)
    vol = hv.create_volume(pool, name, int(size * 1024**3), fmt, replace=request.force)
    return DiskPlan(Path(vol.path), fmt, size, create=True), vol


# -- the run --------------------------------------------------------------------------------


class _Signalled(Exception):  # a control-flow signal, not an error
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT/SIGTERM raise, so uploads and waits unwind through their cleanup."""

    def handler(signum: int, _frame: Any) -> None:
        raise _Signalled(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(
    hv: Hypervisor, plan: BootPlan, request: InstallRequest, out: IO[bytes] | None
) -> RunResult:
    """Both phases in the foreground; with ``--wait 0`` a detached watcher runs them."""
    if request.wait == 0:
        return _run_in_background(plan)
    opts = WatchOptions(ConsoleMode(request.console), request.wait, request.wait_for)
    return run_phases(hv, plan, opts, out, pool=request.pool)


def run_phases(
    hv: Hypervisor,
    plan: BootPlan,
    opts: WatchOptions,
    out: IO[bytes] | None,
    *,
    pool: str | None,
    watch_firstboot: bool | None = None,
) -> RunResult:
    """Phase 1 until it ends, then phase 2; status.json says where it stands.

    Phase 2 is watched until it ends when ``watch_firstboot`` (the background watcher), or by
    default when the user watches (``--console attach``, ``--wait``, ``--wait-for``);
    otherwise it is defined, started and left to libvirt."""
    deadline = None if opts.wait is None else time.monotonic() + opts.wait
    phases: list[PhaseResult] = []
    uuid = hv.new_uuid(plan.name)
    if watch_firstboot is None:
        watch_firstboot = bool(
            opts.console is ConsoleMode.ATTACH or opts.wait is not None or opts.wait_for
        )
    with _signals_raise():
        try:
            phases.append(_install_phase(hv, plan, opts, deadline, out, uuid, pool))
        except _Signalled as e:
            outcome = Outcome.INTERRUPTED if e.signum == signal.SIGINT else Outcome.TERMINATED
            phases.append(PhaseResult(Phase.INSTALL, outcome, str(e), []))
        if _wants_firstboot(plan, phases[-1]):
            phases.append(_firstboot(hv, plan, opts, deadline, out, uuid, watch=watch_firstboot))
    last = phases[-1]
    if last.outcome is not Outcome.BACKGROUND:
        write_status(plan.paths, state="stopped", outcome=str(last.outcome), detail=last.detail)
    matched = any(p.outcome is Outcome.MATCHED for p in phases)
    return RunResult(last.outcome, phases, matched)


def _run_in_background(plan: BootPlan) -> RunResult:
    """``--wait 0``: as on QEMU, a detached watcher (``python -m treeboot.boot.libvirt_watch``)
    uploads, starts phase 1, waits for it to end, runs phase 2 and records the outcome in
    status.json; this returns once phase 1 runs. ``treeboot stop NAME`` ends both."""
    start_background_watcher(plan.paths.state_dir, phase=str(Phase.INSTALL), module=_WATCHER,
                             timeout=_WATCHER_START)  # fmt: skip
    then = "boots the installed disk when the installer ends"
    if plan.no_reboot or plan.disk is None:
        then = "waits for the installer to end"
    phase = PhaseResult(Phase.INSTALL, Outcome.BACKGROUND, f"started; a watcher {then}", [])
    return RunResult(Outcome.BACKGROUND, [phase])


def _wants_firstboot(plan: BootPlan, result: PhaseResult) -> bool:
    return result.outcome is Outcome.FINISHED and not plan.no_reboot and plan.disk is not None


def _facts(hv: Hypervisor, plan: BootPlan, uuid: str) -> DomainFacts:
    log_dir = hv.default_log_dir()
    log_file = f"{log_dir}/{plan.name}-serial0.log" if log_dir else None
    return DomainFacts(console_log=log_file, uuid=uuid)


def _install_phase(
    hv: Hypervisor,
    plan: BootPlan,
    opts: WatchOptions,
    deadline: float | None,
    out: IO[bytes] | None,
    uuid: str,
    pool: str | None,
) -> PhaseResult:
    uploads: list[Volume] = []
    try:
        hv_plan = _upload_artifacts(hv, plan, uploads, pool)
        xml = render_domain_xml(hv_plan, Phase.INSTALL, _facts(hv, plan, uuid))
        (plan.paths.state_dir / "install.xml").write_text(xml)
        with DomainWatch(hv, plan, opts, deadline, out) as watch:
            try:
                dom = hv.conn.createXML(xml, 0)
            except hv.lv.libvirtError as e:
                detail = f"createXML: {e.get_error_message()}"
                return PhaseResult(Phase.INSTALL, Outcome.QEMU_FAILED, detail, [])
            try:
                # QEMU has read kernel and initrd into guest memory: their volumes can go.
                for vol in [v for v in uploads if v.name.endswith(("-kernel", "-initrd"))]:
                    hv.delete_volume(vol)
                write_status(plan.paths, state="running", phase=str(Phase.INSTALL), domain=uuid)
                outcome, detail = watch.wait(dom)
            except BaseException:  # Ctrl-C, SIGTERM, a lost connection: nothing keeps running
                watch.destroy(dom)
                raise
    finally:
        for vol in uploads:
            hv.delete_volume(vol)
    return PhaseResult(Phase.INSTALL, outcome, detail, [])


def _upload_artifacts(
    hv: Hypervisor, plan: BootPlan, uploads: list[Volume], pool_name: str | None
) -> BootPlan:
    """Into ``--pool``, else the disk's pool, else the one the connection offers."""
    if pool_name is None and plan.disk is not None:
        pool_name = _pool_of(hv, plan.disk)
    pool = hv.find_pool(pool_name)
    changes: dict[str, Path] = {}
    for field, suffix in (("kernel", "kernel"), ("initrd", "initrd"), ("seed_iso", "seed")):
        local = getattr(plan, field)
        if local is None:
            continue
        vol = hv.upload(pool, local, f"treeboot-{plan.name}-{suffix}")
        uploads.append(vol)
        changes[field] = Path(vol.path)
    if plan.cdrom is not None and hv.remote:
        raise UsageError(
            f"the installer needs its ISO as a CD-ROM, and {plan.cdrom} is on this machine",
            hint="copy the ISO into a pool on the hypervisor and use a URL for the tree",
        )
    return replace(plan, **changes)  # type: ignore[arg-type]


def _pool_of(hv: Hypervisor, disk: DiskPlan) -> str | None:
    vol = hv.volume_by_path(str(disk.path))
    return vol.pool if vol is not None else None


def _firstboot(
    hv: Hypervisor,
    plan: BootPlan,
    opts: WatchOptions,
    deadline: float | None,
    out: IO[bytes] | None,
    uuid: str,
    *,
    watch: bool,
) -> PhaseResult:
    """Phase 2: the final XML boots the disk and is made persistent, as virt-install does."""
    xml = render_domain_xml(plan, Phase.FIRSTBOOT, _facts(hv, plan, uuid))
    (plan.paths.state_dir / "firstboot.xml").write_text(xml)
    try:
        with DomainWatch(hv, plan, opts, deadline, out) as watcher:
            dom = hv.conn.defineXML(xml)
            dom.create()
            write_status(plan.paths, state="running", phase=str(Phase.FIRSTBOOT))
            if not watch:
                return PhaseResult(Phase.FIRSTBOOT, Outcome.BACKGROUND, "defined and started", [])
            outcome, detail = watcher.wait(dom)
    except hv.lv.libvirtError as e:
        return PhaseResult(Phase.FIRSTBOOT, Outcome.QEMU_FAILED, e.get_error_message(), [])
    except _Signalled as e:
        outcome = Outcome.INTERRUPTED if e.signum == signal.SIGINT else Outcome.TERMINATED
        return PhaseResult(Phase.FIRSTBOOT, outcome, str(e), [])
    if outcome is Outcome.FINISHED:
        outcome = Outcome.POWERED_OFF
    return PhaseResult(Phase.FIRSTBOOT, outcome, detail, [])


def check_request(request: InstallRequest) -> None:
    """Options that mean nothing on libvirt, refused before anything is fetched."""
    if request.trace_boot:
        raise UsageError(
            "--trace-boot with --connect: libvirtd starts QEMU, so treeboot cannot add its"
            " fw_cfg trace points",
            hint="drop --connect to trace the hand-off under treeboot's own QEMU",
        )
