"""Memoised, concurrent reads of one location during one detection run (virtinst's
``_DistroCache``): the layouts of :mod:`~treeboot.detect._layouts` ask, detection counts
the rounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from treeboot.detect.metadata import decode
from treeboot.errors import TreebootError
from treeboot.locate.base import MAX_PARALLEL, Location

META_MAX = 4 * 1024 * 1024  # the largest real metadata file (SUSE content) is ~100 KiB
_WORKERS = 2 * MAX_PARALLEL


class Probe:
    """Memoised, concurrent reads and existence checks against one location.

    ``fetch`` sends everything it is given that is not known yet at once and counts one
    round; errors are kept per path and raised only when a layout asks for that path.
    """

    def __init__(self, loc: Location, max_size: int = META_MAX, canary: str | None = None) -> None:
        self.loc = loc
        self.max_size = max_size
        self.canary = canary
        self.rounds = 0
        self.tried: list[str] = []
        self._data: dict[str, bytes | TreebootError | None] = {}
        self._exists: dict[str, bool | TreebootError] = {}

    @property
    def soft_404(self) -> bytes | None:
        """The page the server sends for files that do not exist (None: it answers 404)."""
        page = self._data.get(self.canary) if self.canary else None
        return page if isinstance(page, bytes) else None

    def fetch(self, reads: Iterable[str] = (), exists: Iterable[str] = ()) -> None:
        reads = [*reads, self.canary] if self.canary and not self.rounds else reads
        todo_r = [p for p in dict.fromkeys(reads) if p not in self._data]
        todo_e = [p for p in dict.fromkeys(exists) if p not in self._exists and p not in self._data]
        if not todo_r and not todo_e:
            return
        self.rounds += 1
        self.tried += [p for p in todo_r + todo_e if p not in self.tried and p != self.canary]
        chunks = [todo_r[i : i + MAX_PARALLEL] for i in range(0, len(todo_r), MAX_PARALLEL)]
        with ThreadPoolExecutor(max_workers=min(_WORKERS, len(chunks) + len(todo_e))) as pool:
            jobs = [pool.submit(self._read_chunk, chunk) for chunk in chunks]
            jobs += [pool.submit(self._check, p) for p in todo_e]
        for job in jobs:
            job.result()  # a bug in a worker is a bug, not "file absent"

    def _read_chunk(self, paths: list[str]) -> None:
        try:
            self._data.update(self.loc.read_many(paths, max_size=self.max_size))
            return
        except TreebootError:
            pass
        for p in paths:  # find out which path failed; keep the others usable
            try:
                self._data[p] = self.loc.read(p, max_size=self.max_size)
            except TreebootError as e:
                self._data[p] = e

    def _check(self, path: str) -> None:
        try:
            self._exists[path] = self.loc.exists(path)
        except TreebootError as e:
            self._exists[path] = e

    def known_urls(self) -> dict[str, bytes | None]:
        """What was read so far, by absolute URL (errors and soft-404 pages left out)."""
        out: dict[str, bytes | None] = {}
        for path, value in self._data.items():
            if path == self.canary or isinstance(value, TreebootError):
                continue
            out[self.loc.url + path] = None if value == self.soft_404 else value
        return out

    def data(self, path: str) -> bytes | None:
        value = self._data.get(path)
        if isinstance(value, TreebootError):
            raise value
        if value is not None and value == self.soft_404:
            return None
        return value

    def text(self, path: str) -> str | None:
        data = self.data(path)
        return None if data is None else decode(data)

    def exists(self, path: str) -> bool:
        if self.soft_404 is not None:
            return self.data(path) is not None  # HEAD says yes to everything here
        if isinstance(self._data.get(path), bytes):
            return True
        value = self._exists.get(path, False)
        if isinstance(value, TreebootError):
            raise value
        return value
