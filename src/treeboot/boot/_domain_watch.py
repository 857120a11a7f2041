"""Watching one libvirt domain until it ends: lifecycle events, its console, the keyboard.

- The end of a phase comes from lifecycle events (``domainEventRegisterAny`` with
  ``VIR_DOMAIN_EVENT_ID_LIFECYCLE``), with ``isActive()`` polled as the fallback.
- The serial console comes over a ``virDomainOpenConsole`` stream into the local console log,
  where ``--wait-for`` and panic detection read it, exactly as on QEMU.
- With ``--console attach``, what the user types (a terminal in raw mode, or a pipe) goes
  into that stream; Ctrl-] detaches the keyboard, as on QEMU (``_console.py``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from treeboot.boot._console import ATTACHED, DETACHED, RawTerminal, split_detach
from treeboot.boot.backends.libvirt import ConsoleStream, Hypervisor
from treeboot.boot.plan import BootPlan, ConsoleMode
from treeboot.boot.watch import Outcome, WatchOptions, _Watcher
from treeboot.notices import notice

_POLL = 0.05
_POLL_STATE = 1.0  # the fallback: ask the hypervisor this often whether the domain still runs

# virDomainEventType and the details of STOPPED (libvirt's enums, stable ABI).
_EV_STOPPED, _EV_SHUTDOWN, _EV_CRASHED = 5, 6, 8
_STOPPED_OUTCOME = {
    0: (Outcome.FINISHED, "the guest shut down"),
    1: (Outcome.STOPPED, "the domain was destroyed from outside"),
    2: (Outcome.PANICKED, "the guest crashed"),
    3: (Outcome.STOPPED, "the domain was migrated away"),
    4: (Outcome.STOPPED, "the domain was saved"),
    5: (Outcome.QEMU_FAILED, "the hypervisor reported a failure"),
    6: (Outcome.STOPPED, "the domain was restored from a snapshot"),
}
_SHUTDOWN_HOST = 2  # VIR_DOMAIN_EVENT_SHUTDOWN_HOST: asked from the host, not by the guest


@dataclass
class _Event:
    event: int
    detail: int


class DomainWatch:
    """Lifecycle events of one domain, its console copied to the local log, and the verdict.

    Enter it before the domain starts, so that no event is missed."""

    def __init__(
        self,
        hv: Hypervisor,
        plan: BootPlan,
        opts: WatchOptions,
        deadline: float | None,
        out: IO[bytes] | None,
    ) -> None:
        self.hv, self.plan, self.opts, self.deadline, self.out = hv, plan, opts, deadline, out
        self.events: queue.Queue[_Event] = queue.Queue()
        self.callback: int | None = None
        self.destroyed_by_us = False
        self.host_shutdown = False
        self.console: ConsoleStream | None = None
        self.keyboard: StreamKeyboard | None = None
        self.console_log: IO[bytes] | None = None

    def __enter__(self) -> DomainWatch:
        def on_event(name: str, event: int, detail: int) -> None:
            if name == self.plan.name:
                self.events.put(_Event(event, detail))

        self.callback = self.hv.on_lifecycle(on_event)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.callback is not None:
            self.hv.remove_callback(self.callback)
        if self.keyboard is not None:
            self.keyboard.stop()
            self.keyboard = None
        if self.console is not None:
            self.console.close()
            self.console = None
        if self.console_log is not None:
            self.console_log.close()
            self.console_log = None

    def wait(self, dom: Any) -> tuple[Outcome, str]:
        log_path = self.plan.paths.console_log
        offset = log_path.stat().st_size if log_path.exists() else 0
        self._start_console(dom)
        matcher = _Watcher(0, log_path, offset, self.opts, self.deadline, self.out)
        try:
            return self._loop(dom, matcher)
        except BaseException:
            self.destroy(dom)
            raise

    def _loop(self, dom: Any, matcher: _Watcher) -> tuple[Outcome, str]:
        next_poll = time.monotonic() + _POLL_STATE
        while True:
            found = matcher._read_console()
            if found:
                self.destroy(dom)
                return found[0], found[1]
            ended = self._drain_events()
            if ended is None and time.monotonic() > next_poll:
                ended = self._poll_state(dom)
                next_poll = time.monotonic() + _POLL_STATE
            if ended is not None:
                time.sleep(_POLL)  # the event loop delivers what the console sent before the end
                late = matcher._read_console()  # the last lines may hold the marker
                return (late[0], late[1]) if late else ended
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.destroy(dom)
                return Outcome.TIMED_OUT, "--wait time limit reached"
            time.sleep(_POLL)

    def _drain_events(self) -> tuple[Outcome, str] | None:
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return None
            if ev.event == _EV_SHUTDOWN and ev.detail == _SHUTDOWN_HOST:
                self.host_shutdown = True
            elif ev.event == _EV_CRASHED:
                return Outcome.PANICKED, "the guest kernel panicked (CRASHED event)"
            elif ev.event == _EV_STOPPED:
                outcome, detail = _STOPPED_OUTCOME.get(ev.detail, (Outcome.STOPPED, "stopped"))
                if outcome is Outcome.FINISHED and self.host_shutdown:
                    return Outcome.STOPPED, "shut down from the host"
                return outcome, detail

    def _poll_state(self, dom: Any) -> tuple[Outcome, str] | None:
        """The fallback when no event arrives: is the domain still running?"""
        try:
            if dom.isActive():
                return None
        except self.hv.lv.libvirtError:
            pass  # a transient domain that ended is gone
        time.sleep(_POLL_STATE)  # give a late event its chance: it knows why
        return self._drain_events() or (Outcome.FINISHED, "the domain ended (no event seen)")

    def destroy(self, dom: Any) -> None:
        self.destroyed_by_us = True
        with contextlib.suppress(Exception):
            dom.destroy()

    def _start_console(self, dom: Any) -> None:
        log = self.plan.paths.console_log.open("ab")
        self.console_log = log

        def sink(data: bytes) -> None:  # on the event loop thread; the matcher reads the file
            with contextlib.suppress(ValueError):  # closed: the watch has ended
                log.write(data)
                log.flush()

        try:
            self.console = self.hv.open_console(dom, sink)
        except self.hv.lv.libvirtError as e:
            notice(f"no live console ({e.get_error_message()}); only the hypervisor's log")
            return
        attached = self.out is not None and self.opts.console is ConsoleMode.ATTACH
        if attached and StreamKeyboard.wanted():
            self.keyboard = StreamKeyboard(self.hv, self.console)
            self.keyboard.start()


class StreamKeyboard:
    """What the user types, into the console stream (``--console attach`` with ``--connect``).

    A terminal is put in raw mode (so Ctrl-C reaches the guest) and restored when the phase
    ends or the user presses Ctrl-] (the VM keeps running; a Ctrl-C then interrupts treeboot).
    A pipe is forwarded as it is until Ctrl-] or its end. Reads happen on libvirt's event
    loop thread, the same one that drives the stream.
    """

    def __init__(self, hv: Hypervisor, console: ConsoleStream, *, fd: int | None = None) -> None:
        self.hv, self.console = hv, console
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.terminal = RawTerminal(self.fd)
        self.handle: int | None = None
        self.lock = threading.Lock()

    @staticmethod
    def wanted(fd: int | None = None) -> bool:
        """stdin is a terminal, a pipe or a socket (not /dev/null, not a file)."""
        with contextlib.suppress(OSError, ValueError):
            fd = sys.stdin.fileno() if fd is None else fd
            mode = os.fstat(fd).st_mode
            return os.isatty(fd) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        return False

    def start(self) -> None:
        if self.terminal.enter():
            sys.stderr.write(ATTACHED)
            sys.stderr.flush()
        self.handle = self.hv.watch_readable(self.fd, self._on_input)

    def _on_input(self) -> None:
        with self.lock:
            if self.handle is None:
                return
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            keys, detach = split_detach(data)
            if keys:
                self.console.send(keys)
        if detach:
            was_terminal = self.terminal.saved is not None
            self.stop()
            if was_terminal:
                sys.stderr.write(DETACHED)
                sys.stderr.flush()

    def stop(self) -> None:
        with self.lock:
            if self.handle is not None:
                self.hv.unwatch(self.handle)
                self.handle = None
            self.terminal.restore()
