"""Faster forms of the same boot content, derived on the host (pure functions over files).

- :func:`extract_vmlinux`: the ELF ``vmlinux`` inside an x86 bzImage (its compressed payload,
  ``payload_offset``/``payload_length`` in x86/boot.rst), kept only when it carries the PVH
  entry note ``XEN_ELFNOTE_PHYS32_ENTRY`` (type 18, owner "Xen"; xen/include/public/elfnote.h,
  arch/x86/platform/pvh/head.S). QEMU's x86 loader then enters it through ``pvh.bin`` in
  32-bit protected mode, so the guest skips the real-mode setup and its own xz decompressor.
- :func:`inflate_initrd`: the initrd with every compressed segment inflated, as a raw newc
  cpio (segments on 4-byte boundaries, init/initramfs.c reads it without a decompressor).
- :func:`inflate_image`: an arm64/RISC-V ``Image.gz`` (whole-file compression) inflated.

Everything streams and is bounded: at most ``limit`` output bytes and ``seconds`` of work,
else KernelImageError (the caller falls back to the original file). Output goes to an open
binary file; hashing and caching are the caller's (:mod:`treeboot.prepare.bootform`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from treeboot.artifacts._binfmt import pvh_entry
from treeboot.artifacts.initrd import (
    DEFAULT_MAX_DECOMPRESSED,
    Compression,
    DecompressedStream,
    NewcScanner,
    _scan_plain,
    _skip_nuls,
    detect_compression,
    sniff_initrd,
)
from treeboot.artifacts.kernel import read_kernel
from treeboot.errors import KernelImageError

MAX_VMLINUX = 1 << 30  # a decompressed x86 kernel (Debian 12: 60 MiB)
DEFAULT_SECONDS = 120.0  # wall-clock cap per derivation
_COPY = 1 << 20


@dataclass(frozen=True)
class Derived:
    """What a derivation wrote: its size and a one-line description of the input it read."""

    size: int
    detail: str
    pvh_entry: int | None = None


class _Deadline:
    def __init__(self, seconds: float, where: str) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds
        self.where = where

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise KernelImageError(
                f"{self.where}: decompression took longer than {self.seconds:g} s",
                hint="the file is unusually large or the host is overloaded",
            )


def _pump(chunks: Iterator[bytes], out: BinaryIO, deadline: _Deadline) -> int:
    n = 0
    for chunk in chunks:
        out.write(chunk)
        n += len(chunk)
        deadline.check()
    return n


def extract_vmlinux(
    kernel: Path, out: BinaryIO, *, limit: int = MAX_VMLINUX, seconds: float = DEFAULT_SECONDS
) -> Derived:
    """Write the ELF vmlinux of the bzImage ``kernel`` to ``out`` (a seekable file opened
    for writing and reading). KernelImageError if it is not a bzImage with a compressed ELF
    payload carrying the PVH note."""
    image = read_kernel(kernel)
    x86 = image.x86
    if x86 is None or not x86.payload_offset or not x86.payload_length:
        raise KernelImageError(f"{kernel} is {image.format}, not a bzImage with a payload")
    kind = Compression(image.compression) if image.compression in set(Compression) else None
    if kind is None or kind is Compression.NONE:
        raise KernelImageError(f"{kernel}: payload compression {image.compression} not supported")
    deadline = _Deadline(seconds, str(kernel))
    with open(kernel, "rb") as f:
        f.seek(x86.setup_size + x86.payload_offset)
        stream = DecompressedStream(f, kind, limit=limit, where=f"{kernel} payload")
        size = _pump(stream.chunks(), out, deadline)
    if stream.limited or not stream.finished:
        raise KernelImageError(f"{kernel}: the payload inflates past {limit} bytes")
    out.flush()
    entry = pvh_entry(out, size)
    if entry is None:
        raise KernelImageError(
            f"{kernel}: the kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)",
            hint="it was built without CONFIG_PVH; it boots through the bzImage setup",
        )
    return Derived(size, f"{kind} payload of {image.kernel_version or 'kernel'}", entry)


def inflate_initrd(
    initrd: Path,
    out: BinaryIO,
    *,
    limit: int = DEFAULT_MAX_DECOMPRESSED,
    seconds: float = DEFAULT_SECONDS,
) -> Derived:
    """Write ``initrd`` with each compressed segment inflated to ``out``: uncompressed newc
    archives, each on a 4-byte boundary. Every archive is checked as it is written (a
    segment must inflate completely and end with its trailer), else KernelImageError."""
    deadline = _Deadline(seconds, str(initrd))
    written = 0
    kinds: list[str] = []
    with open(initrd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        offset = 0
        while (offset := _skip_nuls(f, offset, size)) < size:
            f.seek(offset)
            kind = sniff_initrd(f.read(16))
            where = f"{initrd}: segment {len(kinds) + 1} at offset {offset}"
            if kind is None or kind is Compression.LZO:
                raise KernelImageError(f"{where}: cannot inflate {kind or 'unknown data'}")
            out.write(b"\0" * (-written % 4))
            written += -written % 4
            if kind is Compression.NONE:
                seg, _ = _scan_plain(f, offset, size, where)
                length = seg.length or 0
                f.seek(offset)
                written += _copy(f, out, length, deadline)
            else:
                f.seek(offset)
                stream = DecompressedStream(f, kind, limit=limit - written, where=where)
                scanner = NewcScanner(stop_at_trailer=False, where=where)
                written += _pump(_checked(stream.chunks(), scanner), out, deadline)
                if stream.limited:
                    raise KernelImageError(f"{where}: inflates past {limit} bytes")
                scanner.finish(need_trailer=True)
                length = stream.consumed
            kinds.append(str(kind))
            offset += length
    if not kinds:
        raise KernelImageError(f"{initrd} is empty")
    return Derived(written, "segments: " + ", ".join(kinds))


def _checked(chunks: Iterator[bytes], scanner: NewcScanner) -> Iterator[bytes]:
    for chunk in chunks:
        scanner.feed(chunk)
        yield chunk


def _copy(f: BinaryIO, out: BinaryIO, length: int, deadline: _Deadline) -> int:
    left = length
    while left:
        chunk = f.read(min(_COPY, left))
        if not chunk:
            raise KernelImageError(f"{f.name}: truncated segment")
        out.write(chunk)
        left -= len(chunk)
        deadline.check()
    return length


def inflate_image(
    kernel: Path, out: BinaryIO, *, limit: int = MAX_VMLINUX, seconds: float = DEFAULT_SECONDS
) -> Derived:
    """Write the arm64/RISC-V ``Image`` inside a whole-file-compressed ``Image.gz`` to ``out``
    (KernelImageError for anything else, an already plain Image included)."""
    with open(kernel, "rb") as f:
        kind = detect_compression(f.read(8))
        if kind is None or kind is Compression.LZO:
            raise KernelImageError(f"{kernel} is not a compressed Image")
        f.seek(0)
        stream = DecompressedStream(f, kind, limit=limit, where=str(kernel))
        size = _pump(stream.chunks(), out, _Deadline(seconds, str(kernel)))
    if stream.limited or not stream.finished:
        raise KernelImageError(f"{kernel}: inflates past {limit} bytes")
    out.flush()
    out.seek(0)
    head = out.read(64)
    if head[56:60] not in (b"ARM\x64", b"RSC\x05"):
        raise KernelImageError(f"{kernel}: the inflated data is not an arm64/RISC-V Image")
    return Derived(size, f"{kind}-compressed Image")
