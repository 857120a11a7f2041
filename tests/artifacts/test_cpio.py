"""newc writer and initrd injection (artifacts.cpio, prepare.inject), checked with GNU cpio and
a real boot."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from _kernel_helpers import need_tool, netboot, run_qemu
from treeboot.artifacts.cpio import (
    CpioEntry,
    InjectFile,
    build_newc,
    cpio_tail,
    injected_offset,
    injection_entries,
    iter_injected_parts,
    normalize_name,
    pad4,
)
from treeboot.artifacts.initrd import scan_initrd
from treeboot.errors import KernelImageError, UsageError
from treeboot.prepare.inject import inject_files


def extract(archive: bytes, dest: Path) -> list[str]:
    """Unpack with GNU cpio (-idmv), return the names it lists."""
    cpio = need_tool("cpio", "cpio")
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([cpio, "-idmv", "--no-absolute-filenames"], cwd=dest, input=archive,
                          capture_output=True, check=True)  # fmt: skip
    lines = proc.stderr.decode().splitlines()
    return [line for line in lines if not re.fullmatch(r"\d+ blocks?", line)]


def test_build_newc_unpacks_with_gnu_cpio(tmp_path: Path) -> None:
    src = tmp_path / "payload.bin"
    src.write_bytes(bytes(range(256)) * 41)  # from a Path, not a multiple of 4
    archive = build_newc(
        [
            CpioEntry.directory("etc"),
            CpioEntry.file("etc/secret", b"pw\n", 0o600),
            CpioEntry.file("payload", src, 0o755, mtime=1_700_000_000),
            CpioEntry.symlink("link", "etc/secret"),
        ]
    )
    assert len(archive) % 4 == 0
    out = tmp_path / "out"
    assert extract(archive, out) == ["etc", "etc/secret", "payload", "link"]
    assert (out / "etc/secret").read_bytes() == b"pw\n"
    assert stat.S_IMODE((out / "etc/secret").stat().st_mode) == 0o600
    assert (out / "payload").read_bytes() == src.read_bytes()
    assert stat.S_IMODE((out / "payload").stat().st_mode) == 0o755
    assert (out / "payload").stat().st_mtime == 1_700_000_000
    assert os.readlink(out / "link") == "etc/secret"


def test_injection_entries_add_parents_once() -> None:
    files = [
        InjectFile(b"a", "etc/x/a.cfg"),
        InjectFile(b"b", "/etc/x/b.cfg"),
        InjectFile(b"c", "c"),
    ]
    names = [(e.name, stat.S_ISDIR(e.mode)) for e in injection_entries(files)]
    assert names == [
        ("etc", True),
        ("etc/x", True),
        ("etc/x/a.cfg", False),
        ("etc/x/b.cfg", False),
        ("c", False),
    ]


def test_inject_file_defaults(tmp_path: Path) -> None:
    path = tmp_path / "preseed.cfg"
    path.write_text("d-i debian-installer/locale string en_US\n")
    f = InjectFile(path)
    assert (f.archive_name, f.mode) == ("preseed.cfg", 0o644)
    assert normalize_name("./a/./b") == "a/b"


@pytest.mark.parametrize(
    "files",
    [
        [InjectFile(b"x", "../etc/passwd")],
        [InjectFile(b"x", "/")],
        [InjectFile(b"x")],  # bytes need a name
        [InjectFile(b"x", "a"), InjectFile(b"y", "/a")],
        [InjectFile(b"x", "a"), InjectFile(b"y", "a/b")],
        [InjectFile(Path("/nonexistent/preseed.cfg"))],
    ],
)
def test_inject_refuses_bad_files(files: list[InjectFile]) -> None:
    with pytest.raises(UsageError):
        cpio_tail(files)


def test_inject_appends_without_touching_the_original(tmp_path: Path) -> None:
    original = gzip.compress(build_newc([CpioEntry.file("init", b"#!/bin/sh\n", 0o755)]))
    original += b"\x00" * (3 - len(original) % 4 or 1)  # make the length odd for the test
    assert len(original) % 4
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(original)
    secret = InjectFile(b"rootpw\n", "etc/treeboot/secret.cfg", 0o600)
    files = [InjectFile(tmp_path.joinpath("ks.cfg")), secret]
    files[0].data.write_text("text\n")  # type: ignore[union-attr]
    out = inject_files(initrd, files, tmp_path / "out" / "initrd.img")
    data = out.read_bytes()
    offset = injected_offset(len(original))
    assert offset % 4 == 0 and offset - len(original) == pad4(len(original))
    assert data[: len(original)] == original
    assert data[len(original) : offset] == bytes(offset - len(original))
    assert data[offset:] == cpio_tail(files) == b"".join(iter_injected_parts(0, files))
    assert b"".join(iter_injected_parts(len(original), files)) == data[len(original) :]
    listed = extract(data[offset:], tmp_path / "x")
    assert listed == ["ks.cfg", "etc", "etc/treeboot", "etc/treeboot/secret.cfg"]
    assert (tmp_path / "x/etc/treeboot/secret.cfg").read_bytes() == b"rootpw\n"
    assert stat.S_IMODE((tmp_path / "x/etc/treeboot/secret.cfg").stat().st_mode) == 0o600
    segs = scan_initrd(out).segments
    assert [(s.compression, s.entries) for s in segs] == [("gzip", 1), ("none", 4)]
    assert initrd.read_bytes() == original
    assert [p.name for p in out.parent.iterdir()] == ["initrd.img"]  # no temp file left


def test_inject_into_real_debian_initrd(tmp_path: Path) -> None:
    initrd = netboot("amd64", "initrd.gz")
    out = inject_files(initrd, [InjectFile(b"d-i x string y\n", "preseed.cfg")], tmp_path / "i")
    size = initrd.stat().st_size
    with open(out, "rb") as f:
        head = f.read(size)
        tail = f.read()
    assert hashlib.sha256(head).digest() == hashlib.sha256(initrd.read_bytes()).digest()
    assert extract(tail[pad4(size) :], tmp_path / "x") == ["preseed.cfg"]
    segs = scan_initrd(out).segments
    assert [s.compression for s in segs] == ["gzip", "none"] and segs[1].offset == size + pad4(size)


def test_inject_refuses_a_kernel(tmp_path: Path) -> None:
    kernel = tmp_path / "linux"
    kernel.write_bytes(b"MZ" + bytes(1000))
    with pytest.raises(KernelImageError, match="not an initrd") as e:
        inject_files(kernel, [InjectFile(b"x", "x")], tmp_path / "out")
    assert e.value.hint and "not the kernel" in e.value.hint
    assert not (tmp_path / "out").exists()


# -- boot ----------------------------------------------------------------------------------

INIT = b"""#!/bin/busybox sh
/bin/busybox echo TREEBOOT-INIT-START
/bin/busybox cat /treeboot-injected.txt /etc/treeboot/nested.cfg
/bin/busybox echo TREEBOOT-INIT-END
/bin/busybox poweroff -f
"""


def tiny_initrd(path: Path) -> Path:
    """A gzip'd initrd: static busybox and an /init that prints the injected files."""
    busybox = Path("/bin/busybox")
    if not busybox.is_file() or not _is_static(busybox):
        pytest.skip("needs a static /bin/busybox: apt-get install busybox-static")
    archive = build_newc(
        [
            CpioEntry.directory("bin"),
            CpioEntry.file("bin/busybox", busybox, 0o755),
            CpioEntry.directory("dev"),
            CpioEntry.char_device("dev/console", 5, 1),
            CpioEntry.directory("proc"),
            CpioEntry.file("init", INIT, 0o755),
        ]
    )
    path.write_bytes(gzip.compress(archive, mtime=0))
    return path


def _is_static(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"ld-linux" not in f.read(4096)  # no program interpreter (PT_INTERP)


@pytest.mark.qemu
def test_injected_files_reach_the_booted_system(tmp_path: Path) -> None:
    kernel = netboot("amd64", "linux")
    need_tool("qemu-system-x86_64", "qemu-system-x86")
    token = os.urandom(6).hex()
    files = [
        InjectFile(f"injected-{token}\n".encode(), "treeboot-injected.txt", 0o600),
        InjectFile(b"nested-ok\n", "etc/treeboot/nested.cfg"),
    ]
    initrd = inject_files(tiny_initrd(tmp_path / "tiny.gz"), files, tmp_path / "initrd.img")
    log = tmp_path / "serial.log"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nic", "none",
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{log}", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 rdinit=/init panic=-1"]  # fmt: skip
    text, status = run_qemu(argv, log, lambda t: "TREEBOOT-INIT-END" in t, wait_exit=True)
    start = text.find("TREEBOOT-INIT-START")
    assert start >= 0, text[-3000:]
    assert f"injected-{token}" in text[start:] and "nested-ok" in text[start:]
    assert status == 0  # poweroff -f: the guest powered the machine off


@pytest.mark.qemu
def test_kernel_rejects_an_unpadded_append_as_scan_initrd_says(tmp_path: Path) -> None:
    """Why inject_files pads: a cpio appended off a 4-byte boundary is not unpacked."""
    kernel = netboot("amd64", "linux")
    need_tool("qemu-system-x86_64", "qemu-system-x86")
    gz = tiny_initrd(tmp_path / "tiny.gz").read_bytes()
    tail = cpio_tail([InjectFile(b"should-not-appear\n", "treeboot-injected.txt")])
    initrd = tmp_path / "bad.img"
    initrd.write_bytes(gz + bytes(1 if len(gz) % 4 == 0 else 0) + tail)
    with pytest.raises(KernelImageError, match="4-byte boundary"):
        scan_initrd(initrd)
    log = tmp_path / "serial.log"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nic", "none",
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{log}", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 rdinit=/init panic=-1"]  # fmt: skip
    text, _ = run_qemu(argv, log, lambda t: "TREEBOOT-INIT-END" in t, wait_exit=True)
    assert "Initramfs unpacking failed: invalid magic at start of compressed archive" in text
    assert "TREEBOOT-INIT-START" in text and "should-not-appear" not in text
