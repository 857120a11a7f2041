#!/usr/bin/env python3
"""Make the kernel-image fixtures of tests/test_kernel.py (run from anywhere; writes beside
this script, plus fixtures.json: source, full size and sha256 of each fixture's origin).

Truncated real headers (the first bytes a parser needs, from Debian 12 packages):
  debian12-amd64-linux.head      debian-installer-12-netboot-amd64 .../amd64/linux: the setup
                                 (39 sectors + boot sector), then the protected-mode code up to
                                 64 bytes past the start of the xz payload
  debian12-arm64-linux.head      debian-installer-12-netboot-arm64 .../arm64/linux: Image
                                 header + PE/COFF headers (first 4 KiB)
  debian12-amd64-bootnetx64.efi.head   the PE/COFF headers of the netboot GRUB (pe-efi)
  qemu-opensbi-riscv64.elf.head  qemu-system-data: a little-endian 64-bit RISC-V ELF
  qemu-s390-ccw.img.head         qemu-system-data: a big-endian 64-bit s390x ELF

Built from the specs, because no such file is in any package installed here (kept whole,
they are small):
  riscv64-image.bin  Documentation/riscv/boot-image-header.rst header v0.2 + PE (EFI stub)
  arm64-zboot.efi    drivers/firmware/efi/libstub/zboot-header.S ("zimg", gzip payload whose
                     content starts with an arm64 Image header)
  ppc64le-vmlinux    an ELF64 little-endian EM_PPC64 executable (what ppc64le boots)
  arm64-Image.gz     gzip of an arm64 Image header + banner
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NETBOOT = Path("/usr/lib/debian-installer/images/12")
REAL = {
    "debian12-amd64-linux.head": NETBOOT / "amd64/text/debian-installer/amd64/linux",
    "debian12-arm64-linux.head": NETBOOT / "arm64/text/debian-installer/arm64/linux",
    "debian12-amd64-bootnetx64.efi.head": NETBOOT
    / "amd64/text/debian-installer/amd64/bootnetx64.efi",
    "qemu-opensbi-riscv64.elf.head": Path("/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.elf"),
    "qemu-s390-ccw.img.head": Path("/usr/share/qemu/s390-ccw.img"),
}
BANNER = b"Linux version %s (synthetic@treeboot) (gcc 12.2.0) #1 SMP Debian 6.1.0-1 (2023-01-01)\n"


def bzimage_cut(data: bytes) -> int:
    """Setup + payload_offset + 64: everything the x86 parser reads (boot.rst offsets)."""
    setup = ((data[0x1F1] or 4) + 1) * 512
    payload_offset: int = struct.unpack_from("<I", data, 0x248)[0]
    return setup + payload_offset + 64


def pe_header(machine: int, raw_size: int, lfanew: int = 0x40, entry: int = 0x1000) -> bytes:
    """ "PE\\0\\0", COFF header and PE32+ optional header (EFI application), one .text section."""
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", machine, 1, 0, 0, 0, 0xF0, 0x0206)
    opt = bytearray(0xF0)
    struct.pack_into("<H", opt, 0, 0x20B)
    struct.pack_into("<I", opt, 16, entry)
    struct.pack_into("<I", opt, 56, raw_size)  # SizeOfImage
    struct.pack_into("<H", opt, 68, 10)  # EFI application
    text = struct.pack("<8sIIII16x", b".text", raw_size, 0x1000, raw_size - 0x1000, 0x1000)
    return coff + bytes(opt) + text


def riscv64_image() -> bytes:
    size = 0x2000
    head = bytearray(size)
    struct.pack_into("<4sI", head, 0, b"MZ\x13\x00", 0x0000006F)  # c.li s4,-13 ("MZ"); j
    struct.pack_into("<QQQII", head, 8, 0x200000, 0x1400000, 0, 0x00000002, 0)  # v0.2
    struct.pack_into("<Q8s4sI", head, 40, 0, b"RISCV\0\0\0", b"RSC\x05", 0x40)
    pe = pe_header(0x5064, size)
    head[0x40 : 0x40 + len(pe)] = pe
    banner = BANNER % b"6.1.0-13-riscv64"
    head[0x1100 : 0x1100 + len(banner)] = banner
    return bytes(head)


def arm64_image_payload() -> bytes:
    """An uncompressed arm64 Image as zboot or Image.gz hold it: header, then the banner."""
    body = bytearray(0x3000)
    struct.pack_into("<II", body, 0, 0x91005A4D, 0x14000000)  # "MZ" + add; b stext
    struct.pack_into("<QQQ", body, 8, 0, 0x2010000, 0b1010)  # LE, 4K pages, anywhere
    struct.pack_into("<4sI", body, 56, b"ARM\x64", 0x40)
    banner = BANNER % b"6.1.0-13-arm64"
    body[0x2000 : 0x2000 + len(banner)] = banner
    return bytes(body)


def arm64_zboot() -> bytes:
    payload = gzip.compress(arm64_image_payload(), mtime=0)
    offset = 0x1000
    total = offset + len(payload) + (-len(payload) % 512)
    out = bytearray(total)
    struct.pack_into("<4s4sII8x", out, 0, b"MZ\0\0", b"zimg", offset, len(payload))
    out[24:29] = b"gzip\0"
    struct.pack_into("<II", out, 0x38, 0x818223CD, 0x40)  # LINUX_PE_MAGIC, PE offset
    pe = pe_header(0xAA64, total)
    out[0x40 : 0x40 + len(pe)] = pe
    out[offset : offset + len(payload)] = payload
    return bytes(out)


def ppc64le_vmlinux() -> bytes:
    body = bytearray(0x800)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    # e_type EXEC, e_machine EM_PPC64 (21), entry at the kernel's linear-map base
    struct.pack_into("<16sHHIQQQIHHHHHH", body, 0, ident, 2, 21, 1, 0xC000000000000000,
                     64, 0, 0, 64, 56, 1, 64, 0, 0)  # fmt: skip
    # one PT_LOAD, RWX, of the whole file
    phdr = (1, 7, 0x200, 0xC000000000000000, 0, 0x600, 0x600, 0x10000)
    struct.pack_into("<IIQQQQQQ", body, 64, *phdr)
    banner = BANNER % b"6.1.0-13-powerpc64le"
    body[0x400 : 0x400 + len(banner)] = banner
    return bytes(body)


def build(dest: Path) -> dict[str, dict[str, object]]:
    meta: dict[str, dict[str, object]] = {}
    for name, src in REAL.items():
        if not src.exists():
            print(f"skipping {name}: {src} is not installed", file=sys.stderr)
            continue
        data = src.read_bytes()
        cut = bzimage_cut(data) if name.endswith("amd64-linux.head") else 4096
        if name.startswith(("qemu-", "debian12-amd64-bootnetx64")):
            cut = 1024
        (dest / name).write_bytes(data[:cut])
        digest = hashlib.sha256(data).hexdigest()
        meta[name] = {"source": str(src), "size": len(data), "sha256": digest}
    synthetic = {
        "riscv64-image.bin": riscv64_image(),
        "arm64-zboot.efi": arm64_zboot(),
        "ppc64le-vmlinux": ppc64le_vmlinux(),
        "arm64-Image.gz": gzip.compress(arm64_image_payload(), mtime=0),
    }
    for name, data in synthetic.items():
        (dest / name).write_bytes(data)
        meta[name] = {"source": "synthetic (see make_fixtures.py)", "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    (dest / "fixtures.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
