"""Worker threads that a signal stops at once.

A ThreadPoolExecutor joins its workers on exit (and at interpreter exit), so Ctrl-C in the
main thread waited for every download to end. Here the workers are daemon threads: the main
thread waits for them in an interruptible join; on KeyboardInterrupt (SIGINT, or the CLI's
SIGTERM handler) it cancels the location, so each transfer stops at its next chunk (its partial
file kept for resume), gives them :data:`GRACE` seconds to do so, and re-raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

T = TypeVar("T")
GRACE = 0.5  # seconds the workers get to stop after a cancel (the whole bound is 1 s)


class _Job(Generic[T]):
    def __init__(self, work: Callable[[], T]) -> None:
        self.work = work
        self.result: T | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as e:  # handed to the caller's thread
            self.error = e


def run_all(works: Sequence[Callable[[], T]], cancel: Callable[[], None]) -> list[T]:
    """Run every ``work`` in its own thread; the first error (in order) is raised after all
    ended. An interruption of the waiting thread calls ``cancel()`` and is re-raised."""
    jobs = [_Job(w) for w in works]
    for job in jobs:
        job.thread.start()
    try:
        for job in jobs:
            while job.thread.is_alive():
                job.thread.join(0.2)
    except BaseException:
        cancel()
        for job in jobs:
            job.thread.join(GRACE / len(jobs))
        raise
    for job in jobs:
        if job.error is not None:
            raise job.error
    return [cast(T, job.result) for job in jobs]
