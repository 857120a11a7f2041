"""Transfer progress on stderr: rich bars on a terminal, nothing otherwise."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING

from treeboot.output import progress_enabled, stderr

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class Transfer:
    """One bar; a no-op if its :class:`TransferProgress` is disabled."""

    def __init__(self, bars: Progress | None, task: TaskID | None) -> None:
        self._bars = bars
        self._task = task

    def start(self, total: int | None, completed: int = 0) -> None:
        if self._bars is not None and self._task is not None:
            self._bars.update(self._task, total=total, completed=completed)
            self._bars.start_task(self._task)

    def advance(self, n: int) -> None:
        if self._bars is not None and self._task is not None:
            self._bars.advance(self._task, n)


class TransferProgress:
    """Bars for parallel downloads. ``enabled=None``: only if stderr is a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = progress_enabled() if enabled is None else enabled
        self._bars: Progress | None = None
        self._lock = threading.Lock()

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

            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=stderr,
                transient=False,
            )
            self._bars.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def transfer(self, label: str) -> Transfer:
        if self._bars is None:
            return Transfer(None, None)
        with self._lock:
            return Transfer(self._bars, self._bars.add_task(label, start=False, total=None))
