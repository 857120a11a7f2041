"""Derived boot forms: vmlinux (PVH) from a bzImage, a raw initrd, an inflated Image."""

from __future__ import annotations

import gzip
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from _kernel_helpers import need_tool, netboot
from treeboot.artifacts._binfmt import pvh_entry
from treeboot.artifacts.cpio import CpioEntry, build_newc
from treeboot.artifacts.derive import extract_vmlinux, inflate_image, inflate_initrd
from treeboot.artifacts.initrd import Compression, scan_initrd
from treeboot.artifacts.kernel import read_kernel
from treeboot.errors import KernelImageError


def _derive(fn: object, src: Path, dest: Path, **kw: object) -> object:
    with open(dest, "w+b") as out:
        return fn(src, out, **kw)  # type: ignore[operator]


def test_debian_kernel_yields_an_elf_vmlinux_with_its_pvh_entry(tmp_path: Path) -> None:
    kernel = netboot("amd64", "linux")
    out = tmp_path / "vmlinux"
    derived = _derive(extract_vmlinux, kernel, out)
    assert out.read_bytes()[:4] == b"\x7fELF"
    assert derived.size == out.stat().st_size  # type: ignore[attr-defined]
    assert read_kernel(out).format == "elf"
    # readelf (binutils) reads the same note: the PVH entry QEMU's pvh.bin jumps to
    readelf = shutil.which("readelf")
    if readelf:
        notes = subprocess.run([readelf, "-n", str(out)], capture_output=True, text=True).stdout
        assert "Xen" in notes
    with open(out, "rb") as f:
        assert pvh_entry(f, out.stat().st_size) == derived.pvh_entry  # type: ignore[attr-defined]
    assert derived.pvh_entry and 0x1000000 <= derived.pvh_entry < 0x4000000  # type: ignore[attr-defined]


def _bzimage_with_payload(kernel: Path, payload: bytes, dest: Path) -> Path:
    """The real bzImage with another (xz) payload written over its own, header patched."""
    x86 = read_kernel(kernel).x86
    assert x86 is not None and x86.payload_offset and x86.payload_length
    start = x86.setup_size + x86.payload_offset
    xz = lzma.compress(payload, lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    assert len(xz) < x86.payload_length
    data = bytearray(kernel.read_bytes())
    data[start : start + x86.payload_length] = xz.ljust(x86.payload_length, b"\0")
    struct.pack_into("<I", data, 0x24C, len(xz))
    dest.write_bytes(bytes(data))
    return dest


def test_kernel_without_pvh_note_is_refused(tmp_path: Path) -> None:
    # An ELF that is not a PVH kernel (/bin/true) as the bzImage payload.
    elf = Path("/bin/true").read_bytes()
    fake = _bzimage_with_payload(netboot("amd64", "linux"), elf, tmp_path / "bzImage")
    with pytest.raises(KernelImageError, match="no PVH entry note"):
        _derive(extract_vmlinux, fake, tmp_path / "out")


def test_vmlinux_size_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(KernelImageError, match="inflates past"):
        _derive(extract_vmlinux, netboot("amd64", "linux"), tmp_path / "out", limit=1 << 20)


def _archive(n: int, tag: str) -> bytes:
    return build_newc(CpioEntry.file(f"{tag}/f{i}", f"{tag}{i}".encode() * 50) for i in range(n))


def test_initrd_segments_are_inflated_into_raw_newc(tmp_path: Path) -> None:
    micro = _archive(3, "kernel/x86/microcode")
    main = gzip.compress(_archive(40, "gz"))
    tail = lzma.compress(_archive(7, "xz") + _archive(2, "xz2"), lzma.FORMAT_XZ)
    src = tmp_path / "initrd.img"
    src.write_bytes(micro + main + b"\0" * 3 + tail)
    out = tmp_path / "raw"
    derived = _derive(inflate_initrd, src, out)
    assert derived.detail == "segments: none, gzip, xz"  # type: ignore[attr-defined]
    info = scan_initrd(out)
    assert {s.compression for s in info.segments} == {Compression.NONE}
    assert sum(s.entries or 0 for s in info.segments) == 3 + 40 + 7 + 2
    assert all(s.offset % 4 == 0 for s in info.segments)
    # cpio(1) reads the whole result as archives too
    cpio = need_tool("cpio", "cpio")
    listed = subprocess.run([cpio, "-t", "--quiet"], input=out.read_bytes(),
                            capture_output=True, check=True).stdout.decode()  # fmt: skip
    assert "kernel/x86/microcode/f0" in listed


def test_debian_initrd_inflates_to_the_same_entries(tmp_path: Path) -> None:
    src = netboot("amd64", "initrd.gz")
    out = tmp_path / "raw"
    _derive(inflate_initrd, src, out)
    before, after = scan_initrd(src), scan_initrd(out)
    assert [s.entries for s in before.segments] == [s.entries for s in after.segments]
    assert after.segments[0].compression is Compression.NONE
    assert out.stat().st_size == before.segments[0].decompressed_size


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:100] + bytes(b ^ 0x55 for b in d[100:200]) + d[200:], "corrupt|truncated"),
        (lambda d: gzip.compress(b"not a cpio archive at all" * 10), "cpio"),
    ],
)
def test_initrd_that_does_not_inflate_cleanly_is_refused(
    tmp_path: Path, damage: object, match: str
) -> None:
    src = tmp_path / "initrd.gz"
    src.write_bytes(damage(gzip.compress(_archive(30, "x"))))  # type: ignore[operator]
    with pytest.raises(KernelImageError, match=match):
        _derive(inflate_initrd, src, tmp_path / "out")


def test_initrd_inflation_is_bounded(tmp_path: Path) -> None:
    src = tmp_path / "initrd.gz"
    src.write_bytes(gzip.compress(_archive(200, "big")))
    with pytest.raises(KernelImageError, match="inflates past"):
        _derive(inflate_initrd, src, tmp_path / "out", limit=4096)
    with pytest.raises(KernelImageError, match="longer than"):
        _derive(inflate_initrd, src, tmp_path / "out", seconds=-1)


def test_image_gz_is_inflated_and_a_plain_image_refused(tmp_path: Path) -> None:
    image = netboot("arm64", "linux")  # Debian ships arm64's Image uncompressed
    head = image.read_bytes()[: 1 << 20]
    gz = tmp_path / "Image.gz"
    gz.write_bytes(gzip.compress(head))
    out = tmp_path / "Image"
    assert _derive(inflate_image, gz, out).size == len(head)  # type: ignore[attr-defined]
    assert out.read_bytes() == head
    with pytest.raises(KernelImageError, match="not a compressed Image"):
        _derive(inflate_image, image, tmp_path / "again")
