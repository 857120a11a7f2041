"""PE/COFF and ELF headers, as far as boot artifacts need them (machine, entry, sections).

PE/COFF: Microsoft's "PE Format" spec: "MZ" at 0, the offset of "PE\\0\\0" at 0x3c, then the
COFF header, the optional header and the section table. ELF: System V gABI ``e_ident`` and
``Elf{32,64}_Ehdr``, ``Elf64_Phdr`` and the Xen PVH entry note. Used by
:mod:`treeboot.artifacts.kernel` (EFI stubs, vmlinux), :mod:`treeboot.artifacts.initrd` (the
arch of the programs inside), :mod:`treeboot.artifacts.derive` and
:mod:`treeboot.artifacts.fwcfg` (the vmlinux entered through PVH).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from treeboot.errors import KernelImageError

# PE/COFF "Machine Types" and ELF e_machine values -> the arch names of model.Identification.
PE_MACHINES = {
    0x014C: "i686",
    0x8664: "x86_64",
    0xAA64: "aarch64",
    0x01C2: "armv7l",
    0x01C4: "armv7l",
    0x5032: "riscv32",
    0x5064: "riscv64",
    0x6264: "loongarch64",
    0x0200: "ia64",
}
ELF_MACHINES = {
    3: "i686",
    62: "x86_64",
    183: "aarch64",
    40: "armv7l",
    243: "riscv64",
    21: "ppc64",
    20: "ppc",
    22: "s390x",
    8: "mips",
    258: "loongarch64",
    2: "sparc",
    43: "sparc64",
    15: "hppa",
    0x9026: "alpha",
}
# (e_machine, ELF class, little endian) where the name depends on more than e_machine
_ELF_VARIANTS = {
    (21, 64, True): "ppc64le",
    (8, 32, True): "mipsel",
    (8, 64, False): "mips64",
    (8, 64, True): "mips64el",
    (243, 32, True): "riscv32",
    (22, 32, False): "s390",
}
_ELF_TYPES = {1: "relocatable", 2: "executable", 3: "shared-object", 4: "core"}
_PE_SUBSYSTEMS = {10: "efi-application", 11: "efi-boot-driver", 12: "efi-runtime-driver"}
_TRUNCATED_HINT = "the file is incomplete or not what it seems: download it again"


class Blob:
    """Random access to the bytes under inspection. ``size`` may exceed what is at hand: a
    test fixture keeps only the headers of a real file and states the real size."""

    def __init__(self, f: BinaryIO, size: int, name: str) -> None:
        self.f = f
        self.size = size
        self.name = name

    def read(self, offset: int, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes at ``offset``, or KernelImageError saying what was cut off."""
        data = self.read_upto(offset, n)
        if len(data) < n:
            raise self.truncated(f"{what} needs {n} bytes at offset {offset:#x}")
        return data

    def read_upto(self, offset: int, n: int) -> bytes:
        if offset >= self.size or offset < 0:
            return b""
        self.f.seek(offset)
        return self.f.read(min(n, self.size - offset))

    def chunks(self, offset: int = 0, size: int = 1 << 20) -> Iterator[bytes]:
        while chunk := self.read_upto(offset, size):
            yield chunk
            offset += len(chunk)

    def truncated(self, what: str) -> KernelImageError:
        return KernelImageError(
            f"{self.name} is truncated: {what}, but the file has {self.size} bytes",
            hint=_TRUNCATED_HINT,
        )


@dataclass(frozen=True)
class PeSection:
    name: str
    virtual_address: int
    virtual_size: int
    raw_offset: int
    raw_size: int


@dataclass(frozen=True)
class PeHeader:
    offset: int  # of "PE\0\0"
    machine: str | None
    machine_code: int
    pe32plus: bool
    subsystem: str | None
    entry_point: int
    size_of_image: int
    sections: tuple[PeSection, ...]


@dataclass(frozen=True)
class ElfHeader:
    elf_class: int  # 32 or 64
    endianness: str
    machine: str | None
    machine_code: int
    type: str
    entry: int


def parse_pe(blob: Blob, expected: str) -> PeHeader:
    """The PE header of an "MZ" file; ``expected`` goes into the error for a bare "MZ"."""
    (lfanew,) = struct.unpack_from("<I", blob.read(0x3C, 4, "the PE header offset"))
    coff = blob.read(lfanew, 24, "the PE signature and COFF header")
    if coff[:4] != b"PE\0\0":
        raise KernelImageError(
            f"{blob.name}: 'MZ' at 0 but no 'PE\\0\\0' at {lfanew:#x}: expected {expected}"
        )
    machine, nsec, _, _, _, optsize, _ = struct.unpack_from("<HHIIIHH", coff, 4)
    if nsec > 96 or not 0x5C <= optsize <= 0x400:  # 96: the PE spec's limit
        raise KernelImageError(f"{blob.name}: implausible PE header ({nsec} sections)")
    opt = blob.read(lfanew + 24, optsize, "the PE optional header")
    table = blob.read(lfanew + 24 + optsize, 40 * nsec, "the PE section table")
    sections = []
    for i in range(nsec):
        raw = table[40 * i : 40 * i + 40]
        vsize, vaddr, rsize, roff = struct.unpack_from("<IIII", raw, 8)
        name = raw[:8].rstrip(b"\0").decode("ascii", "replace")
        sections.append(PeSection(name, vaddr, vsize, roff, rsize))
    end = max((s.raw_offset + s.raw_size for s in sections if s.raw_size), default=0)
    if end > blob.size:
        raise blob.truncated(f"its PE sections end at {end}")
    (subsystem,) = struct.unpack_from("<H", opt, 68)
    return PeHeader(
        offset=lfanew,
        machine=PE_MACHINES.get(machine),
        machine_code=machine,
        pe32plus=struct.unpack_from("<H", opt, 0)[0] == 0x20B,
        subsystem=_PE_SUBSYSTEMS.get(subsystem, str(subsystem)),
        entry_point=struct.unpack_from("<I", opt, 16)[0],
        size_of_image=struct.unpack_from("<I", opt, 56)[0],
        sections=tuple(sections),
    )


def _elf_name(machine: int, bits: int, little: bool) -> str | None:
    return _ELF_VARIANTS.get((machine, bits, little), ELF_MACHINES.get(machine))


def elf_arch(head: bytes) -> str | None:
    """Arch of an ELF executable or shared object from its first 20 bytes, else None."""
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    little = head[5] == 1
    etype, machine = struct.unpack_from("<HH" if little else ">HH", head, 16)
    if etype not in (2, 3):
        return None
    return _elf_name(machine, 32 if head[4] == 1 else 64, little)


def parse_elf(blob: Blob) -> ElfHeader:
    """The ELF header; KernelImageError if it is invalid or its tables lie past the end."""
    ident = blob.read(0, 16, "the ELF identification")
    if ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise KernelImageError(f"{blob.name}: ELF header with invalid class or data encoding")
    bits, little = (32 if ident[4] == 1 else 64), ident[5] == 1
    head = blob.read(0, 52 if bits == 32 else 64, "the ELF header")
    e, word = ("<" if little else ">"), ("I" if bits == 32 else "Q")
    etype, machine = struct.unpack_from(e + "HH", head, 16)
    entry, phoff, shoff = struct.unpack_from(e + word * 3, head, 24)
    sizes = struct.unpack_from(e + "HHHH", head, 42 if bits == 32 else 54)
    phentsize, phnum, shentsize, shnum = sizes
    end = max(phoff + phentsize * phnum, shoff + shentsize * shnum if shnum else 0)
    if end > blob.size:
        raise blob.truncated(f"its ELF headers end at {end}")
    return ElfHeader(
        elf_class=bits,
        endianness="little" if little else "big",
        machine=_elf_name(machine, bits, little),
        machine_code=machine,
        type=_ELF_TYPES.get(etype, str(etype)),
        entry=entry,
    )


PT_LOAD = 1
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry (xen/include/public/elfnote.h)


@dataclass(frozen=True)
class ElfSegment:
    """One ``Elf64_Phdr``: where a segment is in the file and where it goes in memory."""

    type: int
    offset: int
    paddr: int
    filesz: int
    memsz: int


def elf64_segments(f: BinaryIO, size: int) -> list[ElfSegment] | None:
    """The program headers of the 64-bit little-endian ELF file ``f`` (``size`` bytes long);
    None when it is not one or its table lies past the end (an x86_64 vmlinux is one)."""
    f.seek(0)
    head = f.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return None
    (phoff,) = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    if phentsize < 56 or phnum > 64 or phoff + phnum * phentsize > size:
        return None
    f.seek(phoff)
    table = f.read(phnum * phentsize)
    out = []
    for i in range(phnum):
        kind, _, offset, _, paddr, filesz, memsz = struct.unpack_from(
            "<IIQQQQQ", table, i * phentsize
        )
        out.append(ElfSegment(kind, offset, paddr, filesz, memsz))
    return out


def pvh_entry(f: BinaryIO, size: int, segments: list[ElfSegment] | None = None) -> int | None:
    """The PVH entry address from the ELF notes of the vmlinux in ``f``; None without one.
    ``segments``: its program headers, when the caller has read them already."""
    for seg in segments if segments is not None else elf64_segments(f, size) or []:
        if seg.type != PT_NOTE or seg.offset + seg.filesz > size or seg.filesz > 1 << 20:
            continue
        f.seek(seg.offset)
        entry = _xen_entry(f.read(seg.filesz))
        if entry is not None:
            return entry
    return None


def _xen_entry(notes: bytes) -> int | None:
    at = 0
    while at + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, at)
        name_at = at + 12
        desc_at = name_at + (namesz + 3 & ~3)
        name = notes[name_at : name_at + namesz].rstrip(b"\0")
        if name == b"Xen" and kind == XEN_ELFNOTE_PHYS32_ENTRY and descsz >= 4:
            return int(struct.unpack_from("<I", notes, desc_at)[0])
        at = desc_at + (descsz + 3 & ~3)
    return None
