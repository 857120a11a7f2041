"""Kernel image headers (treeboot.artifacts.kernel) and QEMU's x86 loader prediction."""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _kernel_helpers import DATA, fixture, fixture_meta, full_size_copy, netboot, run_qemu
from treeboot.artifacts.cpio import CpioEntry, build_newc
from treeboot.artifacts.fwcfg import below_4g_mem_size, predict_fw_cfg
from treeboot.artifacts.initrd import InitrdInfo
from treeboot.artifacts.kernel import (
    ImageFormat,
    KernelImage,
    inspect_file,
    parse_kernel,
    read_kernel,
    read_kernel_header,
)
from treeboot.cli.main import main
from treeboot.errors import BootError, KernelImageError

AMD64 = "debian12-amd64-linux.head"
ARM64 = "debian12-arm64-linux.head"
AMD64_SIZE = 8222656


def load(name: str) -> KernelImage:
    data, size = fixture(name)
    return parse_kernel(data, size=size, name=name)


# -- x86 bzImage ---------------------------------------------------------------------------


def test_bzimage_header_fields() -> None:
    k = load(AMD64)
    assert k.format is ImageFormat.X86_BZIMAGE
    assert k.arch == "x86_64"
    assert k.kernel_version == "6.1.0-50-amd64"
    assert k.kernel_banner is not None and k.kernel_banner.startswith("6.1.0-50-amd64 (debian")
    assert k.compression == "xz"  # payload magic FD 37 7A 58 5A 00
    x = k.x86
    assert x is not None
    assert x.boot_protocol == "2.15" and x.protocol == 0x20F
    assert x.setup_sects == 39
    assert x.setup_size == (39 + 1) * 512
    assert x.protected_mode_size == AMD64_SIZE - x.setup_size
    assert x.loadflags_names == ("LOADED_HIGH",)
    assert x.relocatable and x.kernel_alignment == 0x200000
    assert {"XLF_KERNEL_64", "XLF_CAN_BE_LOADED_ABOVE_4G", "XLF_EFI_HANDOVER_64"} <= set(
        x.xloadflags_names
    )
    assert x.cmdline_size == 2047
    assert x.initrd_addr_max == 0x7FFFFFFF
    assert x.pref_address == 0x1000000
    assert x.init_size == 0x3F97000
    assert (x.payload_offset, x.payload_length) == (0x2CC, 0x7B94B4)
    assert k.pe is not None and k.pe.machine == "x86_64"
    assert [s.name for s in k.pe.sections] == [".setup", ".compat", ".text", ".data"]


def test_bzimage_json_contract() -> None:
    d = load(AMD64).to_json()
    assert d["format"] == "x86-bzimage"
    for key in ("arch", "kernel_version", "boot_protocol", "setup_size", "protected_mode_size"):
        assert d[key] is not None, key
    assert d["setup_size"] + d["protected_mode_size"] == d["size"] == AMD64_SIZE
    json.dumps(d)


def test_setup_sects_zero_means_four() -> None:
    data, size = fixture(AMD64)
    patched = bytearray(data)
    patched[0x1F1] = 0
    k = parse_kernel(bytes(patched), size=size)
    assert k.x86 is not None and k.x86.setup_size == 5 * 512
    assert k.x86.protected_mode_size == size - 2560


def test_old_protocol_fields_absent() -> None:
    data, size = fixture(AMD64)
    patched = bytearray(data)
    struct.pack_into("<H", patched, 0x206, 0x0202)
    x = parse_kernel(bytes(patched), size=size).x86
    assert x is not None and x.boot_protocol == "2.02"
    assert x.initrd_addr_max == 0x37FFFFFF  # boot.rst: before 2.03
    assert x.cmdline_size == 255  # before 2.06
    assert x.xloadflags == 0 and x.payload_offset is None and x.init_size is None
    assert x.syssize is None


@pytest.mark.parametrize(
    ("cut", "declared", "message"),
    [
        (0x210, None, "setup header"),
        (20480, None, "syssize"),  # setup only
        (None, AMD64_SIZE - 4096, "syssize"),
        (21000, AMD64_SIZE, "payload magic"),  # header promises bytes the file lacks
    ],
)
def test_truncated_bzimage(cut: int | None, declared: int | None, message: str) -> None:
    data, _ = fixture(AMD64)
    data = data[:cut] if cut else data
    with pytest.raises(KernelImageError, match="truncated") as e:
        parse_kernel(data, size=declared or len(data), name="linux")
    assert message in e.value.message
    assert e.value.hint


def test_real_kernel_matches_fixture() -> None:
    real = read_kernel(netboot("amd64", "linux"))
    if real.size != AMD64_SIZE:
        pytest.skip("the installed netboot package is not the one the fixture was cut from")
    assert real.to_json() | {"path": None} == load(AMD64).to_json() | {"path": None}


def test_read_kernel_header_is_the_x86_setup() -> None:
    path = netboot("amd64", "linux")
    assert read_kernel_header(path).cmdline_size == 2047


# -- arm64 / RISC-V Image, zboot, ELF, PE --------------------------------------------------


def test_arm64_image_fixture() -> None:
    k = load(ARM64)
    assert (k.format, k.arch) == (ImageFormat.ARM64_IMAGE, "aarch64")
    assert k.image is not None
    assert k.image.text_offset == 0 and k.image.image_size == 0x2010000
    assert (k.image.endianness, k.image.page_size) == ("little", 4096)
    assert k.image.physical_placement == "anywhere" and k.image.efi_stub
    assert k.pe is not None and k.pe.machine == "aarch64" and k.pe.subsystem == "efi-application"
    assert k.kernel_version is None  # the banner is past the committed headers


def test_real_arm64_kernel_has_banner() -> None:
    k = read_kernel(netboot("arm64", "linux"))
    assert k.format is ImageFormat.ARM64_IMAGE  # Debian 12 ships a plain Image, not zboot
    assert k.kernel_version is not None and k.kernel_version.endswith("-arm64")
    assert k.compression is None


def test_riscv64_image() -> None:
    k = load("riscv64-image.bin")
    assert (k.format, k.arch, k.kernel_version) == ("riscv64-image", "riscv64", "6.1.0-13-riscv64")
    assert k.image is not None and k.image.header_version == "0.2"
    assert k.image.text_offset == 0x200000 and k.image.page_size is None
    assert k.pe is not None and k.pe.machine_code == 0x5064


def test_efi_zboot() -> None:
    k = load("arm64-zboot.efi")
    assert (k.format, k.arch, k.compression) == ("efi-zboot", "aarch64", "gzip")
    assert k.zboot is not None and k.zboot.payload_offset == 0x1000
    assert k.image is not None and k.image.page_size == 4096  # the Image inside
    assert k.kernel_version == "6.1.0-13-arm64"
    d = k.to_json()
    assert d["zboot"]["compression"] == "gzip" and d["pe"]["machine"] == "aarch64"


def test_gzipped_arm64_image() -> None:
    k = load("arm64-Image.gz")
    assert (k.format, k.arch, k.compression) == ("arm64-image", "aarch64", "gzip")
    assert k.kernel_version == "6.1.0-13-arm64"


def test_elf_kernels() -> None:
    ppc = load("ppc64le-vmlinux")
    assert (ppc.format, ppc.arch, ppc.kernel_version) == ("elf", "ppc64le", "6.1.0-13-powerpc64le")
    assert ppc.elf is not None and ppc.elf.entry == 0xC000000000000000
    assert (ppc.elf.elf_class, ppc.elf.endianness, ppc.elf.type) == (64, "little", "executable")
    rv = load("qemu-opensbi-riscv64.elf.head")
    assert rv.elf is not None and (rv.arch, rv.elf.endianness) == ("riscv64", "little")
    s390 = load("qemu-s390-ccw.img.head")
    assert s390.elf is not None and (s390.arch, s390.elf.endianness) == ("s390x", "big")


def test_pe_efi_application() -> None:
    k = load("debian12-amd64-bootnetx64.efi.head")
    assert (k.format, k.arch, k.kernel_version) == ("pe-efi", "x86_64", None)
    assert k.pe is not None and len(k.pe.sections) == 10 and k.pe.pe32plus


# -- foreign and damaged files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"root:x:0:0:root:/root:/bin/bash\n" * 40, "HdrS"),
        (b"MZ" + bytes(58) + struct.pack("<I", 0x80) + bytes(200), "PE\\\\0\\\\0"),
        (bytes(0x1FE) + b"\x55\xaa" + bytes(600), "boot protocol < 2.00"),
        (b"\x7fELF\x03\x01" + bytes(58), "invalid class"),
        (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 2, 62), "truncated"),
    ],
)
def test_foreign_files(data: bytes, message: str) -> None:
    with pytest.raises(KernelImageError, match=message):
        parse_kernel(data, name="thing")


def test_truncated_pe_and_zboot() -> None:
    data, size = fixture("arm64-zboot.efi")
    with pytest.raises(KernelImageError, match="zboot payload ends"):
        parse_kernel(data[:0x1020])
    data, size = fixture(ARM64)
    with pytest.raises(KernelImageError, match="PE sections end"):
        parse_kernel(data, size=size // 2)


def test_gzip_of_something_else_is_not_a_kernel() -> None:
    with pytest.raises(KernelImageError, match="does not hold an arm64 or RISC-V Image"):
        parse_kernel(gzip.compress(b"hello" * 100))


# -- inspect -------------------------------------------------------------------------------


def test_inspect_tells_kernels_from_initrds(tmp_path: Path) -> None:
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(gzip.compress(build_newc([CpioEntry.directory("etc")])))
    assert isinstance(inspect_file(initrd), InitrdInfo)
    assert isinstance(inspect_file(DATA / "arm64-Image.gz"), KernelImage)


def test_cli_inspect_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = full_size_copy(AMD64, tmp_path / "linux")
    assert main(["inspect", "--json", str(path)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["format"], d["boot_protocol"], d["setup_size"]) == ("x86-bzimage", "2.15", 20480)
    assert main(["inspect", str(path)]) == 0
    assert "boot protocol    2.15" in capsys.readouterr().out


def test_cli_inspect_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"just text\n")
    assert main(["inspect", str(junk)]) == 3
    assert "expected an x86 bzImage" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing")]) == 4


# -- fuzz ----------------------------------------------------------------------------------

_SEEDS = [fixture(n)[0][:4096] for n in (AMD64, ARM64, "riscv64-image.bin", "ppc64le-vmlinux")]
_SEEDS += [fixture("arm64-zboot.efi")[0]]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 4200), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 5000),
)
def test_fuzz_mutated_headers(seed: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    with contextlib.suppress(KernelImageError):
        parse_kernel(bytes(data[: cut or None]))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(KernelImageError):
        parse_kernel(data)


# -- fixtures stay reproducible ------------------------------------------------------------


def test_fixture_script_reproduces_fixtures(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(DATA / "make_fixtures.py"), str(tmp_path)], check=True,
                   capture_output=True)  # fmt: skip
    made = json.loads((tmp_path / "fixtures.json").read_text())
    for name, meta in fixture_meta().items():
        if made.get(name, {}).get("sha256") != meta["sha256"]:
            continue  # source not installed or a different package version
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


# -- QEMU's x86 loader ---------------------------------------------------------------------

DEBIAN_INITRD_SIZE = 40810276  # initrd.gz of the same netboot package


@pytest.fixture()
def kernel_file(tmp_path: Path) -> Path:
    return full_size_copy(AMD64, tmp_path / "linux")


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# initrd addresses QEMU 7.2 chose in its fw_cfg trace for the Debian 12 kernel + initrd.gz
@pytest.mark.parametrize(
    ("machine", "mib", "initrd_addr"),
    [
        ("pc", 128, 0x058EC000),
        ("pc", 3000, 0xB90EC000),
        ("pc", 3584, 0xBD8EC000),
        ("pc", 4096, 0xBD8EC000),
        ("q35", 128, 0x058EC000),
        ("q35", 2000, 0x7A8EC000),
        ("q35", 2816, 0x7D8EC000),
        ("q35", 4096, 0x7D8EC000),
    ],
)
def test_predict_fw_cfg_matches_observed_traces(
    kernel_file: Path, tmp_path: Path, machine: str, mib: int, initrd_addr: int
) -> None:
    initrd = sparse_file(tmp_path / "initrd.gz", DEBIAN_INITRD_SIZE)
    p = predict_fw_cfg(kernel_file, initrd, "console=ttyS0", mib, machine=machine)
    assert p["initrd_addr"] == initrd_addr
    assert (p["setup_addr"], p["setup_size"]) == (0x10000, 0x5000)
    assert (p["kernel_addr"], p["kernel_size"]) == (0x100000, 0x7D27C0)
    assert (p["cmdline_addr"], p["cmdline_size"]) == (0x20000, 14)
    assert p["initrd_size"] == DEBIAN_INITRD_SIZE


def test_predict_fw_cfg_rules(kernel_file: Path, tmp_path: Path) -> None:
    assert below_4g_mem_size(8192, "pc") == 0xC0000000
    assert below_4g_mem_size(8192, "pc-q35-7.2") == 0x80000000
    no_initrd = predict_fw_cfg(kernel_file, None, "", 128)
    assert no_initrd["initrd_addr"] is None and no_initrd["cmdline_size"] == 1
    with pytest.raises(BootError, match="initrd is too large") as e:
        predict_fw_cfg(kernel_file, sparse_file(tmp_path / "big", 200 << 20), "", 128)
    assert e.value.hint and "--memory" in e.value.hint
    long = predict_fw_cfg(kernel_file, None, "x" * 3000, 128)
    assert long["warnings"] and "2047" in long["warnings"][0]
    with pytest.raises(KernelImageError, match="neither an x86 bzImage nor an ELF vmlinux"):
        predict_fw_cfg(DATA / "riscv64-image.bin", None, "", 128)


def _elf64(path: Path, loads: list[tuple[int, int, int]], entry: int | None) -> Path:
    """A minimal x86_64 ELF: PT_LOAD (paddr, filesz, memsz) segments, and a PT_NOTE with the
    Xen PVH entry note when ``entry`` is given."""
    note = b""
    if entry is not None:
        note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", entry)
    phdrs = [(1, 0x1000, paddr, filesz, memsz) for paddr, filesz, memsz in loads]
    if note:
        phdrs.append((4, 0x800, 0, len(note), len(note)))
    head = bytearray(0x1000)
    head[:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", head, 16, 2, 62, 1, 0x1000000, 64, 0, 0, 64, 56,
                     len(phdrs), 64, 0, 0)  # fmt: skip
    for i, (kind, offset, paddr, filesz, memsz) in enumerate(phdrs):
        struct.pack_into("<IIQQQQQQ", head, 64 + 56 * i, kind, 5, offset, paddr, paddr,
                         filesz, memsz, 0x1000)  # fmt: skip
    head[0x800 : 0x800 + len(note)] = note
    path.write_bytes(bytes(head) + bytes(0x3000))
    return path


def test_predict_fw_cfg_pvh_path(tmp_path: Path) -> None:
    """An ELF vmlinux (the fast form): QEMU's load_elfboot spans the PT_LOAD segments, enters
    at the note's address through pvh.bin, and keeps the initrd below RAM - ACPI data."""
    loads = [(0x1000000, 0x1000, 0x2000), (0x1400000, 0x800, 0x0), (0x1800000, 0x1000, 0x6000)]
    vmlinux = _elf64(tmp_path / "vmlinux", loads, entry=0x1A2B3C0)
    initrd = sparse_file(tmp_path / "initrd", 100 << 20)
    p = predict_fw_cfg(vmlinux, initrd, "console=ttyS0", 1024, machine="q35")
    assert (p["option_rom"], p["kernel_entry"]) == ("genroms/pvh.bin", 0x1A2B3C0)
    assert (p["kernel_addr"], p["kernel_size"]) == (0x1000000, 0x806000)  # memsz 0 skipped
    assert (p["setup_addr"], p["setup_size"], p["cmdline_addr"]) == (None, 8192, None)
    assert p["cmdline_size"] == len("console=ttyS0") + 1
    assert p["initrd_max"] == (1024 << 20) - 0x28000 - 1
    assert p["initrd_addr"] == (p["initrd_max"] - (100 << 20)) & ~4095
    with pytest.raises(BootError, match="initrd is too large"):  # no initrd_addr_max to lower
        predict_fw_cfg(vmlinux, initrd, "", 100)
    bare = _elf64(tmp_path / "no-note", loads, entry=None)
    with pytest.raises(KernelImageError, match="without a PVH entry note") as e:
        predict_fw_cfg(bare, None, "", 128)
    assert e.value.hint and "--boot-form classic" in e.value.hint


def test_predict_fw_cfg_without_above_4g_flag(kernel_file: Path, tmp_path: Path) -> None:
    with open(kernel_file, "r+b") as f:
        f.seek(0x236)
        f.write(struct.pack("<H", 0x0001))  # XLF_KERNEL_64 only
        f.seek(0x22C)
        f.write(struct.pack("<I", 0x037FFFFF))  # initrd below 56 MiB
    initrd = sparse_file(tmp_path / "initrd", 1 << 20)
    p = predict_fw_cfg(kernel_file, initrd, "", 4096)
    assert p["initrd_max"] == 0x037FFFFF
    assert p["initrd_addr"] == (0x037FFFFF - (1 << 20)) & ~4095


_TRACE = re.compile(r"fw_cfg_add_i32 key 0x[0-9a-f]+ '(\w+)', value 0x([0-9a-f]+)")


@pytest.mark.qemu
def test_qemu_fw_cfg_trace_agrees(tmp_path: Path) -> None:
    kernel, initrd = netboot("amd64", "linux"), netboot("amd64", "initrd.gz")
    cmdline = "console=ttyS0 treeboot.test=1"
    log = tmp_path / "trace.log"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nic", "none",
            "-display", "none", "-serial", "null", "-monitor", "none",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
            "-trace", "fw_cfg_add_i32", "-D", str(log)]  # fmt: skip
    text, _ = run_qemu(argv, log, lambda t: "'setup_size'" in t, timeout=60)
    seen = {name: int(value, 16) for name, value in _TRACE.findall(text)}
    p = predict_fw_cfg(kernel, initrd, cmdline, 512)
    assert seen["setup_size"] == p["setup_size"]
    assert seen["kernel_size"] == p["kernel_size"] == kernel.stat().st_size - p["setup_size"]
    assert seen["initdr_size"] == p["initrd_size"] == initrd.stat().st_size  # QEMU's spelling
    assert seen["cmdline_size"] == p["cmdline_size"] == len(cmdline) + 1
    for key in ("setup_addr", "kernel_addr", "cmdline_addr", "initrd_addr"):
        assert seen[key] == p[key], key


@pytest.mark.qemu
def test_qemu_fw_cfg_trace_agrees_on_the_pvh_path(tmp_path: Path) -> None:
    """The fast form: the vmlinux derived from the netboot kernel, entered through PVH."""
    from treeboot.artifacts.derive import extract_vmlinux

    kernel, initrd = tmp_path / "vmlinux", netboot("amd64", "initrd.gz")
    with open(kernel, "w+b") as out:
        extract_vmlinux(netboot("amd64", "linux"), out)
    cmdline = "console=ttyS0 treeboot.test=1"
    log = tmp_path / "trace.log"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "768", "-M", "q35", "-nic", "none",
            "-display", "none", "-serial", "null", "-monitor", "none",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
            "-trace", "fw_cfg_add_*", "-D", str(log)]  # fmt: skip
    text, _ = run_qemu(argv, log, lambda t: "pvh.bin" in t, timeout=60)
    seen = {name: int(value, 16) for name, value in _TRACE.findall(text)}
    p = predict_fw_cfg(kernel, initrd, cmdline, 768, machine="q35")
    assert seen["kernel_entry"] == p["kernel_entry"]
    assert seen["initdr_size"] == p["initrd_size"] == initrd.stat().st_size  # QEMU's spelling
    for key in ("kernel_addr", "kernel_size", "setup_size", "cmdline_size", "initrd_addr"):
        assert seen[key] == p[key], key
    assert "setup_addr" not in seen and "cmdline_addr" not in seen
