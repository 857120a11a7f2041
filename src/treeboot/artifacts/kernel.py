"""Kernel images: the headers a boot loader reads before it jumps.

Specs (Debian package linux-doc, /usr/share/doc/linux-doc-6.1/Documentation/):

- x86/boot.rst: the real-mode setup header at 0x1f1, "HdrS" at 0x202. The file is
  ``(setup_sects + 1) * 512`` bytes of real-mode setup (setup_sects 0 means 4), then the
  protected-mode code, which carries the compressed kernel at ``payload_offset``;
- arm64/booting.rst: 64-byte Image header, "ARM\\x64" at 56;
- riscv/boot-image-header.rst: 64-byte Image header, "RSC\\x05" at 56 ("RISCV" at 48 before
  header version 0.2);
- EFI zboot (drivers/firmware/efi/libstub/zboot-header.S): "MZ", "zimg" at 4, payload offset
  and size at 8 and 12, compression name at 24, PE header offset at 0x3c;
- PE/COFF (an EFI stub: "MZ" at 0, the PE header at the offset stored at 0x3c) and ELF
  (System V gABI ``e_ident``).

What QEMU's x86 loader puts in fw_cfg for a kernel is in :mod:`treeboot.artifacts.fwcfg`.
"""

from __future__ import annotations

import io
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from treeboot.artifacts._binfmt import Blob, ElfHeader, PeHeader, parse_elf, parse_pe
from treeboot.artifacts.initrd import (
    Compression,
    DecompressedStream,
    InitrdInfo,
    detect_compression,
)
from treeboot.errors import KernelImageError, LocationError


class ImageFormat(StrEnum):
    X86_BZIMAGE = "x86-bzimage"
    ARM64_IMAGE = "arm64-image"
    RISCV64_IMAGE = "riscv64-image"
    EFI_ZBOOT = "efi-zboot"
    PE_EFI = "pe-efi"
    ELF = "elf"


EXPECTED = (
    "an x86 bzImage ('HdrS' at 0x202), an arm64 Image ('ARM\\x64' at 56), a RISC-V Image"
    " ('RSC\\x05' at 56), an EFI zboot image ('zimg' at 4), a PE/COFF EFI binary ('MZ' and"
    " 'PE\\0\\0'), an ELF file ('\\x7fELF'), or an initrd (cpio '070701' or a compressed stream)"
)
# x86 setup header: (name, offset, struct format, first boot protocol with it) -- boot.rst
# "The Real-Mode Kernel Header". Fields missing from older protocols read as None.
_X86_FIELDS = (
    ("syssize", 0x1F4, "I", 0x204),
    ("kernel_version", 0x20E, "H", 0x200),
    ("loadflags", 0x211, "B", 0x200),
    ("initrd_addr_max", 0x22C, "I", 0x203),
    ("kernel_alignment", 0x230, "I", 0x205),
    ("relocatable_kernel", 0x234, "B", 0x205),
    ("min_alignment", 0x235, "B", 0x20A),
    ("xloadflags", 0x236, "H", 0x20C),
    ("cmdline_size", 0x238, "I", 0x206),
    ("payload_offset", 0x248, "I", 0x208),
    ("payload_length", 0x24C, "I", 0x208),
    ("pref_address", 0x258, "Q", 0x20A),
    ("init_size", 0x260, "I", 0x20A),
    ("handover_offset", 0x264, "I", 0x20B),
    ("kernel_info_offset", 0x268, "I", 0x20F),
)
_X86_HEADER_END = 0x270
_LOADFLAGS = {
    0: "LOADED_HIGH",
    1: "KASLR_FLAG",
    5: "QUIET_FLAG",
    6: "KEEP_SEGMENTS",
    7: "CAN_USE_HEAP",
}
_XLOADFLAGS = {  # arch/x86/include/uapi/asm/bootparam.h
    0: "XLF_KERNEL_64",
    1: "XLF_CAN_BE_LOADED_ABOVE_4G",
    2: "XLF_EFI_HANDOVER_32",
    3: "XLF_EFI_HANDOVER_64",
    4: "XLF_EFI_KEXEC",
    5: "XLF_5LEVEL",
    6: "XLF_5LEVEL_ENABLED",
}
_ARM64_PAGE_SIZES = {0: None, 1: 4096, 2: 16384, 3: 65536}
_BANNER = re.compile(rb"Linux version (\d[!-~]*)[^\x00\n]{0,300}")
_BANNER_LIMIT = 256 << 20  # decompressed bytes searched for the banner of a compressed Image
_HEAD = 1 << 16


@dataclass(frozen=True)
class X86Setup:
    boot_protocol: str  # "2.15"
    setup_sects: int  # as stored (0 means 4)
    setup_size: int  # bytes of real-mode code: (setup_sects or 4) + 1 sectors
    protected_mode_size: int  # the rest of the file: what QEMU calls the kernel
    syssize: int | None
    loadflags: int
    loadflags_names: tuple[str, ...]
    relocatable: bool
    kernel_alignment: int | None
    min_alignment: int | None
    xloadflags: int
    xloadflags_names: tuple[str, ...]
    cmdline_size: int  # longest command line, without the NUL
    initrd_addr_max: int
    init_size: int | None
    pref_address: int | None
    payload_offset: int | None  # from the start of the protected-mode code
    payload_length: int | None
    handover_offset: int | None
    kernel_info_offset: int | None

    @property
    def protocol(self) -> int:
        major, minor = self.boot_protocol.split(".")
        return int(major) << 8 | int(minor)


@dataclass(frozen=True)
class BootImageHeader:
    """The 64-byte header of an arm64 or RISC-V ``Image``."""

    text_offset: int
    image_size: int  # memory the image needs from its start (0: unknown, pre-3.17 arm64)
    flags: int
    endianness: str
    page_size: int | None  # arm64 only
    physical_placement: str | None  # arm64 only
    header_version: str | None  # RISC-V only
    efi_stub: bool  # starts with "MZ": also a PE/COFF EFI application


@dataclass(frozen=True)
class ZbootHeader:
    compression: str  # as the header names it ("gzip", "lzma", "zstd", ...)
    payload_offset: int
    payload_size: int


@dataclass(frozen=True)
class KernelImage:
    path: str
    format: ImageFormat
    arch: str | None
    kernel_version: str | None  # the release, as `uname -r` prints it
    kernel_banner: str | None  # the whole version string
    size: int
    compression: str | None  # of the bzImage/zboot payload or the whole file (Image.gz)
    x86: X86Setup | None = None
    image: BootImageHeader | None = None
    zboot: ZbootHeader | None = None
    pe: PeHeader | None = None
    elf: ElfHeader | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": str(self.format),
            "arch": self.arch,
            "kernel_version": self.kernel_version,
            "kernel_banner": self.kernel_banner,
            "path": self.path,
            "size": self.size,
            "compression": self.compression,
        }
        for part in (self.x86, self.image, self.elf):
            if part is not None:
                d.update(asdict(part))
        for key, part2 in (("zboot", self.zboot), ("pe", self.pe)):
            d[key] = asdict(part2) if part2 is not None else None
        return d


def find_banner(chunks: Iterator[bytes]) -> str | None:
    """The first "Linux version ..." string in a stream of chunks."""
    tail = b""
    for chunk in chunks:
        buf = tail + chunk
        m = _BANNER.search(buf)
        if m and (m.end() < len(buf) or len(m.group(0)) > 300):
            return m.group(0).decode("ascii", "replace").strip()
        tail = buf[-400:]
    m = _BANNER.search(tail)
    return m.group(0).decode("ascii", "replace").strip() if m else None


def _release(banner: str | None) -> str | None:
    if not banner:
        return None
    words = banner.split()
    return words[2] if banner.startswith("Linux version ") and len(words) > 2 else words[0]


def _flag_names(value: int, names: dict[int, str]) -> tuple[str, ...]:
    return tuple(name for bit, name in names.items() if value >> bit & 1)


def _x86_fields(head: bytes, protocol: int) -> dict[str, int | None]:
    return {
        name: struct.unpack_from("<" + fmt, head, off)[0] if protocol >= first else None
        for name, off, fmt, first in _X86_FIELDS
    }


def _payload_compression(blob: Blob, start: int, length: int) -> str:
    if start + length > blob.size:
        raise blob.truncated(f"the compressed kernel (payload) ends at {start + length}")
    magic = blob.read(start, 8, "the payload magic")
    kind = detect_compression(magic)
    if kind is None and magic[:2] in (b"\x42\x5a", b"\x5d\x00"):  # boot.rst lists 2-byte magics
        kind = Compression.BZIP2 if magic[:2] == b"BZ" else Compression.LZMA
    return str(kind) if kind else ("none" if magic[:4] == b"\x7fELF" else "unknown")


def _parse_x86(blob: Blob, head: bytes) -> KernelImage:
    head = blob.read(0, _X86_HEADER_END, "the x86 setup header")
    protocol = struct.unpack_from("<H", head, 0x206)[0]
    v = _x86_fields(head, protocol)
    setup_sects = head[0x1F1]
    setup_size = ((setup_sects or 4) + 1) * 512
    if setup_size > blob.size:
        raise blob.truncated(f"the setup is {setup_size} bytes (setup_sects={setup_sects})")
    pm_size = blob.size - setup_size
    if v["syssize"] is not None and v["syssize"] * 16 > pm_size:
        raise blob.truncated(
            f"the header announces {setup_size} bytes of setup and {v['syssize'] * 16} bytes"
            " of protected-mode code (syssize)"
        )
    banner = None
    if v["kernel_version"] and 0x200 + v["kernel_version"] < setup_size:
        raw = blob.read_upto(0x200 + v["kernel_version"], 256).split(b"\0", 1)[0]
        banner = raw.decode("ascii", "replace").strip() or None
    compression = None
    if v["payload_offset"] and v["payload_length"]:
        start = setup_size + v["payload_offset"]
        compression = _payload_compression(blob, start, v["payload_length"])
    xlf = v["xloadflags"] or 0
    setup = X86Setup(
        boot_protocol=f"{protocol >> 8}.{protocol & 0xFF:02d}",
        setup_sects=setup_sects,
        setup_size=setup_size,
        protected_mode_size=pm_size,
        syssize=v["syssize"],
        loadflags=v["loadflags"] or 0,
        loadflags_names=_flag_names(v["loadflags"] or 0, _LOADFLAGS),
        relocatable=bool(v["relocatable_kernel"]),
        kernel_alignment=v["kernel_alignment"],
        min_alignment=v["min_alignment"],
        xloadflags=xlf,
        xloadflags_names=_flag_names(xlf, _XLOADFLAGS),
        cmdline_size=v["cmdline_size"] if v["cmdline_size"] is not None else 255,
        initrd_addr_max=v["initrd_addr_max"] if v["initrd_addr_max"] is not None else 0x37FFFFFF,
        init_size=v["init_size"],
        pref_address=v["pref_address"],
        payload_offset=v["payload_offset"],
        payload_length=v["payload_length"],
        handover_offset=v["handover_offset"],
        kernel_info_offset=v["kernel_info_offset"],
    )
    pe = parse_pe(blob, EXPECTED) if head[:2] == b"MZ" else None
    arch = "x86_64" if xlf & 1 else "i686"
    return KernelImage(
        blob.name, ImageFormat.X86_BZIMAGE, arch, _release(banner), banner, blob.size,
        compression, x86=setup, pe=pe,
    )  # fmt: skip


def _image_header(head: bytes, riscv: bool) -> BootImageHeader:
    text_offset, image_size, flags = struct.unpack_from("<QQQ", head, 8)
    version = None
    page_size = placement = None
    if riscv:
        (raw_version,) = struct.unpack_from("<I", head, 32)
        version = f"{raw_version >> 16}.{raw_version & 0xFFFF}"
    else:
        page_size = _ARM64_PAGE_SIZES[flags >> 1 & 3]
        placement = "anywhere" if flags >> 3 & 1 else "near-dram-base"
        if image_size == 0:  # before v3.17: text_offset's endianness unknown, 0x80000 assumed
            text_offset = 0x80000
    return BootImageHeader(
        text_offset=text_offset,
        image_size=image_size,
        flags=flags,
        endianness="big" if flags & 1 else "little",
        page_size=page_size,
        physical_placement=placement,
        header_version=version,
        efi_stub=head[:2] == b"MZ",
    )


def _image_kind(head: bytes) -> ImageFormat | None:
    if head[56:60] == b"ARM\x64":
        return ImageFormat.ARM64_IMAGE
    if head[56:60] == b"RSC\x05" or head[48:56] == b"RISCV\0\0\0":
        return ImageFormat.RISCV64_IMAGE
    return None


def _parse_image(blob: Blob, head: bytes, kind: ImageFormat) -> KernelImage:
    head = blob.read(0, 64, f"the {kind} header")
    image = _image_header(head, kind is ImageFormat.RISCV64_IMAGE)
    pe = parse_pe(blob, EXPECTED) if image.efi_stub else None
    arch = "aarch64" if kind is ImageFormat.ARM64_IMAGE else "riscv64"
    arch = pe.machine if pe and pe.machine else arch
    banner = find_banner(blob.chunks())
    return KernelImage(
        blob.name, kind, arch, _release(banner), banner, blob.size, None, image=image, pe=pe
    )


def _decompressed(blob: Blob, offset: int, kind: Compression) -> tuple[bytes, str | None]:
    """The first 64 KiB of the stream at ``offset``, and its banner if it is an Image
    (anything else, such as an initrd, is not decompressed further)."""
    blob.f.seek(offset)
    stream = DecompressedStream(blob.f, kind, limit=_BANNER_LIMIT, where=blob.name)
    first = bytearray()

    def chunks() -> Iterator[bytes]:
        for chunk in stream.chunks():
            if len(first) < _HEAD:
                first.extend(chunk[: _HEAD - len(first)])
            if len(first) >= 64 and _image_kind(bytes(first[:64])) is None:
                return
            yield chunk

    banner = find_banner(chunks())
    return bytes(first), banner


def _parse_zboot(blob: Blob, head: bytes) -> KernelImage:
    head = blob.read(0, 64, "the EFI zboot header")
    offset, size = struct.unpack_from("<II", head, 8)
    name = head[24:56].split(b"\0", 1)[0].decode("ascii", "replace")
    if offset + size > blob.size:
        raise blob.truncated(f"its zboot payload ends at {offset + size}")
    pe = parse_pe(blob, EXPECTED)
    kind = detect_compression(blob.read(offset, 8, "the zboot payload"))
    inner, banner = _decompressed(blob, offset, kind) if kind else (b"", None)
    image_kind = _image_kind(inner)
    image = _image_header(inner, image_kind is ImageFormat.RISCV64_IMAGE) if image_kind else None
    return KernelImage(
        blob.name, ImageFormat.EFI_ZBOOT, pe.machine, _release(banner), banner, blob.size,
        name, image=image, zboot=ZbootHeader(name, offset, size), pe=pe,
    )  # fmt: skip


def _parse_elf(blob: Blob) -> KernelImage:
    elf = parse_elf(blob)
    banner = find_banner(blob.chunks())
    return KernelImage(
        blob.name, ImageFormat.ELF, elf.machine, _release(banner), banner, blob.size, None, elf=elf
    )


def _parse_compressed(blob: Blob, kind: Compression) -> KernelImage:
    inner, banner = _decompressed(blob, 0, kind)
    image_kind = _image_kind(inner)
    if image_kind is None:
        raise KernelImageError(
            f"{blob.name} is {kind}-compressed but does not hold an arm64 or RISC-V Image",
            hint="initrds are read by scan_initrd / `treeboot inspect`",
        )
    image = _image_header(inner, image_kind is ImageFormat.RISCV64_IMAGE)
    arch = "aarch64" if image_kind is ImageFormat.ARM64_IMAGE else "riscv64"
    return KernelImage(
        blob.name, image_kind, arch, _release(banner), banner, blob.size, str(kind), image=image
    )


def _parse(blob: Blob) -> KernelImage:
    head = blob.read_upto(0, 4096)
    if not head:
        raise KernelImageError(f"{blob.name} is empty: expected {EXPECTED}")
    if head[0x202:0x206] == b"HdrS":
        return _parse_x86(blob, head)
    if head[:2] == b"MZ" and head[4:8] == b"zimg":
        return _parse_zboot(blob, head)
    if kind := _image_kind(head):
        return _parse_image(blob, head, kind)
    if head[:4] == b"\x7fELF":
        return _parse_elf(blob)
    if head[:2] == b"MZ" and len(head) >= 64:
        pe = parse_pe(blob, EXPECTED)
        return KernelImage(blob.name, ImageFormat.PE_EFI, pe.machine, None, None, blob.size,
                           None, pe=pe)  # fmt: skip
    if (comp := detect_compression(head)) and comp is not Compression.LZO:
        return _parse_compressed(blob, comp)
    old = ""
    if head[0x1FE:0x200] == b"\x55\xaa":
        old = " (an x86 boot sector without 'HdrS': boot protocol < 2.00)"
    raise KernelImageError(
        f"{blob.name} is not a kernel image{old}: it starts with {head[:8].hex(' ')};"
        f" expected {EXPECTED}",
        hint="check that the file is the kernel (linux, vmlinuz, Image, bzImage)",
    )


def parse_kernel(
    data: bytes | BinaryIO, *, size: int | None = None, name: str = "<image>"
) -> KernelImage:
    """Parse a kernel image from bytes or an open binary file.

    ``size`` is the size of the whole file when ``data`` holds only its beginning (fixtures);
    it defaults to the length of ``data``. Raises KernelImageError for a foreign or truncated
    file.
    """
    f = io.BytesIO(data) if isinstance(data, bytes) else data
    if size is None:
        size = len(data) if isinstance(data, bytes) else os.fstat(f.fileno()).st_size
    return _parse(Blob(f, size, name))


def read_kernel(path: Path) -> KernelImage:
    """Parse the kernel image at ``path``. See :func:`parse_kernel`."""
    try:
        with open(path, "rb") as f:
            return parse_kernel(f, name=str(path))
    except OSError as e:
        raise LocationError(f"cannot read {path}: {e.strerror}") from e


def read_kernel_header(path: Path) -> X86Setup:
    """The x86 setup header of the bzImage at ``path`` (KernelImageError for other formats)."""
    image = read_kernel(path)
    if image.x86 is None:
        raise KernelImageError(f"{path} is {image.format}, not an x86 bzImage")
    return image.x86


def _holds_image(f: BinaryIO, kind: Compression, name: str) -> bool:
    """Whether the compressed stream in ``f`` starts with an arm64/RISC-V Image header."""
    head = b""
    for chunk in DecompressedStream(f, kind, limit=_HEAD, where=name).chunks():
        head += chunk
        if len(head) >= 64:
            break
    return _image_kind(head) is not None


def inspect_file(path: Path, *, max_decompressed: int | None = None) -> KernelImage | InitrdInfo:
    """What ``path`` is: a kernel image (any format above) or an initrd (with its segments)."""
    from treeboot.artifacts.initrd import DEFAULT_MAX_DECOMPRESSED, scan_initrd, sniff_initrd

    try:
        with open(path, "rb") as f:
            kind = sniff_initrd(f.read(64))
            f.seek(0)
            is_image = kind not in (None, Compression.NONE, Compression.LZO) and _holds_image(
                f, kind, str(path)
            )
    except OSError as e:
        raise LocationError(f"cannot read {path}: {e.strerror}") from e
    if kind is None or is_image:
        return read_kernel(path)
    return scan_initrd(path, max_decompressed=max_decompressed or DEFAULT_MAX_DECOMPRESSED)
