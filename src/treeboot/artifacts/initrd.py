"""Initrds: compression, segments, and the cpio entries of each segment.

The kernel reads an initrd the way init/initramfs.c ``unpack_to_rootfs`` does (format:
Documentation/driver-api/early-userspace/buffer-format.rst in Debian's linux-doc):

- NUL bytes between segments are skipped;
- a segment that starts with ``0`` on a 4-byte boundary (counted from the start of the file) is
  an uncompressed newc cpio archive, ending with its ``TRAILER!!!`` entry (the early-microcode
  archive of dracut and initramfs-tools, or one appended by ``--initrd-inject``);
- anything else must start with the magic of a decompressor the kernel knows (lib/decompress.c:
  gzip, bzip2, lzma, xz, lzo, lz4 legacy, zstd) and is one compressed stream whose content is
  one or more newc archives; it must end with a trailer ("junk at the end of compressed
  archive" otherwise).

Everything is streamed: a compressed segment is decompressed a chunk at a time into a push
parser that counts entries and drops file data, so memory stays at a few MiB whatever the
initrd holds, and at most ``max_decompressed`` bytes are examined.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from treeboot.artifacts._binfmt import elf_arch
from treeboot.artifacts.cpio import HEADER_SIZE, MAX_NAME, NEWC_CRC_MAGIC, NEWC_MAGIC, TRAILER, pad4
from treeboot.errors import KernelImageError, LocationError


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    XZ = "xz"
    ZSTD = "zstd"
    LZ4 = "lz4"  # the legacy frame, the one the kernel's unlz4 reads (lz4 -l)
    LZ4_FRAME = "lz4-frame"  # the modern frame: not accepted by the kernel
    LZMA = "lzma"
    BZIP2 = "bzip2"
    LZO = "lzo"


# Longer than the kernel's two-byte magics, to avoid false positives on foreign files.
_MAGICS: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b\x08", Compression.GZIP),
    (b"\x1f\x9e", Compression.GZIP),  # "old gzip" in lib/decompress.c
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
    (b"\x02\x21\x4c\x18", Compression.LZ4),
    (b"\x04\x22\x4d\x18", Compression.LZ4_FRAME),
    (b"BZh", Compression.BZIP2),
    (b"\x89LZO\x00", Compression.LZO),
    (b"\x5d\x00\x00", Compression.LZMA),  # properties byte 0x5d + dictionary size < 16 MiB
)
EXPECTED = "a newc cpio archive ('070701') or a gzip, xz, zstd, lz4, lzma, bzip2 or lzo stream"
DEFAULT_MAX_DECOMPRESSED = 4 << 30  # well above real initrds (Debian's: 131 MiB)
_IN_CHUNK = 1 << 16
_OUT_CHUNK = 1 << 20
_MEMLIMIT = 256 << 20  # xz/lzma dictionary cap: a hostile header cannot make us allocate more


def detect_compression(head: bytes) -> Compression | None:
    """The compression whose magic starts ``head``; None if there is none we know."""
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    return None


def sniff_initrd(head: bytes) -> Compression | None:
    """What the first segment of an initrd would be: NONE for a bare cpio archive."""
    if head.startswith((NEWC_MAGIC, NEWC_CRC_MAGIC)):
        return Compression.NONE
    return detect_compression(head)


class Decoder(Protocol):
    """The streaming interface of ``lzma.LZMADecompressor``, which the others are fitted to."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int) -> bytes: ...


class _Gzip:
    """zlib with lzma's interface (zlib keeps input it did not use in ``unconsumed_tail``)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)  # one gzip member, like the kernel's gunzip

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return not self._d.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._d.decompress(self._d.unconsumed_tail + data, max_length)


class _Lz4Legacy:
    """The legacy lz4 frame (lib/decompress_unlz4.c): magic, then blocks of
    ``u32 size`` + lz4 block of at most 8 MiB output. There is no end marker: the stream
    ends at the end of input, or at a size no block can have (NUL padding, the next segment).
    """

    MAGIC = b"\x02\x21\x4c\x18"
    BLOCK = 8 << 20
    BOUND = BLOCK + BLOCK // 255 + 16  # LZ4_COMPRESSBOUND

    def __init__(self) -> None:
        import lz4.block

        self._decompress_block = lz4.block.decompress
        self._in = bytearray()
        self._out = b""
        self._eoi = False
        self.eof = False
        self.unused_data = b""

    @property
    def needs_input(self) -> bool:
        return not self.eof and not self._out and not self._ready()

    def _ready(self) -> bool:
        if len(self._in) < 4:
            return self._eoi
        n = int.from_bytes(self._in[:4], "little")
        return self._in[:4] == self.MAGIC or not 0 < n <= self.BOUND or len(self._in) >= 4 + n

    def end_of_input(self) -> None:
        self._eoi = True

    def decompress(self, data: bytes, max_length: int) -> bytes:
        self._in += data
        if not self._out:
            self._step()
        out, self._out = self._out[:max_length], self._out[max_length:]
        return out

    def _step(self) -> None:
        while not self.eof:
            if len(self._in) < 4:
                if self._eoi and self._in:
                    raise EOFError("the stream ends inside a block size")
                self.eof = self._eoi
                return
            head = bytes(self._in[:4])
            n = int.from_bytes(head, "little")
            if head == self.MAGIC:  # lz4 -l output concatenated: keep going
                del self._in[:4]
                continue
            if not 0 < n <= self.BOUND:
                self.eof = True
                self.unused_data = bytes(self._in)
                self._in.clear()
                return
            if len(self._in) < 4 + n:
                if self._eoi:
                    raise EOFError("the stream ends inside a block")
                return
            block = bytes(self._in[4 : 4 + n])
            del self._in[: 4 + n]
            self._out = self._decompress_block(block, uncompressed_size=self.BLOCK)
            return


# The decompression modules are imported when a stream of their kind is met: a warm install
# (derived forms cached) reads no compressed stream, and these imports cost it ~9 ms.
def open_decoder(kind: Compression) -> Decoder | None:
    """A fresh streaming decoder for one stream; None where Python has none (lzo)."""
    if kind is Compression.GZIP:
        return _Gzip()
    if kind in (Compression.XZ, Compression.LZMA):
        import lzma

        form = lzma.FORMAT_XZ if kind is Compression.XZ else lzma.FORMAT_ALONE
        return lzma.LZMADecompressor(form, memlimit=_MEMLIMIT)
    if kind is Compression.BZIP2:
        import bz2

        return bz2.BZ2Decompressor()
    if kind is Compression.ZSTD:
        import pyzstd

        return pyzstd.ZstdDecompressor()
    if kind is Compression.LZ4_FRAME:
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor()  # type: ignore[no-any-return]
    if kind is Compression.LZ4:
        return _Lz4Legacy()
    return None


@functools.cache
def _decode_errors() -> tuple[type[Exception], ...]:
    """What a decoder raises on corrupt input (evaluated only when an exception is caught)."""
    import lzma

    import lz4.block
    import pyzstd

    return (
        zlib.error,
        lzma.LZMAError,
        OSError,  # bz2
        EOFError,
        ValueError,
        RuntimeError,  # lz4.frame
        lz4.block.LZ4BlockError,
        pyzstd.ZstdError,
    )


class DecompressedStream:
    """Decompress the one stream that starts at ``f``'s position, a chunk at a time.

    After :meth:`chunks` is exhausted: ``finished`` (the stream's end was reached),
    ``consumed`` (its compressed length), ``produced`` (bytes yielded), ``limited``
    (stopped at ``limit``).
    """

    def __init__(self, f: BinaryIO, kind: Compression, *, limit: int, where: str) -> None:
        self.kind = kind
        self.decoder = open_decoder(kind)
        self.limit = limit
        self.where = where
        self.finished = False
        self.limited = False
        self.consumed = 0
        self.produced = 0
        self._f = f

    def chunks(self) -> Iterator[bytes]:
        dec = self.decoder
        if dec is None:
            return
        read = 0
        at_eof = False
        idle = 0
        while not dec.eof:
            data = b""
            if dec.needs_input and not at_eof:
                data = self._f.read(_IN_CHUNK)
                read += len(data)
                if not data:
                    at_eof = True
                    if isinstance(dec, _Lz4Legacy):
                        dec.end_of_input()
            try:
                out = dec.decompress(data, _OUT_CHUNK)
            except _decode_errors() as e:
                raise KernelImageError(
                    f"{self.where}: the {self.kind} data is corrupt: {e}",
                    hint="the file is damaged or truncated: download it again",
                ) from e
            idle = 0 if out or data else idle + 1
            if not out and not dec.eof and (at_eof or idle > 8):
                raise KernelImageError(
                    f"{self.where}: the {self.kind} stream is truncated (input ends before it)",
                    hint="the file is incomplete: download it again",
                )
            if out:
                room = self.limit - self.produced
                self.produced += min(len(out), room)
                if len(out) > room:
                    self.limited = True
                    yield out[:room]
                    return
                yield out
        self.finished = True
        self.consumed = read - len(dec.unused_data or b"")  # lz4.frame: None


@dataclass(frozen=True)
class InitrdSegment:
    """One segment. ``length`` is None when its end was not found (lzo, or the budget ran
    out); ``entries`` (cpio entries, trailers not counted) is None when not counted."""

    offset: int
    length: int | None
    compression: Compression
    entries: int | None
    archives: int | None  # TRAILER!!!-terminated archives seen in the segment
    decompressed_size: int | None  # bytes of cpio data in the segment
    early_microcode: bool = False  # has kernel/x86/microcode/*.bin
    note: str | None = None


@dataclass(frozen=True)
class InitrdInfo:
    path: str
    size: int
    segments: tuple[InitrdSegment, ...]
    arch: str | None  # from the first ELF executable inside
    kernel_version: str | None  # from the lib/modules/<version> directory inside
    complete: bool  # every segment was walked to its end

    format = "initrd"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d = {"format": self.format, **d}
        for seg in d["segments"]:
            seg["compression"] = str(seg["compression"])
        return d


_MODULES_DIR = re.compile(rb"(?:usr/)?lib/modules/([^/]+)")
_HEX = re.compile(rb"[0-9A-Fa-f]{104}")
_ELF_PEEK = 20  # e_ident + e_type + e_machine


class NewcScanner:
    """Push parser over a newc byte stream: counts entries, drops their data.

    ``stop_at_trailer``: stop after the first trailer (an uncompressed segment in a file);
    otherwise accept any number of archives separated by NUL padding (a decompressed stream).
    """

    def __init__(self, *, stop_at_trailer: bool, where: str) -> None:
        self.stop_at_trailer = stop_at_trailer
        self.where = where
        self.entries = 0
        self.archives = 0
        self.done = False
        self.position = 0  # bytes of the stream consumed
        self.microcode = False
        self.module_versions: list[str] = []
        self.elf_heads: list[bytes] = []
        self._between_archives = True  # skipping NULs before a header
        self._in_name = False
        self._buf = bytearray()
        self._need = HEADER_SIZE
        self._skip = 0
        self._peek = 0
        self._namesize = 0
        self._filesize = 0
        self._mode = 0

    def feed(self, data: bytes) -> int:
        """Consume ``data``; return how much was used (less only once ``done``)."""
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n and not self.done:
            if self._skip:
                k = min(self._skip, n - i)
                if self._peek:
                    take = min(self._peek, k)
                    self._buf += view[i : i + take]
                    self._peek -= take
                    if not self._peek:
                        self.elf_heads.append(bytes(self._buf))
                        self._buf.clear()
                i += k
                self._skip -= k
                continue
            if self._between_archives:
                rest = bytes(view[i:])
                i += len(rest) - len(rest.lstrip(b"\0"))
                self._between_archives = i == n
                continue
            take = min(self._need - len(self._buf), n - i)
            self._buf += view[i : i + take]
            i += take
            if len(self._buf) == self._need:
                self._on_name() if self._in_name else self._on_header()
        self.position += i
        return i

    def take_skip(self) -> int:
        """Hand pending file data to the caller to seek over (nothing is being peeked at)."""
        if self._peek:
            return 0
        n, self._skip = self._skip, 0
        self.position += n
        return n

    def error(self, what: str) -> KernelImageError:
        return KernelImageError(
            f"{self.where}: {what} (after {self.entries} entries)",
            hint="the initrd is damaged or not an initrd: expected " + EXPECTED,
        )

    def _on_header(self) -> None:
        head = bytes(self._buf)
        if not head.startswith((NEWC_MAGIC, NEWC_CRC_MAGIC)):
            if head.startswith(b"070707"):
                raise self.error("old-style (odc) cpio header: the kernel reads only newc")
            raise self.error(f"no newc cpio magic, found {head[:8]!r}")
        if not _HEX.fullmatch(head, 6):
            raise self.error("cpio header has non-hexadecimal fields")
        self._mode = int(head[14:22], 16)
        self._filesize = int(head[54:62], 16)
        self._namesize = int(head[94:102], 16)
        if not 0 < self._namesize <= MAX_NAME:
            raise self.error(f"cpio name size {self._namesize} is out of range")
        self._in_name = True
        self._need = self._namesize + pad4(HEADER_SIZE + self._namesize)
        self._buf.clear()

    def _on_name(self) -> None:
        name = bytes(self._buf[: self._namesize]).split(b"\0", 1)[0]
        self._buf.clear()
        self._in_name = False
        self._need = HEADER_SIZE
        self._skip = self._filesize + pad4(self._filesize)
        if name == TRAILER.encode():
            self.archives += 1
            self._between_archives = True
            self.done = self.stop_at_trailer
            return
        self.entries += 1
        self._note(name)

    def _note(self, name: bytes) -> None:
        name = name.lstrip(b"/").removeprefix(b"./")
        if name.startswith(b"kernel/x86/microcode/"):
            self.microcode = True
        m = _MODULES_DIR.fullmatch(name)
        if m and stat.S_ISDIR(self._mode) and len(self.module_versions) < 8:
            self.module_versions.append(m.group(1).decode(errors="replace"))
        if stat.S_ISREG(self._mode) and self._filesize >= _ELF_PEEK and len(self.elf_heads) < 4:
            self._peek = _ELF_PEEK

    def finish(self, *, need_trailer: bool) -> None:
        """The stream ended: complain if it ended inside an entry (or without a trailer)."""
        inside = self._skip or self._in_name or (self._buf and not self._between_archives)
        if inside:
            raise self.error("the cpio archive is truncated inside an entry")
        if need_trailer and not self._between_archives:
            raise self.error(
                "the compressed cpio data does not end with a TRAILER!!! entry"
                " (the kernel says 'junk at the end of compressed archive')"
            )


def _skip_nuls(f: BinaryIO, offset: int, size: int) -> int:
    f.seek(offset)
    while offset < size:
        chunk = f.read(_IN_CHUNK)
        if not chunk:
            break
        stripped = chunk.lstrip(b"\0")
        offset += len(chunk) - len(stripped)
        if stripped:
            break
    return offset


def _scan_plain(
    f: BinaryIO, offset: int, size: int, where: str
) -> tuple[InitrdSegment, NewcScanner]:
    scanner = NewcScanner(stop_at_trailer=True, where=where)
    f.seek(offset)
    while not scanner.done:
        chunk = f.read(_OUT_CHUNK)
        if not chunk:
            scanner.finish(need_trailer=False)
            break
        scanner.feed(chunk)
        if scanner.take_skip():  # seek over file data instead of reading it
            if offset + scanner.position > size:
                raise scanner.error("the cpio archive is truncated inside an entry")
            f.seek(offset + scanner.position)
    seg = InitrdSegment(
        offset,
        scanner.position,
        Compression.NONE,
        scanner.entries,
        scanner.archives,
        scanner.position,
        scanner.microcode,
    )
    return seg, scanner


def _scan_compressed(
    f: BinaryIO, offset: int, kind: Compression, budget: int, where: str
) -> tuple[InitrdSegment, NewcScanner | None]:
    f.seek(offset)
    stream = DecompressedStream(f, kind, limit=budget, where=where)
    if stream.decoder is None:
        note = f"no {kind} decoder in Python: entry count and segment end unknown"
        return InitrdSegment(offset, None, kind, None, None, None, note=note), None
    scanner = NewcScanner(stop_at_trailer=False, where=where)
    for chunk in stream.chunks():
        scanner.feed(chunk)
    if stream.limited:
        note = f"stopped after {budget} decompressed bytes: entry count and segment end unknown"
        return InitrdSegment(offset, None, kind, None, None, None, note=note), None
    scanner.finish(need_trailer=True)
    seg = InitrdSegment(
        offset,
        stream.consumed,
        kind,
        scanner.entries,
        scanner.archives,
        stream.produced,
        scanner.microcode,
    )
    return seg, scanner


def scan_initrd_file(
    f: BinaryIO, size: int, *, name: str, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
) -> InitrdInfo:
    """Walk the segments of the initrd open as ``f`` (``size`` bytes). See :func:`scan_initrd`."""
    segments: list[InitrdSegment] = []
    scanners: list[NewcScanner] = []
    budget = max_decompressed
    offset = 0
    while (offset := _skip_nuls(f, offset, size)) < size:
        f.seek(offset)
        head = f.read(16)
        # like the kernel, take "0707..." for cpio and let the header check say what is wrong
        kind = Compression.NONE if head.startswith(b"0707") else sniff_initrd(head)
        where = f"{name}: segment {len(segments) + 1} at offset {offset}"
        if kind is None:
            what = "is not an initrd" if not segments else f"has unrecognised data at {offset}"
            raise KernelImageError(
                f"{name} {what}: found {head[:8].hex(' ')}, expected {EXPECTED}",
                hint="pass an initrd (initrd.gz, initrd.img, initramfs-*.img)",
            )
        if kind is Compression.NONE and offset % 4:
            raise KernelImageError(
                f"{where}: the uncompressed cpio archive is not on a 4-byte boundary,"
                " so the kernel would not unpack it",
                hint="pad what precedes it with NUL bytes to a multiple of 4",
            )
        scanner: NewcScanner | None
        if kind is Compression.NONE:
            seg, scanner = _scan_plain(f, offset, size, where)
        else:
            seg, scanner = _scan_compressed(f, offset, kind, budget, where)
            budget -= seg.decompressed_size or 0
        segments.append(seg)
        scanners += [scanner] if scanner else []
        if seg.length is None:
            break
        offset += seg.length
    if not segments:
        raise KernelImageError(f"{name} is empty or all NUL bytes: expected {EXPECTED}")
    return InitrdInfo(
        path=name,
        size=size,
        segments=tuple(segments),
        arch=_arch_of([h for s in scanners for h in s.elf_heads]),
        kernel_version=next((v for s in scanners for v in s.module_versions), None),
        complete=all(s.length is not None for s in segments),
    )


def _arch_of(elf_heads: list[bytes]) -> str | None:
    return next((a for h in elf_heads if (a := elf_arch(h))), None)


def scan_initrd(path: Path, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> InitrdInfo:
    """Segments of an initrd, with compression and cpio entry count each.

    Memory is bounded (streaming); at most ``max_decompressed`` decompressed bytes are read,
    after which the last segment is reported with unknown length and entry count.
    Raises KernelImageError for a foreign, damaged or truncated file.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return scan_initrd_file(f, size, name=str(path), max_decompressed=max_decompressed)
    except OSError as e:
        raise LocationError(f"cannot read {path}: {e.strerror}") from e
