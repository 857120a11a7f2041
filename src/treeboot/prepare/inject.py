"""Inject files into an initrd: a copy of the original bytes, NUL padding to 4 bytes, and a
newc archive of the files (the kernel unpacks concatenated archives in order).

The original initrd is never decompressed; the copy is a reflink where the filesystem can.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from treeboot.artifacts.cpio import InjectFile, cpio_tail, pad4
from treeboot.artifacts.initrd import sniff_initrd
from treeboot.errors import KernelImageError, UsageError

_COPY_CHUNK = 1 << 20
_FICLONE = 0x40049409  # linux/fs.h _IOW(0x94, 9, int): share extents (btrfs, xfs)


def _check_initrd(initrd: Path) -> int:
    try:
        with open(initrd, "rb") as f:
            head = f.read(16)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise UsageError(f"cannot read initrd {initrd}: {e.strerror}") from e
    if sniff_initrd(head) is None:
        raise KernelImageError(
            f"{initrd} is not an initrd: it starts with {head[:8].hex(' ')}, expected a newc"
            " cpio archive ('070701') or a gzip/xz/zstd/lz4/lzma/bzip2/lzo stream",
            hint="pass the initrd (initrd.gz, initrd.img), not the kernel",
        )
    return size


def _clone_or_copy(src: Path, dst: BinaryIO) -> None:
    """Copy ``src`` into the empty file ``dst``: reflink if possible, else an in-kernel copy."""
    with open(src, "rb") as s:
        with contextlib.suppress(OSError):
            fcntl.ioctl(dst.fileno(), _FICLONE, s.fileno())
            return
        try:
            size = os.fstat(s.fileno()).st_size
            while (n := os.copy_file_range(s.fileno(), dst.fileno(), _COPY_CHUNK << 4)) > 0:
                size -= n
            if size == 0:
                return
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
        s.seek(0)
        dst.seek(0)
        dst.truncate()
        shutil.copyfileobj(s, dst, _COPY_CHUNK)


def inject_files(initrd: Path, files: Sequence[InjectFile], out: Path, *, mtime: int = 0) -> Path:
    """Write ``out`` = ``initrd`` + NUL padding to 4 bytes + newc archive of ``files``.

    The original bytes are copied as they are (never decompressed). ``out`` appears
    atomically. The appended archive starts at ``injected_offset(initrd.stat().st_size)``.
    """
    size = _check_initrd(initrd)
    tail = cpio_tail(files, mtime=mtime)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w+b") as dst:
            _clone_or_copy(initrd, dst)
            if dst.seek(0, os.SEEK_END) != size:
                raise UsageError(f"{initrd} changed size while it was copied")
            dst.write(b"\0" * pad4(size))
            dst.write(tail)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out
