"""Initrd segments, compression and cpio entry counts (treeboot.artifacts.initrd)."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import itertools
import json
import lzma
import os
import struct
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import lz4.block
import lz4.frame
import pytest
import pyzstd
from hypothesis import given, settings
from hypothesis import strategies as st

from _kernel_helpers import need_tool, netboot
from treeboot.artifacts.cpio import CpioEntry, build_newc, pad4
from treeboot.artifacts.initrd import (
    Compression,
    InitrdInfo,
    NewcScanner,
    detect_compression,
    scan_initrd,
    scan_initrd_file,
)
from treeboot.cli.main import main
from treeboot.errors import KernelImageError

ELF_X86_64 = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 2, 62) + bytes(44)
ENTRIES = [
    CpioEntry.directory("bin"),
    CpioEntry.file("bin/busybox", ELF_X86_64 + bytes(100), 0o755),
    CpioEntry.symlink("bin/sh", "busybox"),
    CpioEntry.directory("lib"),
    CpioEntry.directory("lib/modules"),
    CpioEntry.directory("lib/modules/6.1.0-99-amd64"),
    CpioEntry.file("etc-hostname", b"installer\n"),
]
ARCHIVE = build_newc(ENTRIES)
MICROCODE = build_newc(
    [
        CpioEntry.directory("kernel"),
        CpioEntry.directory("kernel/x86"),
        CpioEntry.directory("kernel/x86/microcode"),
        CpioEntry.file("kernel/x86/microcode/GenuineIntel.bin", b"\x01" * 1000),
    ]
)


def lz4_legacy(data: bytes) -> bytes:
    """lz4 -l: magic, then (u32 size, block) per 8 MiB of input."""
    out = bytearray(b"\x02\x21\x4c\x18")
    for i in range(0, len(data), 8 << 20):
        block = lz4.block.compress(data[i : i + (8 << 20)], store_size=False)
        out += struct.pack("<I", len(block)) + block
    return bytes(out)


COMPRESS = {
    Compression.GZIP: lambda d: gzip.compress(d, mtime=0),
    Compression.XZ: lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
    Compression.LZMA: lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    Compression.BZIP2: bz2.compress,
    Compression.ZSTD: pyzstd.compress,
    Compression.LZ4: lz4_legacy,
    Compression.LZ4_FRAME: lz4.frame.compress,
}


def scan_bytes(data: bytes, limit: int = 1 << 30) -> InitrdInfo:
    return scan_initrd_file(io.BytesIO(data), len(data), name="initrd", max_decompressed=limit)


def write(tmp_path: Path, data: bytes, name: str = "initrd.img") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_single_compressed_segment(tmp_path: Path, kind: Compression) -> None:
    data = COMPRESS[kind](ARCHIVE)
    assert detect_compression(data) is kind
    info = scan_initrd(write(tmp_path, data))
    (seg,) = info.segments
    assert (seg.offset, seg.length, seg.compression) == (0, len(data), kind)
    assert (seg.entries, seg.archives, seg.decompressed_size) == (len(ENTRIES), 1, len(ARCHIVE))
    assert (info.arch, info.kernel_version, info.complete) == ("x86_64", "6.1.0-99-amd64", True)


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_segment_end_found_for_every_compression(kind: Compression) -> None:
    data = COMPRESS[kind](ARCHIVE)
    data += bytes(pad4(len(data)) + 8) + MICROCODE + bytes(3) + COMPRESS[kind](MICROCODE)
    info = scan_bytes(data + bytes(100))
    assert [(s.compression, s.entries) for s in info.segments] == [
        (kind, len(ENTRIES)),
        ("none", 4),
        (kind, 4),
    ]


def test_uncompressed_initrd(tmp_path: Path) -> None:
    info = scan_initrd(write(tmp_path, ARCHIVE + bytes(512)))  # cpio pads to 512-byte blocks
    (seg,) = info.segments
    assert (seg.compression, seg.entries, seg.length) == ("none", len(ENTRIES), len(ARCHIVE))


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD, Compression.XZ])
def test_early_microcode_then_compressed(tmp_path: Path, kind: Compression) -> None:
    main_part = COMPRESS[kind](ARCHIVE)
    data = MICROCODE + bytes(512 - len(MICROCODE) % 512) + main_part
    info = scan_initrd(write(tmp_path, data))
    first, second = info.segments
    assert (first.compression, first.entries, first.early_microcode) == ("none", 4, True)
    assert first.length == len(MICROCODE)
    assert (second.offset, second.compression) == (data.index(main_part), kind)
    assert (second.entries, second.early_microcode) == (len(ENTRIES), False)
    d = info.to_json()
    assert d["format"] == "initrd" and [s["entries"] for s in d["segments"]] == [4, len(ENTRIES)]
    json.dumps(d)


def test_gzip_members_are_segments_and_archives_are_counted() -> None:
    two_archives = gzip.compress(ARCHIVE + bytes(8) + MICROCODE, mtime=0)
    member = gzip.compress(MICROCODE, mtime=0)
    info = scan_bytes(two_archives + member)
    first, second = info.segments
    assert (first.archives, first.entries) == (2, len(ENTRIES) + 4)
    assert (second.offset, second.entries) == (len(two_archives), 4)


def test_lzo_is_recognised_but_not_counted() -> None:
    info = scan_bytes(MICROCODE + b"\x89LZO\x00\x0d\x0a\x1a\x0a" + bytes(100))
    _, second = info.segments
    assert (second.compression, second.entries, second.length) == ("lzo", None, None)
    assert "lzo" in (second.note or "") and not info.complete


def test_budget_stops_decompression() -> None:
    info = scan_bytes(gzip.compress(ARCHIVE + build_newc([CpioEntry.file("x", bytes(1 << 20))])),
                      limit=4096)  # fmt: skip
    (seg,) = info.segments
    assert seg.entries is None and seg.length is None and "4096" in (seg.note or "")
    assert not info.complete


def test_memory_stays_bounded(tmp_path: Path) -> None:
    """64 MiB of file data inside gzip: scanned with a few MiB of memory."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = build_newc([CpioEntry.file("big", b"")])[:110]
    head = head[:54] + b"%08X" % (64 << 20) + head[62:] + b"big\0"
    parts = [comp.compress(head + bytes(pad4(len(head))))]
    zeros = bytes(1 << 20)
    parts += [comp.compress(zeros) for _ in range(64)]
    parts += [comp.compress(build_newc([])), comp.flush()]
    path = write(tmp_path, b"".join(parts))
    tracemalloc.start()
    try:
        info = scan_initrd(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.segments[0].entries == 1
    assert info.segments[0].decompressed_size and info.segments[0].decompressed_size > 64 << 20
    assert peak < 16 << 20


# -- what the real tools make --------------------------------------------------------------


def test_entry_count_matches_gnu_cpio(tmp_path: Path) -> None:
    cpio = need_tool("cpio", "cpio")
    tree = tmp_path / "tree"
    for d in ("usr/bin", "etc/ssh", "lib/modules/6.1.0-5-arm64/kernel"):
        (tree / d).mkdir(parents=True)
    (tree / "etc/ssh/sshd_config").write_text("Port 22\n")
    (tree / "init").write_text("#!/bin/sh\n")
    os.symlink("../init", tree / "usr/bin/init")
    names = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    archive = subprocess.run([cpio, "-o", "-H", "newc", "--quiet"], cwd=tree, input=names,
                             capture_output=True, check=True).stdout  # fmt: skip
    info = scan_bytes(gzip.compress(archive))
    assert info.segments[0].entries == len(names.splitlines())
    assert info.kernel_version == "6.1.0-5-arm64"


@pytest.mark.slow
def test_real_debian_initrd() -> None:
    path = netboot("amd64", "initrd.gz")
    cpio = need_tool("cpio", "cpio")
    info = scan_initrd(path)
    (seg,) = info.segments
    listing = subprocess.run(["sh", "-c", 'gzip -dc "$1" | "$2" -it --quiet', "-", path, cpio],
                             capture_output=True, check=True).stdout  # fmt: skip
    assert seg.entries == len(listing.splitlines())
    assert (seg.compression, seg.length, info.arch) == ("gzip", path.stat().st_size, "x86_64")
    assert info.kernel_version and info.kernel_version.endswith("-amd64")


def test_cli_inspect_initrd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, MICROCODE + COMPRESS[Compression.ZSTD](ARCHIVE))
    assert main(["inspect", "--json", str(path)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [(s["compression"], s["entries"]) for s in d["segments"]] == [("none", 4), ("zstd", 7)]
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"segment 2: offset {len(MICROCODE)}," in out and "(early microcode)" in out


# -- damaged and foreign -------------------------------------------------------------------

_GZ = gzip.compress(ARCHIVE, mtime=0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello world, not an initrd", "is not an initrd"),
        (bytes(100), "all NUL"),
        (_GZ[:-100], "truncated"),
        (_GZ[:200] + bytes([_GZ[200] ^ 0xFF]) + _GZ[201:], "corrupt"),
        (gzip.compress(ARCHIVE[:-124]), "TRAILER"),  # the trailer cut off
        (ARCHIVE[:300], "truncated inside an entry"),
        (b"070707" + bytes(200), "odc"),
        (ARCHIVE[:20] + b"zz" + ARCHIVE[22:], "non-hexadecimal"),
        (ARCHIVE.replace(b"070701", b"0707zz"), "no newc cpio magic"),
        (_GZ + b"xyz", "unrecognised data"),
    ],
)
def test_damaged_initrds(data: bytes, message: str) -> None:
    with pytest.raises(KernelImageError, match=message):
        scan_bytes(data)


def test_cpio_after_compressed_segment_must_be_aligned() -> None:
    # NULs between segments are skipped but count for the alignment (init/initramfs.c)
    aligned = _GZ + bytes(pad4(len(_GZ))) + MICROCODE
    assert [s.compression for s in scan_bytes(aligned).segments] == ["gzip", "none"]
    misaligned = _GZ + bytes(1 if len(_GZ) % 4 == 0 else 0) + MICROCODE
    with pytest.raises(KernelImageError, match="4-byte boundary") as e:
        scan_bytes(misaligned)
    assert e.value.hint and "NUL" in e.value.hint


# -- fuzz ----------------------------------------------------------------------------------

_SEEDS = [ARCHIVE, MICROCODE + _GZ, COMPRESS[Compression.ZSTD](ARCHIVE), lz4_legacy(ARCHIVE)]
_SEEDS += [COMPRESS[Compression.XZ](ARCHIVE)]


@settings(max_examples=200, deadline=None)
@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 1500),
)
def test_fuzz_mutated_initrds(seed: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    with contextlib.suppress(KernelImageError):
        scan_bytes(bytes(data[: cut or None]), limit=1 << 20)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1024))
def test_fuzz_random_initrds(data: bytes) -> None:
    with contextlib.suppress(KernelImageError):
        scan_bytes(b"070701" + data, limit=1 << 20)
    with contextlib.suppress(KernelImageError):
        scan_bytes(data, limit=1 << 20)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, len(ARCHIVE)), max_size=12))
def test_scanner_is_independent_of_chunking(cuts: list[int]) -> None:
    stream = ARCHIVE + bytes(16) + MICROCODE
    scanner = NewcScanner(stop_at_trailer=False, where="test")
    bounds = [0, *sorted(cuts), len(stream)]
    for a, b in itertools.pairwise(bounds):
        scanner.feed(stream[a:b])
    scanner.finish(need_trailer=True)
    assert (scanner.entries, scanner.archives, scanner.microcode) == (len(ENTRIES) + 4, 2, True)
    assert scanner.module_versions == ["6.1.0-99-amd64"]
