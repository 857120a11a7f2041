"""An ISO image as a :mod:`treeboot.locate.base` Location: paths are paths inside the image.

The image may be a local file or an ``http(s)://`` / ``file://`` URL. Volume descriptors and
directories are parsed by pycdlib over a file-like object; for a remote image that object issues
HTTP Range requests through a small read-ahead block cache, so identifying a multi-GB image costs
a few requests. File contents are read straight from their extents: a kernel or initrd is one
Range request streamed to disk.

Names: Rock Ridge names are preferred, then Joliet, then ISO9660 names with ``;1`` and a trailing
dot stripped; if none matches exactly, the lookup is case-insensitive.

Spec: ECMA-119 (ISO9660), IEEE P1282 (Rock Ridge), Joliet, El Torito 1.0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, cast
from urllib.parse import unquote, urlsplit

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from treeboot.errors import IsoError, LocationError, TreebootError, UsageError
from treeboot.locate._isosource import HttpSource, LocalSource, Source, SourceIO
from treeboot.locate.base import (
    DEFAULT_MAX_SIZE,
    OnStart,
    Progress,
    RemoteStat,
    redact,
    resume_offset,
    safe_relpath,
    start_writing,
    too_big,
)
from treeboot.model import Media

SECTOR = 2048
_MAX_ENTRIES = 2_000_000
_MAX_DEPTH = 64
_RR, _JOLIET, _ISO = 0, 1, 2  # name spaces, in order of preference
_ELTORITO_PLATFORMS = {0: "x86", 1: "ppc", 2: "mac", 0xEF: "efi"}

_REDOWNLOAD = "the image is damaged or truncated: download it again and compare its checksum"


@dataclass(frozen=True)
class IsoInfo:
    """Facts from the volume descriptors (the ``extra["iso"]`` of an identification)."""

    system_id: str
    volume_id: str
    publisher: str
    application_id: str
    volume_space_size: int  # in logical blocks, as the PVD says
    logical_block_size: int
    image_size: int  # bytes of the image file
    joliet: bool
    rock_ridge: bool
    udf: bool
    el_torito: bool
    el_torito_platforms: tuple[str, ...] = ()

    @property
    def volume_size(self) -> int:
        """Volume size in bytes (what osinfo-db's ``<volume-size>`` compares against)."""
        return self.volume_space_size * self.logical_block_size

    def to_json(self) -> dict[str, Any]:
        return {
            "system_id": self.system_id,
            "volume_id": self.volume_id,
            "publisher": self.publisher,
            "application_id": self.application_id,
            "volume_space_size": self.volume_space_size,
            "logical_block_size": self.logical_block_size,
            "image_size": self.image_size,
            "joliet": self.joliet,
            "rock_ridge": self.rock_ridge,
            "udf": self.udf,
            "el_torito": self.el_torito,
            "el_torito_platforms": list(self.el_torito_platforms),
        }


@dataclass(frozen=True)
class IsoEntry:
    """One file or directory of the image; ``extents`` are (byte offset, length) runs."""

    path: str
    is_dir: bool
    size: int
    extents: tuple[tuple[int, int], ...]
    namespace: int = 0  # _RR, _JOLIET or _ISO: where the name was found


# --------------------------------------------------------------------------- the location


def _text(value: object) -> str:
    raw = getattr(value, "text", value)
    if isinstance(raw, bytes):
        return raw.decode("latin-1").rstrip(" \x00")
    return str(raw or "").rstrip(" \x00")


def _iso_name(ident: bytes) -> str:
    name = ident.decode("latin-1")
    name = name.split(";", 1)[0]
    return name[:-1] if name.endswith(".") else name


class IsoLocation:
    """An ISO image behind the Location contract (``media == Media.ISO``)."""

    media = Media.ISO

    def __init__(self, url: str, source: Source) -> None:
        self.url = url
        self._source = source
        self._names: list[dict[str, IsoEntry]] = [{}, {}, {}]  # indexed by _RR, _JOLIET, _ISO
        self._children: list[dict[str, list[str]]] = [{}, {}, {}]
        self._folded: dict[str, IsoEntry] = {}
        self._count = 0
        try:
            self._open()
        except BaseException:
            source.close()
            raise

    # -- opening
    def _open(self) -> None:
        src = self._source
        if src.size < 17 * SECTOR:
            raise IsoError(
                f"{src.name} is not an ISO9660 image: {src.size} bytes is too small",
                hint="check that the file is a complete ISO image",
            )
        if src.pread(16 * SECTOR + 1, 5) != b"CD001":
            raise IsoError(
                f"{src.name} is not an ISO9660 image (no CD001 volume descriptor at sector 16)",
                hint="pass an ISO image, a tree URL, or a directory",
            )
        self._check_volume_size()
        iso = pycdlib.PyCdlib()
        try:
            iso.open_fp(cast(BinaryIO, SourceIO(src)))
            self.info = self._describe(iso)
            self._index(iso)
        except TreebootError:
            raise
        except PyCdlibException as e:
            raise IsoError(f"{src.name} is a damaged ISO9660 image: {e}", hint=_REDOWNLOAD) from e
        except Exception as e:  # pycdlib on hostile input: anything can happen
            raise IsoError(
                f"{src.name} is a damaged ISO9660 image ({type(e).__name__}: {e})",
                hint=_REDOWNLOAD,
            ) from e
        self._check_extents()

    def _check_volume_size(self) -> None:
        """A file shorter than the volume its primary descriptor declares is truncated."""
        src = self._source
        pvd = src.pread(16 * SECTOR, SECTOR)
        space = int.from_bytes(pvd[80:84], "little")  # ECMA-119 8.4.8 volume space size
        block = int.from_bytes(pvd[128:130], "little")  # 8.4.12 logical block size
        if pvd[0] == 1 and block in (512, 1024, 2048) and src.size < space * block:
            raise IsoError(
                f"{src.name} is truncated: {src.size} bytes, but its volume descriptor "
                f"declares {space * block}",
                hint=_REDOWNLOAD,
            )

    def _describe(self, iso: Any) -> IsoInfo:
        pvd = iso.pvd
        platforms: list[str] = []
        cat = iso.eltorito_boot_catalog
        if cat is not None:
            ids = [cat.validation_entry.platform_id] + [s.platform_id for s in cat.sections]
            for pid in ids:
                name = _ELTORITO_PLATFORMS.get(pid, hex(pid))
                if name not in platforms:
                    platforms.append(name)
        return IsoInfo(
            system_id=_text(pvd.system_identifier),
            volume_id=_text(pvd.volume_identifier),
            publisher=_text(pvd.publisher_identifier),
            application_id=_text(pvd.application_identifier),
            volume_space_size=int(pvd.space_size),
            logical_block_size=int(pvd.log_block_size),
            image_size=self._source.size,
            joliet=bool(iso.has_joliet()),
            rock_ridge=bool(iso.has_rock_ridge()),
            udf=bool(iso.has_udf()),
            el_torito=cat is not None,
            el_torito_platforms=tuple(platforms),
        )

    def _index(self, iso: Any) -> None:
        block = int(iso.pvd.log_block_size) or SECTOR
        self._walk_primary(iso.pvd.root_directory_record(), "", "", block, 0)
        if iso.joliet_vd is not None:
            self._walk_joliet(iso.joliet_vd.root_directory_record(), "", block, 0)
        for table in self._names:
            for path, entry in table.items():
                self._folded.setdefault(path.casefold(), entry)

    @staticmethod
    def _files(rec: Any) -> Iterator[Any]:
        """Children without '.', '..' and the later chunks of multi-extent files."""
        previous: bytes | None = None
        for child in rec.children:
            if child.is_dot() or child.is_dotdot():
                continue
            ident = child.file_identifier()
            if ident != previous:
                yield child
            previous = ident

    def _walk_primary(
        self, rec: Any, rr_prefix: str, iso_prefix: str, block: int, depth: int
    ) -> None:
        if depth > _MAX_DEPTH:
            raise IsoError(f"{self._source.name}: directories nested deeper than {_MAX_DEPTH}")
        for child in self._files(rec):
            iso_name = _iso_name(child.file_identifier())
            rr_name = iso_name
            if child.rock_ridge is not None and child.rock_ridge.name():
                rr_name = child.rock_ridge.name().decode("utf-8", errors="replace")
            entry = self._entry(child, block)
            if self.info.rock_ridge:
                self._add(_RR, rr_prefix + rr_name, entry)
            self._add(_ISO, iso_prefix + iso_name, entry)
            if child.is_dir():
                self._walk_primary(
                    child, f"{rr_prefix}{rr_name}/", f"{iso_prefix}{iso_name}/", block, depth + 1
                )

    def _walk_joliet(self, rec: Any, prefix: str, block: int, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise IsoError(f"{self._source.name}: directories nested deeper than {_MAX_DEPTH}")
        for child in self._files(rec):
            name = child.file_identifier().decode("utf-16-be", errors="replace").split(";", 1)[0]
            self._add(_JOLIET, prefix + name, self._entry(child, block))
            if child.is_dir():
                self._walk_joliet(child, f"{prefix}{name}/", block, depth + 1)

    @staticmethod
    def _entry(rec: Any, block: int) -> IsoEntry:
        extents: list[tuple[int, int]] = []
        cur = rec
        while cur is not None and len(extents) < 4096:
            # The record's own length: pycdlib clamps the inode's to the image size.
            extents.append((int(cur.extent_location()) * block, int(cur.data_length)))
            cur = cur.data_continuation
        size = sum(n for _, n in extents)
        return IsoEntry(path="", is_dir=bool(rec.is_dir()), size=size, extents=tuple(extents))

    def _add(self, ns: int, path: str, entry: IsoEntry) -> None:
        self._count += 1
        if self._count > _MAX_ENTRIES:
            raise IsoError(f"{self._source.name}: more than {_MAX_ENTRIES} directory entries")
        entry = IsoEntry(path, entry.is_dir, entry.size, entry.extents, ns)
        if path in self._names[ns]:
            return
        self._names[ns][path] = entry
        parent, _, leaf = path.rpartition("/")
        self._children[ns].setdefault(parent, []).append(leaf)

    def _check_extents(self) -> None:
        """Directory records pointing outside the image mean damage (or a hostile image)."""
        for table in self._names:
            for entry in table.values():
                for offset, length in entry.extents:
                    if entry.is_dir:
                        continue
                    # pycdlib clamps a length running past the end (negative if the extent
                    # starts past it): both mean the record points outside the image.
                    if (
                        length < 0
                        or offset + length > self._source.size
                        or (length == 0 and offset > self._source.size)
                    ):
                        raise IsoError(
                            f"{self._source.name}: {entry.path} lies outside the image "
                            f"(bytes {offset}-{offset + length} of {self._source.size})",
                            hint="the image is truncated or damaged; re-download it",
                        )

    # -- lookups
    def entry(self, path: str) -> IsoEntry | None:
        """The directory record of ``path`` (RR, then Joliet, then ISO9660, then any case)."""
        p = safe_relpath(path)
        if p == "":
            return IsoEntry(path="", is_dir=True, size=0, extents=())
        for table in self._names:
            hit = table.get(p)
            if hit is not None:
                return hit
        return self._folded.get(p.casefold())

    def listdir(self, path: str = "") -> list[str] | None:
        """Names inside a directory of the image (preferred namespace), or None."""
        e = self.entry(path)
        if e is None or not e.is_dir:
            return None
        if e.path == "":
            return list(next((c[""] for c in self._children if c.get("")), []))
        return list(self._children[e.namespace].get(e.path, []))

    def walk(self) -> Iterator[str]:
        """Every path in the preferred namespace."""
        table = self._names[0] or self._names[1] or self._names[2]
        return iter(list(table))

    def exists(self, path: str) -> bool:
        return self.entry(path) is not None

    def size(self, path: str) -> int | None:
        e = self.entry(path)
        return None if e is None or e.is_dir else e.size

    def read(self, path: str, max_size: int = DEFAULT_MAX_SIZE) -> bytes | None:
        e = self.entry(path)
        if e is None or e.is_dir:
            return None
        if e.size > max_size:
            raise too_big(self._where(e.path), max_size, e.size)
        return self._read_entry(e, 0, e.size)

    def read_many(
        self, paths: Iterable[str], max_size: int = DEFAULT_MAX_SIZE
    ) -> dict[str, bytes | None]:
        # One image, one cursor: sequential reads share the block cache.
        return {p: self.read(p, max_size=max_size) for p in paths}

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` of a file (fewer at its end)."""
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range: offset {offset}, length {length}")
        e = self._file(path)
        end = min(e.size, offset + length)
        return self._read_entry(e, offset, max(0, end - offset))

    def stat(self, path: str) -> RemoteStat | None:
        """Size and validator of a file; the validator changes when the image changes."""
        e = self.entry(path)
        if e is None or e.is_dir:
            return None
        first = e.extents[0][0] if e.extents else 0
        return RemoteStat(
            e.size, f"{self._source.validator}@{first}" if self._source.validator else None
        )

    def download(
        self,
        path: str,
        fileobj: BinaryIO,
        offset: int = 0,
        progress: Progress | None = None,
        *,
        if_range: str | None = None,
        on_start: OnStart | None = None,
    ) -> int:
        """Stream a file of the image into ``fileobj`` (one Range request per extent).

        Same semantics as :meth:`treeboot.locate.base.TreeLocation.download`: ``fileobj`` already
        holds ``offset`` bytes, which are kept only when ``if_range`` matches :meth:`stat`.
        """
        e = self._file(path)
        st = self.stat(path)
        assert st is not None
        start = resume_offset(offset, if_range, st)
        if fileobj.seekable():
            start_writing(fileobj, start)
        if on_start:
            on_start(st, start)
        done = 0
        for run_start, length in self._runs(e, start, e.size - start):
            got = self._source.stream(run_start, length, fileobj, progress)
            if got != length:
                raise IsoError(f"{self._where(e.path)} is cut short (image truncated?)")
            done += got
        return done

    def _file(self, path: str) -> IsoEntry:
        e = self.entry(path)
        if e is None or e.is_dir:
            raise LocationError(f"{self._where(safe_relpath(path))} does not exist in the image")
        return e

    def _where(self, path: str) -> str:
        return f"{redact(self.url)}:/{path}"

    def _runs(self, e: IsoEntry, offset: int, length: int) -> list[tuple[int, int]]:
        runs: list[tuple[int, int]] = []
        pos = 0
        for start, n in e.extents:
            lo, hi = max(offset, pos), min(offset + length, pos + n)
            if lo < hi:
                runs.append((start + lo - pos, hi - lo))
            pos += n
        for start, n in runs:
            if start + n > self._source.size:
                raise IsoError(f"{self._where(e.path)} lies outside the image (truncated?)")
        return runs

    def _read_entry(self, e: IsoEntry, offset: int, length: int) -> bytes:
        out = bytearray()
        for start, n in self._runs(e, offset, length):
            data = self._source.pread(start, n)
            if len(data) != n:
                raise IsoError(f"{self._where(e.path)} is cut short (image truncated?)")
            out += data
        return bytes(out)

    @property
    def bytes_transferred(self) -> int:
        return self._source.bytes_transferred

    @property
    def bytes_requested(self) -> int:
        """Bytes callers (pycdlib, read, download) asked for; compare with bytes_transferred."""
        return self._source.bytes_requested

    def close(self) -> None:
        self._source.close()

    def cancel(self) -> None:
        """Stop every transfer at its next chunk (see TreeLocation.cancel)."""
        self._source.cancelled = True

    def __enter__(self) -> IsoLocation:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"IsoLocation({self.url!r})"


def open_iso(spec: str, *, insecure: bool = False, timeout: float = 30.0) -> IsoLocation:
    """Open an ISO image given as a local path, ``file://`` URL or ``http(s)://`` URL.

    Raises IsoError (exit 3) for a file that is not an ISO9660 image or is damaged,
    LocationError (exit 4) when the file or server cannot be reached or refuses Range requests.
    """
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return IsoLocation(spec, HttpSource(spec, insecure=insecure, timeout=timeout))
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise LocationError(
                f"{spec}: file:// URLs on another host ({parts.netloc}) are not supported",
                hint="mount the share and pass the local path",
            )
        path = Path(unquote(parts.path))
    elif scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        path = Path(spec).expanduser()
    else:
        raise UsageError(
            f"cannot open an ISO at {redact(spec)!r}: scheme {scheme!r} is not supported",
            hint="use a local path, file://, http:// or https://",
        )
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not an ISO image")
    return IsoLocation(str(path.resolve()), LocalSource(path))
