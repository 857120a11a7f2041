"""Run a BootPlan on QEMU and watch it through QMP and the serial log until it ends.

Phase 1 (install) boots the installer's kernel with ``-no-reboot``: when the installer reboots
or powers off, QEMU exits. Then phase 2 (first boot) starts the same machine from its disk,
without kernel/initrd, unless ``--no-reboot`` or there is no disk.

How a run ends, and the exit status of ``treeboot install``:

    ============================  ====  ==================================================
    outcome                       exit  meaning
    ============================  ====  ==================================================
    installer-finished            0     the installer powered off or rebooted
    wait-for-matched              0     ``--wait-for`` REGEX appeared on the serial console
    powered-off                   0     the installed system (phase 2) powered off
    running-in-background         0     ``--wait 0``, or phase 2 left running
    guest-panicked                10    GUEST_PANICKED event or "Kernel panic" on the console
    timed-out                     11    ``--wait`` seconds passed; the VM was stopped
    qemu-failed                   12    QEMU could not start or exited with an error
    stopped                       13    stopped from outside (``treeboot stop``, a signal)
    interrupted                   130   Ctrl-C; the VM was stopped, disk and logs kept
    terminated                    143   SIGTERM; likewise
    ============================  ====  ==================================================

Run as ``python -m treeboot.boot.watch STATE_DIR --phase install|firstboot`` it is the detached
background watcher used by ``--wait 0``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from treeboot.boot._console import ATTACHED, KeyboardForwarder, TerminalFilter
from treeboot.boot._qemuproc import popen_tied, stop_process
from treeboot.boot.backends.qemu import render_qemu_argv
from treeboot.boot.plan import BootPlan, ConsoleMode, Phase, VMPaths
from treeboot.boot.vm import load_plan, start_background_watcher, write_status
from treeboot.errors import BootError
from treeboot.run import find_binary

log = logging.getLogger("treeboot.boot.watch")

_POLL = 0.05
_QMP_CONNECT_TIMEOUT = 30.0
_PANIC_RE = re.compile(rb"Kernel panic - not syncing")
_TAIL = 64 * 1024  # bytes of console kept for matching across reads


class Outcome(StrEnum):
    FINISHED = "installer-finished"
    MATCHED = "wait-for-matched"
    POWERED_OFF = "powered-off"
    BACKGROUND = "running-in-background"
    PANICKED = "guest-panicked"
    TIMED_OUT = "timed-out"
    QEMU_FAILED = "qemu-failed"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"
    TERMINATED = "terminated"

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]


_EXIT_CODES = {
    Outcome.FINISHED: 0,
    Outcome.MATCHED: 0,
    Outcome.POWERED_OFF: 0,
    Outcome.BACKGROUND: 0,
    Outcome.PANICKED: 10,
    Outcome.TIMED_OUT: 11,
    Outcome.QEMU_FAILED: 12,
    Outcome.STOPPED: 13,
    Outcome.INTERRUPTED: 130,
    Outcome.TERMINATED: 143,
}


@dataclass(frozen=True)
class WatchOptions:
    console: ConsoleMode = ConsoleMode.LOG
    wait: float | None = None  # seconds; None = until the install ends; 0 = background
    wait_for: str | None = None  # regex on the serial console: the goal was reached

    def to_json(self) -> dict[str, Any]:
        return {"console": str(self.console), "wait": self.wait, "wait_for": self.wait_for}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WatchOptions:
        return cls(ConsoleMode(d["console"]), d.get("wait"), d.get("wait_for"))


@dataclass(frozen=True)
class PhaseResult:
    phase: Phase
    outcome: Outcome
    detail: str
    argv: list[str]
    qemu_pid: int | None = None
    qemu_status: int | None = None
    shutdown_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["phase"], d["outcome"] = str(self.phase), str(self.outcome)
        return d


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    phases: list[PhaseResult] = field(default_factory=list)
    matched: bool = False

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome),
            "exit_code": self.exit_code,
            "wait_for_matched": self.matched,
            "phases": [p.to_json() for p in self.phases],
        }


# -- the run ------------------------------------------------------------------------------


def run_vm(
    plan: BootPlan,
    opts: WatchOptions,
    *,
    out: IO[bytes] | None = None,
    firstboot_in_background: bool = True,
    start_phase: Phase = Phase.INSTALL,
) -> RunResult:
    """Run phase 1 (and phase 2) in the foreground; QEMU never outlives this call.

    Phase 2 is watched here when the user watches (console attach, ``--wait``, ``--wait-for``)
    or ``firstboot_in_background`` is false; otherwise it is handed to a background watcher.
    """
    deadline = None if opts.wait is None else time.monotonic() + opts.wait
    phases: list[PhaseResult] = []
    phase = start_phase
    try:
        if phase is Phase.INSTALL:
            phases.append(run_phase(plan, Phase.INSTALL, opts, deadline, out))
            _remove_temp_files(plan)
            if not _wants_firstboot(plan, phases[-1]):
                return _finish(plan, phases)
            phase = Phase.FIRSTBOOT
        watched = opts.console is ConsoleMode.ATTACH or opts.wait is not None or opts.wait_for
        if firstboot_in_background and not watched:
            start_background_watcher(plan.paths.state_dir, phase=str(Phase.FIRSTBOOT))
            phases.append(PhaseResult(Phase.FIRSTBOOT, Outcome.BACKGROUND, "started", []))
            return _finish(plan, phases)
        phases.append(run_phase(plan, Phase.FIRSTBOOT, opts, deadline, out))
        return _finish(plan, phases)
    finally:
        _remove_temp_files(plan)


def _wants_firstboot(plan: BootPlan, result: PhaseResult) -> bool:
    return result.outcome is Outcome.FINISHED and not plan.no_reboot and plan.disk is not None


def _finish(plan: BootPlan, phases: list[PhaseResult]) -> RunResult:
    last = phases[-1]
    matched = any(p.outcome is Outcome.MATCHED for p in phases)
    if last.outcome is not Outcome.BACKGROUND:
        write_status(plan.paths, state="stopped", outcome=str(last.outcome), detail=last.detail)
    return RunResult(last.outcome, phases, matched)


def _remove_temp_files(plan: BootPlan) -> None:
    for path in plan.temp_files:
        path.unlink(missing_ok=True)


def run_phase(
    plan: BootPlan,
    phase: Phase,
    opts: WatchOptions,
    deadline: float | None,
    out: IO[bytes] | None,
) -> PhaseResult:
    """Start QEMU for one phase, watch it until it ends, and always stop and reap it."""
    argv = render_qemu_argv(plan, phase)
    argv[0] = find_binary(argv[0])
    paths = plan.paths
    for sock in (paths.qmp_socket, paths.serial_socket):
        sock.unlink(missing_ok=True)
    log_offset = paths.console_log.stat().st_size if paths.console_log.exists() else 0
    with paths.qemu_log.open("ab") as qemu_log:
        qemu_log.write(f"--- {time.ctime()} phase {phase}\n".encode())
        qemu_log.flush()
        proc = popen_tied(argv, stdout=qemu_log, stderr=qemu_log, cwd=paths.state_dir)
    try:
        paths.pidfile.write_text(f"{proc.pid}\n")
        write_status(paths, state="running", phase=str(phase), qemu_pid=proc.pid, outcome=None)
        watcher = _Watcher(proc.pid, paths.console_log, log_offset, opts, deadline, out)
        import asyncio  # after QEMU's start: its import is not on the way there

        outcome, detail, reason = asyncio.run(watcher.run(proc, paths))
    finally:
        status = stop_process(proc)
        paths.pidfile.unlink(missing_ok=True)
    if outcome is Outcome.QEMU_FAILED:
        detail = _qemu_error(paths.qemu_log) or detail
    if phase is Phase.FIRSTBOOT and outcome is Outcome.FINISHED:
        outcome = Outcome.POWERED_OFF
    log.debug("phase %s ended: %s (%s)", phase, outcome, detail)
    return PhaseResult(phase, outcome, detail, argv, proc.pid, status, reason)


def _qemu_error(qemu_log: Path) -> str | None:
    lines = qemu_log.read_text(errors="replace").splitlines()
    errors = [ln for ln in lines if ln.startswith("qemu-system") and "terminating on" not in ln]
    return errors[-1] if errors else None


# -- the watcher --------------------------------------------------------------------------


_Verdict = tuple[Outcome, str, str | None]  # outcome, detail, QEMU's shutdown reason


class _Watcher:
    """Polls QEMU, its QMP events and the serial log; decides how the phase ended."""

    def __init__(
        self,
        pid: int,
        console_log: Path,
        offset: int,
        opts: WatchOptions,
        deadline: float | None,
        out: IO[bytes] | None,
    ) -> None:
        self.pid = pid
        self.console_log = console_log
        self.offset = offset
        self.deadline = deadline
        self.out = out if opts.console is ConsoleMode.ATTACH else None
        self.screen = TerminalFilter()  # guest bytes are not trusted with the user's terminal
        self.wait_for = re.compile(opts.wait_for.encode()) if opts.wait_for else None
        self.tail = b""
        self.signalled: int | None = None

    async def run(self, proc: Any, paths: VMPaths) -> _Verdict:
        import asyncio

        from qemu.qmp import EventListener, QMPClient

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        client = QMPClient(f"treeboot-{self.pid}")
        listener = EventListener(("SHUTDOWN", "GUEST_PANICKED"))
        client.register_listener(listener)
        keyboard: KeyboardForwarder | None = None
        try:
            connected = await self._connect(client, proc, paths.qmp_socket)
            if connected and self.out is not None and KeyboardForwarder.wanted():
                keyboard = KeyboardForwarder(paths.serial_socket)
                if keyboard.start(loop):
                    sys.stderr.write(ATTACHED)
            result = await self._loop(proc, client, listener)
            if proc.poll() is None and connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.execute("quit"), 5.0)
            return result
        finally:
            if keyboard is not None:
                keyboard.stop()
            with contextlib.suppress(Exception):
                await client.disconnect()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        self.signalled = sig

    async def _connect(self, client: Any, proc: Any, qmp_socket: Path) -> bool:
        import asyncio

        give_up = time.monotonic() + _QMP_CONNECT_TIMEOUT
        while proc.poll() is None and self.signalled is None and time.monotonic() < give_up:
            if qmp_socket.exists():
                try:
                    await client.connect(str(qmp_socket))
                    return True
                except Exception as e:  # QEMU has not started listening yet
                    log.debug("QMP connect: %s", e)
            await asyncio.sleep(0.02)
        return False

    async def _loop(self, proc: Any, client: Any, listener: Any) -> _Verdict:
        import asyncio

        while True:
            found = self._read_console()
            if found:
                return found
            if self.signalled is not None:
                name = signal.Signals(self.signalled).name
                interrupted = self.signalled == signal.SIGINT
                return (Outcome.INTERRUPTED if interrupted else Outcome.TERMINATED, name, None)
            events = {e["event"]: e.get("data", {}) for e in listener.history}
            if "GUEST_PANICKED" in events:
                return Outcome.PANICKED, "GUEST_PANICKED event", None
            if proc.poll() is not None:
                shutdown = await self._last_event(client, listener)
                return self._ended(proc.returncode, shutdown)
            if self.deadline is not None and time.monotonic() > self.deadline:
                return Outcome.TIMED_OUT, "--wait time limit reached", None
            await asyncio.sleep(_POLL)

    @staticmethod
    async def _last_event(client: Any, listener: Any) -> dict[str, Any] | None:
        """QEMU has exited: let the QMP reader process what it sent before its socket closed."""
        import asyncio

        from qemu.qmp import Runstate

        for _ in range(50):
            if client.runstate is not Runstate.RUNNING:
                break  # the reader saw EOF: every earlier message has been dispatched
            await asyncio.sleep(0.02)
        for event in reversed(listener.history):
            if event["event"] == "SHUTDOWN":
                data: dict[str, Any] = event.get("data", {})
                return data
        return None

    def _ended(self, status: int, shutdown: dict[str, Any] | None) -> _Verdict:
        found = self._read_console()  # the last lines may hold the marker
        if found:
            return found
        reason = shutdown.get("reason") if shutdown else None
        if reason in ("guest-shutdown", "guest-reset"):
            return Outcome.FINISHED, f"guest {reason.removeprefix('guest-')}", reason
        if reason == "guest-panic":
            return Outcome.PANICKED, "guest panic", reason
        if reason in ("host-qmp-quit", "host-signal") and status == 0:
            return Outcome.STOPPED, f"QEMU stopped from outside ({reason})", reason
        if status < 0:
            killer = signal.Signals(-status).name
            return Outcome.STOPPED, f"QEMU was killed by {killer}", reason
        if reason is None and status == 0:  # no QMP: -no-reboot makes both ends exit 0
            return Outcome.FINISHED, "QEMU exited (no shutdown event seen)", None
        return Outcome.QEMU_FAILED, f"QEMU exited with status {status}", reason

    def _read_console(self) -> _Verdict | None:
        try:
            with self.console_log.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return None
        if not data:
            return None
        self.offset += len(data)
        if self.out is not None:
            self.out.write(self.screen.feed(data))
            self.out.flush()
        start = max(0, len(self.tail) - 1024)  # a match may straddle two reads
        self.tail = (self.tail + data)[-_TAIL:]
        start = min(start, len(self.tail) - len(data))
        if self.wait_for is not None and self.wait_for.search(self.tail, max(0, start)):
            return Outcome.MATCHED, f"--wait-for {self.wait_for.pattern.decode()!r} matched", None
        if _PANIC_RE.search(self.tail, max(0, start)):
            return Outcome.PANICKED, "kernel panic on the serial console", None
        return None


# -- background watcher entry point --------------------------------------------------------


def save_watch_options(state_dir: Path, opts: WatchOptions) -> None:
    (state_dir / "watch.json").write_text(json.dumps(opts.to_json()) + "\n")


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m treeboot.boot.watch")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--phase", choices=[str(p) for p in Phase], default=str(Phase.INSTALL))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    plan = load_plan(args.state_dir)
    opts = WatchOptions.from_json(json.loads((args.state_dir / "watch.json").read_text()))
    # Nobody watches a background VM: it runs until it ends by itself or is stopped.
    opts = WatchOptions(ConsoleMode.NONE, None, None)
    write_status(plan.paths, state="starting", watcher_pid=os.getpid())
    try:
        result = run_vm(plan, opts, firstboot_in_background=False, start_phase=Phase(args.phase))
    except BootError as e:
        write_status(plan.paths, state="stopped", outcome=str(Outcome.QEMU_FAILED), detail=str(e))
        log.error("%s", e)
        return Outcome.QEMU_FAILED.exit_code
    log.info("%s", json.dumps(result.to_json()))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
