"""How a run's end is decided (watch.py), without booting: console matching, QEMU's shutdown
reasons, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from treeboot.boot.plan import ConsoleMode
from treeboot.boot.watch import Outcome, WatchOptions, _Watcher


def _watcher(log: Path, wait_for: str | None = None) -> _Watcher:
    opts = WatchOptions(ConsoleMode.LOG, None, wait_for)
    return _Watcher(1, log, 0, opts, None, None)


def test_wait_for_matches_across_reads(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    w = _watcher(log, "Select a language")
    log.write_bytes(b"\x1b[31m[!!] Select a lan")
    assert w._read_console() is None
    with log.open("ab") as f:
        f.write(b"guage\x1b[30m")
    verdict = w._read_console()
    assert verdict is not None and verdict[0] is Outcome.MATCHED


def test_old_output_does_not_match_again(tmp_path: Path) -> None:
    """The offset starts where the phase starts: an earlier phase's text is not re-read."""
    log = tmp_path / "console.log"
    log.write_bytes(b"MARKER from phase 1\n")
    opts = WatchOptions(ConsoleMode.LOG, None, "MARKER")
    w = _Watcher(1, log, log.stat().st_size, opts, None, None)
    assert w._read_console() is None


def test_kernel_panic_on_the_console(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"[  3.1] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    verdict = _watcher(log)._read_console()
    assert verdict is not None and verdict[0] is Outcome.PANICKED


@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (0, "guest-shutdown", Outcome.FINISHED),
        (0, "guest-reset", Outcome.FINISHED),
        (0, "guest-panic", Outcome.PANICKED),
        (0, "host-signal", Outcome.STOPPED),
        (0, "host-qmp-quit", Outcome.STOPPED),
        (-9, None, Outcome.STOPPED),
        (0, None, Outcome.FINISHED),
        (1, None, Outcome.QEMU_FAILED),
    ],
)
def test_how_qemu_ended(tmp_path: Path, status: int, reason: str | None, outcome: Outcome) -> None:
    w = _watcher(tmp_path / "console.log")
    verdict = w._ended(status, {"guest": True, "reason": reason} if reason else None)
    assert verdict[0] is outcome


def test_exit_codes_tell_failures_apart() -> None:
    codes = {o: o.exit_code for o in Outcome}
    success = {o for o, c in codes.items() if c == 0}
    assert success == {Outcome.FINISHED, Outcome.MATCHED, Outcome.POWERED_OFF, Outcome.BACKGROUND}
    failures = [c for o, c in codes.items() if c != 0]
    assert len(failures) == len(set(failures))  # each failure has its own code
    assert codes[Outcome.INTERRUPTED] == 130 and codes[Outcome.TERMINATED] == 143
    # None collides with the error classes' codes (1-7) or the internal-error code (70).
    assert not set(failures) & {1, 2, 3, 4, 5, 6, 7, 70}


def test_watch_options_round_trip() -> None:
    opts = WatchOptions(ConsoleMode.ATTACH, 12.5, "x+")
    assert WatchOptions.from_json(opts.to_json()) == opts
