"""Derived artifacts (a vmlinux extracted from a bzImage, an inflated initrd), cached by the
sha256 of the file they were derived from.

Layout, beside the download cache (:mod:`treeboot.store.cache`)::

    derived/<kind>/<source-sha256>        the product, read-only
    derived/<kind>/<source-sha256>.json   kind, source_sha256, sha256 and size of the product,
                                          or the reason it could not be derived (``error``)

A product appears only by ``os.replace`` of a complete file hashed while it was written,
under a per-product lock; a warm lookup reads the small sidecar and checks the size, so it
costs no decompression and no hashing. A failed derivation is remembered too, so a
kernel without what a faster form needs is not decompressed again on every run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

from treeboot.store.cache import Cache, cache_write_error

T = TypeVar("T")


@dataclass(frozen=True)
class DerivedEntry:
    kind: str
    source_sha256: str
    sha256: str | None  # None when it could not be derived (see error)
    size: int
    detail: str = ""
    error: str | None = None
    seconds: float = 0.0  # wall-clock time the derivation took
    cpu_seconds: float = 0.0  # this process's CPU time during it
    created: float = 0.0


class _HashingFile:
    """A file opened ``w+b`` whose written bytes are hashed on the way (reads pass through)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._f, name)


class DerivedStore:
    def __init__(self, cache: Cache | None = None) -> None:
        self.cache = cache or Cache()
        self.root = self.cache.root / "derived"

    def path(self, kind: str, source_sha256: str) -> Path:
        return self.root / kind / source_sha256

    def find(self, kind: str, source_sha256: str) -> DerivedEntry | None:
        """The recorded result for this source (a product, or why there is none)."""
        product = self.path(kind, source_sha256)
        try:
            entry = DerivedEntry(**json.loads(product.with_suffix(".json").read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if entry.source_sha256 != source_sha256 or entry.kind != kind:
            return None
        if entry.error is None:
            try:
                if product.stat().st_size != entry.size:
                    return None
                os.utime(product)  # last use, for `cache prune --older-than`
                os.utime(product.with_suffix(".json"))
            except FileNotFoundError:
                return None
            except OSError:  # a read-only shared cache: the product is still good
                pass
        return entry

    def make(
        self,
        kind: str,
        source_sha256: str,
        produce: Callable[[BinaryIO], str],
        failure: type[Exception],
    ) -> DerivedEntry:
        """The entry for this source, deriving it with ``produce(out) -> detail`` unless it
        is recorded already. ``failure`` exceptions are recorded as the entry's error."""
        if (entry := self.find(kind, source_sha256)) is not None:
            return entry
        product = self.path(kind, source_sha256)
        try:
            product.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise cache_write_error(e, self.cache.root) from e
        with self._lock(product):
            if (entry := self.find(kind, source_sha256)) is not None:
                return entry  # another process derived it while we waited
            return self._derive(kind, source_sha256, product, produce, failure)

    def _derive(
        self,
        kind: str,
        source_sha256: str,
        product: Path,
        produce: Callable[[BinaryIO], str],
        failure: type[Exception],
    ) -> DerivedEntry:
        tmp = product.with_name(f".{product.name}.{os.getpid()}.tmp")
        started, cpu = time.monotonic(), time.process_time()
        try:
            with open(tmp, "w+b") as f:
                sink = _HashingFile(f)
                try:
                    detail = produce(cast(BinaryIO, sink))
                except failure as e:
                    entry = DerivedEntry(kind, source_sha256, None, 0, error=str(e).splitlines()[0],
                                         created=time.time())  # fmt: skip
                    self._write_sidecar(product, entry)
                    return entry
                # No fsync: a product can always be derived again, and a file cut short by a
                # crash is caught by the size check in find(); fsyncing ~200 MB cost seconds.
                f.flush()
                size = os.fstat(f.fileno()).st_size
            os.chmod(tmp, 0o444)
            os.replace(tmp, product)
        except OSError as e:
            raise cache_write_error(e, self.cache.root) from e
        finally:
            tmp.unlink(missing_ok=True)
        entry = DerivedEntry(
            kind, source_sha256, sink.hash.hexdigest(), size, detail,
            seconds=round(time.monotonic() - started, 3),
            cpu_seconds=round(time.process_time() - cpu, 3), created=time.time(),
        )  # fmt: skip
        self._write_sidecar(product, entry)
        return entry

    def _write_sidecar(self, product: Path, entry: DerivedEntry) -> None:
        side = product.with_suffix(".json")
        tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(entry), indent=1))
            os.replace(tmp, side)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise cache_write_error(e, self.cache.root) from e

    @contextlib.contextmanager
    def _lock(self, product: Path) -> Iterator[None]:
        fd = os.open(product.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def usage(self) -> int:
        """Bytes of derived products (for the cost report and ``cache list``)."""
        if not self.root.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.root.glob("*/*") if p.suffix == "")
