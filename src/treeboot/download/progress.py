"""Transfer progress on stderr: rich bars on a terminal, nothing otherwise."""

from __future__ import annotations

import functools
import sys
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


@functools.cache
def stderr_console() -> Console:
    """The rich console on stderr, created on first use (rich costs ~20 ms to import)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def progress_enabled(quiet: bool = False) -> bool:
    """Progress bars only on a terminal, never when stderr is piped."""
    return not quiet and sys.stderr.isatty()


class Transfer:
    """One download's bar, shown from :meth:`start` on; a no-op without bars."""

    def __init__(self, bars: Progress | None = None, label: str = "") -> None:
        self._bars = bars
        self._label = label
        self._task: TaskID | None = None

    def start(self, total: int | None, completed: int = 0) -> None:
        if self._bars is not None:
            self._task = self._bars.add_task(self._label, total=total, completed=completed)

    def advance(self, n: int) -> None:
        if self._bars is not None and self._task is not None:
            self._bars.advance(self._task, n)


class TransferProgress:
    """Bars for parallel downloads. ``enabled=None``: only if stderr is a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = progress_enabled() if enabled is None else enabled
        self.bars: Progress | None = None

    def __enter__(self) -> TransferProgress:
        if self.enabled:
            from rich.progress import (  # only on a terminal: keeps piped runs lean
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=False,
            )
            self.bars.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None

    def transfer(self, label: str) -> Transfer:
        """A bar for one file; it appears only if the file is actually transferred."""
        return Transfer(self.bars, label)
