"""Per-VM state directories and the commands on them: list, console, stop, background start.

State lives in ``$TREEBOOT_HOME/vms/NAME`` (or ``platformdirs.user_state_dir("treeboot")``):

    plan.json     the BootPlan (see plan.py), secrets redacted
    watch.json    how the run is watched (WatchOptions)
    status.json   phase, state, outcome, PIDs; rewritten at each transition
    qemu.pid      PID of the running QEMU
    qmp.sock      QMP control socket
    console.sock  serial console socket (the log is written by QEMU itself)
    console.log   the serial console, appended across phases
    qemu.log      QEMU's own stderr
    disk.qcow2    the default disk image
    fw_cfg.trace  with --trace-boot
    watcher.log   output of a background watcher (``--wait 0``)
    install.xml, firstboot.xml   the domain XML of each phase (``--connect``)

Running QEMU is in watch.py; this module only reads and signals.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import platformdirs

from treeboot.boot._qemuproc import pid_matches, read_pidfile, signal_and_wait
from treeboot.boot.plan import BootPlan, VMPaths
from treeboot.errors import BootError, UsageError

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}")
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


def state_root() -> Path:
    home = os.environ.get("TREEBOOT_HOME")
    return Path(home) if home else Path(platformdirs.user_state_dir("treeboot"))


def vms_dir() -> Path:
    return state_root() / "vms"


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid VM name {name!r}",
            hint="use 1-63 letters, digits, '.', '_', '+' or '-', starting with a letter or digit",
        )
    return name


def vm_dir(name: str) -> Path:
    return vms_dir() / check_name(name)


def vm_paths(name: str, *, console_log: Path | None = None) -> VMPaths:
    paths = VMPaths.in_dir(vm_dir(name), console_log=console_log)
    sockets = (paths.qmp_socket, paths.serial_socket)
    too_long = [p for p in sockets if len(str(p)) > _MAX_SOCKET_PATH]
    if too_long:
        raise BootError(
            f"socket path {too_long[0]} is longer than {_MAX_SOCKET_PATH} bytes",
            hint="set TREEBOOT_HOME to a shorter directory",
        )
    return paths


# -- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VMStatus:
    name: str
    state: str  # "running" | "stopped"
    phase: str | None
    outcome: str | None
    qemu_pid: int | None
    watcher_pid: int | None
    console_log: str | None
    disk: str | None
    os: str | None
    location: str | None
    updated: float | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def write_status(paths: VMPaths, **fields: Any) -> None:
    """Merge ``fields`` into status.json (atomic replace)."""
    path = paths.state_dir / "status.json"
    status = _read_json(path)
    status.update(fields, updated=time.time())
    tmp = path.with_name(f".status.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, indent=2) + "\n")
    os.replace(tmp, path)


def save_plan(plan: BootPlan, secrets: list[str] | None = None) -> Path:
    plan.paths.state_dir.mkdir(parents=True, exist_ok=True)
    path = plan.paths.state_dir / "plan.json"
    path.write_text(redact(json.dumps(plan.to_json(), indent=2), secrets or []) + "\n")
    return path


def load_plan(state_dir: Path) -> BootPlan:
    return BootPlan.from_json(_read_json(state_dir / "plan.json"))


def redact(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "********")
    return text


def vm_status(name: str) -> VMStatus:
    state_dir = vm_dir(name)
    if not state_dir.is_dir():
        raise UsageError(f"no VM named {name!r} in {vms_dir()}", hint="see `treeboot list`")
    status = _read_json(state_dir / "status.json")
    plan = _read_json(state_dir / "plan.json")
    paths = VMPaths.in_dir(state_dir)
    qemu_pid = read_pidfile(paths.pidfile)
    running = qemu_pid is not None and pid_matches(qemu_pid, str(paths.qmp_socket))
    connect = status.get("connect")
    if isinstance(connect, str):  # libvirt runs it: ask the hypervisor
        running = _libvirt_running(connect, name)
    watcher = status.get("watcher_pid")
    return VMStatus(
        name=name,
        state="running" if running else "stopped",
        phase=status.get("phase"),
        outcome=None if running else status.get("outcome"),
        qemu_pid=qemu_pid if running else None,
        watcher_pid=watcher if isinstance(watcher, int) and _alive(watcher) else None,
        console_log=plan.get("paths", {}).get("console_log"),
        disk=(plan.get("disk") or {}).get("path"),
        os=plan.get("os"),
        location=plan.get("location"),
        updated=status.get("updated"),
    )


def _libvirt_running(uri: str, name: str) -> bool:
    from treeboot.boot.backends.libvirt import domain_running

    try:
        return domain_running(uri, name)
    except BootError:  # hypervisor unreachable: not known to run
        return False


def list_vms() -> list[VMStatus]:
    root = vms_dir()
    if not root.is_dir():
        return []
    return [vm_status(d.name) for d in sorted(root.iterdir()) if (d / "plan.json").exists()]


def _alive(pid: int) -> bool:
    return pid_matches(pid, "treeboot")


def read_status(state_dir: Path) -> dict[str, Any]:
    """status.json of a state directory as it is ({} if there is none)."""
    return _read_json(state_dir / "status.json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- stop ---------------------------------------------------------------------------------


def stop_vm(name: str, *, timeout: float = 15.0) -> VMStatus:
    """Stop a running VM: SIGTERM to the verified QEMU PID (QEMU shuts down cleanly, as on
    QMP ``quit``), SIGKILL if it lingers.

    The QMP socket is not used: the process watching the VM (a foreground ``treeboot
    install`` or a background watcher) holds its only connection. That process sees QEMU end
    with reason "host-signal", records the outcome "stopped" and exits; we wait for it too.
    """
    status = vm_status(name)
    paths = VMPaths.in_dir(vm_dir(name))
    connect = _read_json(paths.state_dir / "status.json").get("connect")
    if isinstance(connect, str) and status.state == "running":
        from treeboot.boot.backends.libvirt import destroy_domain

        destroy_domain(connect, name)  # the watcher sees it destroyed from outside
    elif status.state == "running" and status.qemu_pid is not None:
        signal_and_wait(status.qemu_pid, str(paths.qmp_socket), grace=timeout)
    if status.watcher_pid is not None:
        _wait_gone(status.watcher_pid, "treeboot", timeout)
    return vm_status(name)


def _wait_gone(pid: int, marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pid_matches(pid, marker):
        if time.monotonic() > deadline:
            signal_and_wait(pid, marker, grace=2.0)
            return
        time.sleep(0.05)


# -- console ------------------------------------------------------------------------------


def follow_console(
    name: str, out: IO[bytes], *, follow: bool = True, poll: float = 0.1
) -> Iterator[None]:
    """Copy the serial log to ``out``; with ``follow``, keep copying while the VM runs.

    A generator so the caller can stop it (Ctrl-C) between chunks; it yields after each poll.
    """
    status = vm_status(name)
    log = Path(status.console_log or vm_dir(name) / "console.log")
    offset = 0
    while True:
        offset = _copy_new(log, offset, out)
        if not follow or vm_status(name).state != "running":
            _copy_new(log, offset, out)
            return
        yield
        time.sleep(poll)


def _copy_new(path: Path, offset: int, out: IO[bytes]) -> int:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    if data:
        out.write(data)
        out.flush()
    return offset + len(data)


# -- background ---------------------------------------------------------------------------


def start_background_watcher(
    state_dir: Path,
    *,
    phase: str,
    timeout: float = 60.0,
    module: str = "treeboot.boot.watch",
) -> subprocess.Popen[bytes]:
    """Start ``python -m MODULE STATE_DIR --phase PHASE`` detached; return once the VM runs
    (status.json says "running" with the watcher's PID), or raise.

    The watcher owns the VM (QEMU dies with it; a libvirt domain is destroyed when it is
    signalled) and outlives this process deliberately: ``treeboot stop NAME`` ends it.
    ``module`` is ``treeboot.boot.watch`` (QEMU) or ``treeboot.boot.libvirt_watch``.
    """
    log = (state_dir / "watcher.log").open("ab")
    status_file = state_dir / "status.json"
    before = _read_json(status_file).get("updated")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, str(state_dir), "--phase", phase],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    try:
        if _wait_running(proc, status_file, before, timeout):
            return proc
    except KeyboardInterrupt:
        _end_watcher(proc)  # Ctrl-C while starting: nothing is left running
        raise
    tail = (state_dir / "watcher.log").read_text(errors="replace")[-2000:].strip()
    _end_watcher(proc)
    raise BootError(
        f"the background VM did not start (phase {phase})" + (f":\n{tail}" if tail else ""),
        hint=f"see {state_dir / 'watcher.log'}"
        + ("" if module.endswith("libvirt_watch") else f" and {state_dir / 'qemu.log'}"),
    )


def _wait_running(
    proc: subprocess.Popen[bytes], status_file: Path, before: Any, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        status = _read_json(status_file)
        if status.get("updated") != before and status.get("watcher_pid") == proc.pid:
            if status.get("state") == "running":
                return True
            if status.get("state") == "stopped":
                return False
        time.sleep(0.05)
    return False


def _end_watcher(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # the watcher stops its QEMU before it exits
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
