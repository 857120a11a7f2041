"""newc cpio: write archives, and inject files into an initrd by appending one.

Format: Documentation/driver-api/early-userspace/buffer-format.rst (Debian package linux-doc).
Each entry is a 110-byte ASCII header ("070701" and 13 eight-digit hex fields), the
NUL-terminated name, padding to 4 bytes, the data, padding to 4 bytes. An entry named
``TRAILER!!!`` ends the archive.

The kernel unpacks any sequence of NUL padding, uncompressed archives and compressed archives
(init/initramfs.c ``unpack_to_rootfs``), and later entries overwrite earlier ones. So injecting
files is appending: copy the original initrd bytes untouched, pad them with NULs to a multiple
of 4 (an uncompressed archive is only recognised on a 4-byte boundary), and append one newc
archive. Nothing is decompressed or recompressed, so the cost is one file copy, done by the
kernel (reflink, ``copy_file_range``) where the filesystem allows, plus the injected bytes.
This is what virt-install's ``--initrd-inject`` (virtinst ``installerinject.py``) and mkosi's
``join_initrds`` do.
"""

from __future__ import annotations

import io
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from treeboot.errors import UsageError

NEWC_MAGIC = b"070701"
NEWC_CRC_MAGIC = b"070702"  # same layout; "check" is a byte sum of the data
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
# The 13 hex fields after the magic, in order (buffer-format.rst, "cpio_header").
FIELDS = (
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)
MAX_NAME = 4096  # PATH_MAX: init/initramfs.c rejects longer names ("name too long")
_COPY_CHUNK = 1 << 20


def pad4(n: int) -> int:
    """Bytes of NUL padding that bring ``n`` to a multiple of 4."""
    return -n % 4


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``mode`` includes the file type bits (``stat.S_IFREG | 0o644``).

    ``data`` is the content of a regular file (bytes, or a Path read while writing) or the
    target of a symlink. Names are relative ("etc/foo"), as cpio(1) and the kernel's
    gen_init_cpio write them.
    """

    name: str
    mode: int
    data: bytes | Path = b""
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    rdev: tuple[int, int] = (0, 0)

    @classmethod
    def file(cls, name: str, data: bytes | Path, mode: int = 0o644, mtime: int = 0) -> CpioEntry:
        return cls(name, stat.S_IFREG | stat.S_IMODE(mode), data, mtime=mtime)

    @classmethod
    def directory(cls, name: str, mode: int = 0o755, mtime: int = 0) -> CpioEntry:
        return cls(name, stat.S_IFDIR | stat.S_IMODE(mode), mtime=mtime)

    @classmethod
    def symlink(cls, name: str, target: str, mtime: int = 0) -> CpioEntry:
        return cls(name, stat.S_IFLNK | 0o777, target.encode(), mtime=mtime)

    @classmethod
    def char_device(cls, name: str, major: int, minor: int, mode: int = 0o600) -> CpioEntry:
        return cls(name, stat.S_IFCHR | stat.S_IMODE(mode), rdev=(major, minor))

    def data_size(self) -> int:
        if isinstance(self.data, Path):
            try:
                return self.data.stat().st_size
            except OSError as e:
                raise UsageError(
                    f"cannot read {self.data} for cpio entry {self.name!r}: {e.strerror}",
                    hint="check that the file exists and is readable",
                ) from e
        return len(self.data)


def _header(entry: CpioEntry, ino: int, name: bytes, size: int) -> bytes:
    values = {
        "ino": ino,
        "mode": entry.mode,
        "uid": entry.uid,
        "gid": entry.gid,
        "nlink": 2 if stat.S_ISDIR(entry.mode) else 1,  # nlink 1: no hard-link bookkeeping
        "mtime": entry.mtime,
        "filesize": size,
        "devmajor": 0,
        "devminor": 0,
        "rdevmajor": entry.rdev[0],
        "rdevminor": entry.rdev[1],
        "namesize": len(name) + 1,
        "check": 0,
    }
    for key, value in values.items():
        if not 0 <= value <= 0xFFFFFFFF:
            raise UsageError(f"cpio entry {entry.name!r}: {key}={value} does not fit in 32 bits")
    return NEWC_MAGIC + b"".join(b"%08X" % values[f] for f in FIELDS)


def _copy_data(src: Path, size: int, out: BinaryIO) -> None:
    try:
        with open(src, "rb") as f:
            left = size
            while left:
                chunk = f.read(min(left, _COPY_CHUNK))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk)
    except OSError as e:
        raise UsageError(f"cannot read {src}: {e.strerror}") from e
    if left:
        raise UsageError(f"{src} shrank while it was being archived ({left} bytes missing)")


def write_newc(entries: Iterable[CpioEntry], out: BinaryIO, *, first_ino: int = 1) -> int:
    """Stream a newc archive (entries, then the trailer) to ``out``; return bytes written.

    File data given as a Path is copied in chunks, so memory stays bounded. Offsets are
    relative to where the archive starts: the caller puts that on a 4-byte boundary.
    """
    written = 0
    ino = first_ino
    for entry in [*entries, CpioEntry(TRAILER, 0)]:
        name = entry.name.encode("utf-8", "surrogateescape")
        if not name or b"\0" in name or len(name) + 1 > MAX_NAME:
            raise UsageError(f"invalid cpio entry name {entry.name!r}")
        size = entry.data_size() if stat.S_ISREG(entry.mode) or stat.S_ISLNK(entry.mode) else 0
        head = _header(entry, 0 if entry.name == TRAILER else ino, name, size)
        head += name + b"\0"
        head += b"\0" * pad4(len(head))
        out.write(head)
        if isinstance(entry.data, Path) and size:
            _copy_data(entry.data, size, out)
        elif size:
            assert isinstance(entry.data, bytes)
            out.write(entry.data)
        out.write(b"\0" * pad4(size))
        written += len(head) + size + pad4(size)
        ino += 1
    return written


def build_newc(entries: Iterable[CpioEntry], *, first_ino: int = 1) -> bytes:
    """The newc archive of ``entries`` (plus trailer) as bytes. See :func:`write_newc`."""
    buf = io.BytesIO()
    write_newc(entries, buf, first_ino=first_ino)
    return buf.getvalue()


@dataclass(frozen=True)
class InjectFile:
    """A file to put into an initrd: ``--initrd-inject`` of virt-install, plus name and mode.

    ``name`` is the path inside the archive; by default the basename of ``data`` (a Path) at
    the root, where virt-install puts it and where d-i, anaconda and others look for
    preseed.cfg / ks.cfg. Use ``mode=0o600`` for files that hold secrets (passwords, keys).
    """

    data: bytes | Path
    name: str | None = None
    mode: int = 0o644

    @property
    def archive_name(self) -> str:
        if self.name is not None:
            return normalize_name(self.name)
        if isinstance(self.data, Path):
            return normalize_name(self.data.name)
        raise UsageError("an injected file given as bytes needs a name")


def normalize_name(name: str) -> str:
    """``/etc/x`` and ``./etc/x`` become ``etc/x``; ``..`` and empty names are refused."""
    parts = [p for p in PurePosixPath(name).parts if p not in ("/", ".")]
    if not parts or ".." in parts or "\0" in name:
        raise UsageError(
            f"invalid name for a file in the initrd: {name!r}",
            hint="use a relative path without '..', e.g. preseed.cfg or etc/foo.conf",
        )
    return "/".join(parts)


def injection_entries(files: Sequence[InjectFile], *, mtime: int = 0) -> list[CpioEntry]:
    """Archive entries for ``files``: each missing parent directory once, then the file."""
    entries: list[CpioEntry] = []
    dirs: set[str] = set()
    names: set[str] = set()
    for f in files:
        name = f.archive_name
        if name in names or name in dirs:
            raise UsageError(f"two injected files would both be {name!r} in the initrd")
        names.add(name)
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in names:
                raise UsageError(f"{parent!r} is injected as a file and as a directory")
            if parent not in dirs:
                dirs.add(parent)
                entries.append(CpioEntry.directory(parent, mtime=mtime))
        entries.append(CpioEntry.file(name, f.data, f.mode, mtime=mtime))
    return entries


def cpio_tail(files: Sequence[InjectFile], *, mtime: int = 0) -> bytes:
    """Just the archive to append: backends that can concatenate (or stream) use this."""
    return build_newc(injection_entries(files, mtime=mtime), first_ino=0x7EB00000)


def injected_offset(initrd_size: int) -> int:
    """Where :func:`inject_files` puts the appended archive in an initrd of that size."""
    return initrd_size + pad4(initrd_size)


def iter_injected_parts(initrd_size: int, files: Sequence[InjectFile]) -> Iterator[bytes]:
    """The bytes to send after the original initrd (padding, then the archive), for backends
    that stream the combined initrd instead of writing it (an HTTP server for iPXE)."""
    yield b"\0" * pad4(initrd_size)
    yield cpio_tail(files)
