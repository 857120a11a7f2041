"""``treeboot explain``: boot-chain facts against kernel.predict_fw_cfg and QEMU itself.

The numbers for the other arches are the ones QEMU 7.2 showed in its monitor (``info roms``
of a machine paused with -S) for the same inputs; the qemu-marked tests repeat that check
against the QEMU installed here.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from _net_helpers import serve_http
from treeboot.arch import Architecture, BootKind, firmware_info
from treeboot.artifacts.fwcfg import predict_fw_cfg
from treeboot.artifacts.kernel import read_kernel
from treeboot.cli.main import main
from treeboot.devtree import build_debian_tree
from treeboot.errors import UsageError
from treeboot.explain.chain import ExplainRequest, Explanation, explain
from treeboot.explain.handoff import BootInputs, load_handoff_rules, place
from treeboot.explain.svg import render_svg
from treeboot.explain.text import format_explanation

DI = Path("/usr/lib/debian-installer/images/12")
AMD64 = DI / "amd64/text/debian-installer/amd64"
ARM64 = DI / "arm64/text/debian-installer/arm64"
needs_amd64 = pytest.mark.skipif(not (AMD64 / "linux").is_file(), reason="needs d-i amd64")
needs_arm64 = pytest.mark.skipif(not (ARM64 / "linux").is_file(), reason="needs d-i arm64")
MiB = 1 << 20
JSON_KEYS = [
    "backend", "arch", "machine", "boot", "memory_mib", "location", "identification",
    "artifacts", "kernel", "cmdline", "qemu", "handoff", "fw_cfg", "memory_map", "sequence",
    "notes", "warnings", "assumptions", "boot_form",
]  # fmt: skip


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (AMD64 / "linux").is_file():
        pytest.skip("needs debian-installer-12-netboot-amd64")
    return build_debian_tree(tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="module")
def x86(tree: Path) -> Explanation:
    return explain(ExplainRequest(str(tree), accel="tcg", memory_mib=1024))


def _fw_cfg(ex: Explanation) -> dict[str, int | str | None]:
    """name -> value (numbers) or data size."""
    return {i.name: i.size if i.name.endswith("_data") else i.value for i in ex.placement.fw_cfg}


def _append(argv: list[str]) -> str:
    return argv[argv.index("-append") + 1]


# -- x86: a Debian tree ---------------------------------------------------------------------


def test_debian_tree_agrees_with_predict_fw_cfg(x86: Explanation) -> None:
    kernel, initrd = (Path(a.path or "") for a in x86.artifacts)
    pred = predict_fw_cfg(kernel, initrd, x86.cmdline_text, 1024, machine="q35")
    items = _fw_cfg(x86)
    assert items["setup_size"] == pred["setup_size"] == 20480
    assert items["setup_data"] == 20480 and items["setup_addr"] == 0x10000
    for key in ("kernel_addr", "kernel_size", "initrd_addr", "initrd_size", "cmdline_addr",
                "cmdline_size"):  # fmt: skip
        assert items[key] == pred[key], key
    assert items["kernel_size"] == kernel.stat().st_size - 20480
    assert items["cmdline_data"] == len(x86.cmdline_text) + 1
    assert items["genroms/linuxboot_dma.bin"] in (None, 1536)
    regions = {r.name: r for r in x86.placement.regions}
    assert regions["initrd"].start == pred["initrd_addr"]
    assert regions["protected-mode kernel"].start == 0x100000
    x = read_kernel(kernel).x86
    assert x is not None and regions["init_size footprint"].size == x.init_size
    assert regions["init_size footprint"].start == 0x1000000  # pref_address wins over 0x200000


def test_debian_tree_artifacts_cmdline_and_argv(x86: Explanation, tree: Path) -> None:
    assert x86.arch is Architecture.X86_64 and x86.machine == "q35"
    assert x86.identification is not None and x86.identification.os == "debian12"
    kernel, initrd = x86.artifacts
    assert kernel.source.endswith("netboot/debian-installer/amd64/linux")
    assert kernel.url == f"file://{tree}/{kernel.source}"
    assert kernel.size == (AMD64 / "linux").stat().st_size
    assert initrd.size == (AMD64 / "initrd.gz").stat().st_size
    assert kernel.verified == "sha256" and kernel.published == f"sha256:{kernel.sha256}"
    assert "console=ttyS0" in x86.cmdline
    assert _append(x86.argv) == x86.cmdline_text
    assert x86.argv[x86.argv.index("-kernel") + 1] == kernel.path
    assert x86.handoff.firmware == "SeaBIOS" and "-bios" not in x86.argv
    text = " ".join(t for _, _, t in x86.sequence)
    assert "?" not in text and "0x10000" in text and "debian-installer" in text
    assert not x86.warnings and not x86.placement.assumptions


def test_text_output(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(tree), "--accel", "tcg", "--memory", "1024"]) == 0
    out = capsys.readouterr().out
    for needle in ("What is fetched", "verified: sha256", "setup_size", "20480 bytes",
                   "linuxboot_dma.bin", "SeaBIOS", "console=ttyS0", "qemu-system-x86_64",
                   "real-mode setup", "Hand-off sequence", "7. kernel -> installer"):  # fmt: skip
        assert needle in out, needle


def test_json_keys_are_stable(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(tree), "--accel", "tcg", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert list(d) == JSON_KEYS
    assert set(d["artifacts"][0]) == {"role", "source", "url", "path", "size", "sha256",
                                      "published", "verified", "how", "from_cache"}  # fmt: skip
    assert set(d["fw_cfg"][0]) == {"key", "name", "value", "size"}
    assert set(d["memory_map"]) == {"ram_start", "ram_end", "facts", "regions"}
    assert set(d["memory_map"]["regions"][0]) == {"name", "start", "end", "size", "kind",
                                                  "detail"}  # fmt: skip
    assert set(d["cmdline"]) == {"args", "text", "bytes", "max"} and d["cmdline"]["max"] == 2047
    assert set(d["qemu"]) == {"binary", "argv", "command"}
    assert set(d["sequence"][0]) == {"from", "to", "text"}
    assert d["kernel"]["setup_size"] == 20480 and d["memory_mib"] >= 64


def test_boot_form_is_explained_with_its_reason_and_hand_off(tree: Path) -> None:
    tcg = explain(ExplainRequest(str(tree), accel="tcg"))
    assert tcg.boot_form is not None and tcg.boot_form.kernel == "vmlinux-pvh"
    text = format_explanation(tcg)
    assert "Boot form: fast (kernel vmlinux-pvh, initrd raw)" in text
    assert "pvh.bin" in text and "bench/time_to_installer.py" in text
    classic = explain(ExplainRequest(str(tree), accel="tcg", boot_form="classic"))
    assert classic.boot_form is not None and "linuxboot_dma.bin" in classic.boot_form.handoff
    uefi = explain(ExplainRequest(str(tree), accel="tcg", boot="uefi", boot_form="fast"))
    assert uefi.boot_form is not None and uefi.boot_form.kernel == "original"


def test_uefi_uses_the_same_fw_cfg_items_and_places_nothing(tree: Path, x86: Explanation) -> None:
    ex = explain(ExplainRequest(str(tree), accel="tcg", memory_mib=1024, boot="uefi"))
    code = "if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE_4M.fd,readonly=on"
    assert ex.argv[ex.argv.index(code) - 1] == "-drive"
    assert _fw_cfg(ex) == _fw_cfg(x86)
    assert ex.placement.regions == [] and "OVMF" in ex.handoff.firmware


def test_machine_pc_and_small_memory(tree: Path) -> None:
    ex = explain(ExplainRequest(str(tree), accel="tcg", memory_mib=128, machine="pc"))
    kernel, initrd = (Path(a.path or "") for a in ex.artifacts)
    pred = predict_fw_cfg(kernel, initrd, ex.cmdline_text, 128, machine="pc")
    assert ex.argv[ex.argv.index("-machine") + 1] == "pc"
    assert _fw_cfg(ex)["initrd_addr"] == pred["initrd_addr"] < 128 * MiB


def test_no_fetch_over_http_reads_sizes_only(tree: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("TREEBOOT_CACHE", str(tmp_path / "empty-cache"))
    root = tree.parents[3]
    with serve_http(root) as srv:
        url = srv.url + "dists/bookworm/main/installer-amd64/"
        ex = explain(ExplainRequest(url, accel="tcg", memory_mib=1024, fetch=False))
    kernel, initrd = ex.artifacts
    assert ex.image is None and kernel.path is None and kernel.sha256 is None
    assert kernel.size == (AMD64 / "linux").stat().st_size
    assert kernel.url == url + kernel.source and kernel.url in ex.argv
    assert initrd.url in ex.argv and initrd.published is not None
    items = _fw_cfg(ex)
    assert items["setup_size"] is None and items["kernel_addr"] == 0x100000
    assert initrd.size is not None
    assert items["initrd_addr"] == (0x3FFD7FFF - initrd.size) & ~4095  # q35 1 GiB, no header
    assert ex.placement.assumptions and "not fetched" in kernel.how
    assert not list((tmp_path / "empty-cache").rglob("blobs/sha256/*"))


# -- kernel/initrd pairs and aarch64 --------------------------------------------------------


@needs_amd64
def test_pair_mode_boots_the_files_without_network() -> None:
    ex = explain(ExplainRequest(kernel=str(AMD64 / "linux"), initrd=str(AMD64 / "initrd.gz"),
                                accel="tcg", memory_mib=1024))  # fmt: skip
    assert ex.arch is Architecture.X86_64 and ex.identification is None
    assert [a.source for a in ex.artifacts] == [str(AMD64 / "linux"), str(AMD64 / "initrd.gz")]
    assert ex.artifacts[0].verified == "none"
    assert "-netdev" not in ex.argv and str(AMD64 / "linux") in ex.argv
    assert _fw_cfg(ex)["setup_size"] == 20480


@needs_arm64
@pytest.mark.parametrize(("memory", "initrd", "dtb"), [(1024, 0x48000000, 0x4A800000),
                                                       (192, 0x46000000, 0x48800000)])  # fmt: skip
def test_arm64_image_on_virt(memory: int, initrd: int, dtb: int) -> None:
    ex = explain(ExplainRequest(kernel=str(ARM64 / "linux"), initrd=str(ARM64 / "initrd.gz"),
                                accel="tcg", memory_mib=memory, boot="direct"))  # fmt: skip
    assert ex.arch is Architecture.AARCH64 and ex.machine == "virt"
    assert ex.image is not None and ex.image.image is not None
    assert ex.image.image.text_offset == 0 and ex.image.image.image_size > 0
    regions = {r.name: r for r in ex.placement.regions}
    assert regions["boot stub"].start == 0x40000000
    assert regions["Image"].start == 0x40200000  # text_offset 0 is moved up 2 MiB
    assert regions["Image"].size == (ARM64 / "linux").stat().st_size
    assert regions["image_size footprint"].size == ex.image.image.image_size
    assert regions["initrd"].start == initrd and regions["device tree"].start == dtb
    assert ex.placement.fw_cfg == [] and "console=ttyAMA0" in ex.cmdline
    assert "0x40200000" in ex.sequence[2][2] and "-bios" not in ex.argv
    d = ex.to_json()
    assert d["kernel"]["format"] == "arm64-image" and d["kernel"]["text_offset"] == 0


@needs_arm64
def test_arm64_uefi_publishes_fw_cfg_and_puts_the_dtb_at_ram_base() -> None:
    ex = explain(ExplainRequest(kernel=str(ARM64 / "linux"), initrd=str(ARM64 / "initrd.gz"),
                                accel="tcg", boot="uefi"))  # fmt: skip
    assert "if=pflash,format=raw,unit=0,file=/usr/share/AAVMF/AAVMF_CODE.fd,readonly=on" in ex.argv
    items = _fw_cfg(ex)
    assert items["kernel_size"] == (ARM64 / "linux").stat().st_size
    assert items["initrd_data"] == (ARM64 / "initrd.gz").stat().st_size
    assert [r.start for r in ex.placement.regions] == [0x40000000]


@needs_amd64
def test_wrong_arch_kernel_is_a_warning() -> None:
    ex = explain(ExplainRequest(kernel=str(AMD64 / "linux"), initrd=str(AMD64 / "initrd.gz"),
                                arch="aarch64", accel="tcg"))  # fmt: skip
    assert any("will not boot" in w for w in ex.warnings)


def test_libvirt_backend_says_who_opens_the_files_and_keeps_the_handoff() -> None:
    pair = {"kernel": str(AMD64 / "linux"), "initrd": str(AMD64 / "initrd.gz"), "accel": "tcg"}
    qemu = explain(ExplainRequest(**pair))  # type: ignore[arg-type]
    libvirt = explain(ExplainRequest(**pair, backend="libvirt"))  # type: ignore[arg-type]
    assert libvirt.sequence == qemu.sequence  # the same fw_cfg hand-off
    extra = [n for n in libvirt.notes if n not in qemu.notes]
    assert any("storage volumes on the hypervisor" in n for n in extra)
    assert any("libvirtd, not treeboot, starts QEMU" in n for n in extra)


def test_backends_other_than_qemu_are_not_yet() -> None:
    with pytest.raises(UsageError, match="not yet"):
        explain(ExplainRequest("/nonexistent", backend="pxe"))
    with pytest.raises(UsageError, match="unknown backend"):
        explain(ExplainRequest("/nonexistent", backend="vmware"))
    with pytest.raises(UsageError, match="LOCATION"):
        explain(ExplainRequest())


# -- the other arches: placement rules with images built here -------------------------------


def _riscv_image(path: Path, size: int) -> Path:
    head = bytearray(64)
    struct.pack_into("<QQQ", head, 8, 0x200000, 16 * MiB, 0)
    head[48:56], head[56:60] = b"RISCV\0\0\0", b"RSC\x05"
    path.write_bytes(bytes(head) + bytes(size - 64))
    return path


def _ppc_vmlinux(path: Path, memsz: int) -> Path:
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 21, 1, 0xC000000000000000, 64, 0, 2, 64, 56, 1,
                        0, 0, 0)  # fmt: skip
    phdr = struct.pack("<IIQQQQQQ", 1, 7, 0x10000, 0xC000000000000000, 0, 0x1000, memsz, 0x10000)
    path.write_bytes((ehdr + phdr).ljust(0x11000, b"\0"))
    return path


def _s390_image(path: Path, size: int) -> Path:
    data = bytearray(size)
    data[0x10008:0x1000E] = b"S390EP"
    path.write_bytes(bytes(data))
    return path


def _inputs(arch: Architecture, kernel: Path, initrd_size: int, memory: int = 1024) -> BootInputs:
    rules = load_handoff_rules()
    h = rules.find(arch, "default")
    try:
        image = read_kernel(kernel)
    except Exception:
        image = None
    return BootInputs(arch, arch.machine(), memory, "console=x", image, kernel,
                      kernel.stat().st_size, initrd_size, rules.blob(h.firmware_blob))  # fmt: skip


def _placed(arch: Architecture, inputs: BootInputs) -> dict[str, int]:
    h = load_handoff_rules().find(arch, "default")
    return {r.name: r.start for r in place(h, inputs).regions}


def test_riscv64_virt_placement(tmp_path: Path) -> None:
    kernel = _riscv_image(tmp_path / "Image", 3 * MiB)
    got = _placed(Architecture.RISCV64, _inputs(Architecture.RISCV64, kernel, 5 * MiB))
    assert got["Image"] == 0x80200000 and got["initrd"] == 0x88200000
    assert got["device tree"] == 0xBFE00000


def test_ppc64le_pseries_placement(tmp_path: Path) -> None:
    kernel = _ppc_vmlinux(tmp_path / "vmlinux", 5 * MiB)
    got = _placed(Architecture.PPC64LE, _inputs(Architecture.PPC64LE, kernel, 5 * MiB))
    assert got["SLOF"] == 0 and got["vmlinux segments"] == 0x400000
    assert got["initrd"] == 0x910000  # (0x400000 + 5 MiB + 0x1ffff) & ~0xffff


def test_s390x_ipl_placement(tmp_path: Path) -> None:
    kernel = _s390_image(tmp_path / "kernel.debian", 9 * MiB)
    got = _placed(Architecture.S390X, _inputs(Architecture.S390X, kernel, 5 * MiB))
    assert got["kernel image"] == 0 and got["command line"] == 0x10480
    assert got["initrd"] == 0xA00000  # 8 MiB, moved up past kernel + 1 MiB
    assert got["s390-ccw BIOS"] == 0x3FE00000


def test_every_arch_has_a_default_handoff_and_valid_steps() -> None:
    rules = load_handoff_rules()
    for arch in Architecture:
        uefi = firmware_info(arch.default_firmware()).kind is BootKind.UEFI
        h = rules.find(arch, "uefi" if uefi else "default")
        assert h.steps[0].source == "treeboot" and h.steps[-1].target == "installer"
    assert rules.fw_cfg_keys["setup_size"] == 0x17
    with pytest.raises(UsageError, match="--boot uefi"):
        rules.find(Architecture.S390X, "uefi")


def test_every_step_placeholder_is_a_computed_fact() -> None:
    """A typo in rules/handoff.toml would show as "?" in every explanation."""
    context = {"binary", "machine", "memory_mib", "firmware_file", "installer"}
    rules = load_handoff_rules()
    for h in rules.handoffs:
        arch = Architecture(h.arches[0])
        inputs = BootInputs(arch, arch.machine(), 1024, "console=x", None, None, 8 * MiB,
                            16 * MiB, rules.blob(h.firmware_blob))  # fmt: skip
        facts = set(place(h, inputs, rules).facts)
        for step in h.steps:
            names = set(re.findall(r"{(\w+)}", step.text))
            assert names <= facts | context, (h.name, names - facts - context)


# -- the picture ----------------------------------------------------------------------------


def _svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_svg_is_well_formed_with_the_labels(x86: Explanation, tmp_path: Path) -> None:
    texts = _svg_texts(render_svg(x86))
    joined = "\n".join(texts)
    for label in ("Guest memory", "Hand-off sequence", "Legend", "real-mode setup",
                  "protected-mode kernel", "initrd", "command line", "init_size footprint",
                  "treeboot", "QEMU", "fw_cfg", "SeaBIOS", "installer", "setup_data",
                  "genroms/linuxboot_dma.bin", "0x10000", "0x100000", "0x20000"):  # fmt: skip
        assert label in joined, label
    assert any(t.startswith("1. starts qemu-system-x86_64") for t in texts)


@needs_arm64
def test_svg_arm64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "arm.svg"
    rc = main(["explain", "--kernel", str(ARM64 / "linux"), "--initrd", str(ARM64 / "initrd.gz"),
               "--accel", "tcg", "--boot", "direct", "--svg", str(out), "--json"])  # fmt: skip
    assert rc == 0 and json.loads(capsys.readouterr().out)["arch"] == "aarch64"
    joined = "\n".join(_svg_texts(out.read_text()))
    for label in ("device tree", "boot stub", "Image", "guest RAM", "0x40200000"):
        assert label in joined, label


# -- against QEMU ---------------------------------------------------------------------------


def _qemu_paused(argv: list[str], extra: list[str], monitor: str) -> str:
    """Run QEMU paused before the first instruction (-S), feed the monitor, return its output.
    subprocess.run waits for (or kills and reaps) the process."""
    binary = shutil.which(argv[0])
    if binary is None:
        pytest.skip(f"{argv[0]} not installed")
    keep = []
    for opt in ("-machine", "-m", "-kernel", "-initrd", "-append", "-bios", "-cpu"):
        if opt in argv:
            keep += [opt, argv[argv.index(opt) + 1]]
    cmd = [binary, *keep, "-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-monitor",
           "stdio", *extra]  # fmt: skip
    proc = subprocess.run(cmd, input=monitor + "quit\n", capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.qemu
def test_x86_prediction_matches_qemu_fw_cfg_trace(x86: Explanation, tmp_path: Path) -> None:
    from treeboot.boot.tracing import parse_fw_cfg_trace

    trace_file = tmp_path / "fw_cfg.trace"
    _qemu_paused(x86.argv, ["-trace", "fw_cfg_add_*", "-D", str(trace_file)], "")
    trace = parse_fw_cfg_trace(trace_file)
    for item in x86.placement.fw_cfg:
        if item.key is None:
            assert item.name in trace.files and trace.files[item.name].size == item.size
            continue
        seen = trace.items[item.key]
        if item.name.endswith("_data"):
            assert seen.size == item.size, item.name
        else:
            assert seen.value == item.value, item.name


@needs_arm64
@pytest.mark.qemu
def test_arm64_placement_matches_qemu_info_roms() -> None:
    ex = explain(ExplainRequest(kernel=str(ARM64 / "linux"), initrd=str(ARM64 / "initrd.gz"),
                                accel="tcg", memory_mib=512, boot="direct"))  # fmt: skip
    out = _qemu_paused(ex.argv, [], "info roms\n")
    rom = re.compile(r'addr=(?P<addr>[0-9a-f]+) size=0x[0-9a-f]+ mem=ram name="(?P<name>[^"]+)"')
    roms = {m["name"]: int(m["addr"], 16) for m in rom.finditer(out)}
    regions = {r.name: r.start for r in ex.placement.regions}
    assert roms["bootloader"] == regions["boot stub"]
    assert roms[str(ARM64 / "linux")] == regions["Image"]
    assert roms[str(ARM64 / "initrd.gz")] == regions["initrd"]
    assert roms["dtb"] == regions["device tree"]


MALTA = DI / "mips64el/malta"


@pytest.mark.qemu
@pytest.mark.skipif(not MALTA.is_dir(), reason="needs debian-installer-12-netboot-mips64el")
def test_mips_malta_placement_matches_qemu_info_roms() -> None:
    """Malta has no firmware: QEMU itself puts the ELF segments, the initrd, the YAMON-style
    environment and the boot stub in RAM; `info roms` lists what it placed where."""
    kernel = next(MALTA.glob("vmlinuz-*-5kc-malta"))
    ex = explain(ExplainRequest(kernel=str(kernel), initrd=str(MALTA / "initrd.gz"),
                                accel="tcg", memory_mib=512))  # fmt: skip
    assert ex.arch is Architecture.MIPS64EL and ex.machine == "malta"
    assert ex.handoff.placement == "mips-malta" and "-bios" not in ex.argv
    out = _qemu_paused(ex.argv, [], "info roms\n")
    rom = re.compile(r'addr=(?P<addr>[0-9a-f]+) size=0x[0-9a-f]+ mem=ram name="(?P<name>[^"]+)"')
    roms = {m["name"]: int(m["addr"], 16) for m in rom.finditer(out)}
    regions = {r.name: r.start for r in ex.placement.regions}
    assert roms[str(MALTA / "initrd.gz")] == regions["initrd"]
    assert roms["prom"] == regions["prom env + argv"]
    assert regions["vmlinux segments"] == min(
        a for n, a in roms.items() if n.startswith(str(kernel))
    )


@needs_arm64
@pytest.mark.qemu
def test_arm64_uefi_fw_cfg_matches_qemu_trace(tmp_path: Path) -> None:
    """With AAVMF (install's default on arm64) QEMU loads nothing itself: the kernel, initrd
    and command line go to fw_cfg for the firmware, as the explanation says."""
    from treeboot.boot.tracing import parse_fw_cfg_trace

    ex = explain(ExplainRequest(kernel=str(ARM64 / "linux"), initrd=str(ARM64 / "initrd.gz"),
                                accel="tcg", memory_mib=512))  # fmt: skip
    assert ex.handoff.placement == "arm-virt-uefi"
    code = next(a for a in ex.argv if "if=pflash" in a and "unit=0" in a)
    trace_file = tmp_path / "fw_cfg.trace"
    _qemu_paused(ex.argv, ["-drive", code, "-trace", "fw_cfg_add_*", "-D", str(trace_file)],
                 "info roms\n")  # fmt: skip
    trace = parse_fw_cfg_trace(trace_file)
    assert ex.placement.fw_cfg
    for item in ex.placement.fw_cfg:
        seen = trace.items[item.key] if item.key is not None else None
        assert seen is not None, item.name
        if item.name.endswith("_data"):
            assert seen.size == item.size, item.name
        else:
            assert seen.value == item.value, item.name


PPC64EL = DI / "ppc64el/text/debian-installer/ppc64el"


@pytest.mark.qemu
@pytest.mark.skipif(not (PPC64EL / "vmlinux").is_file(), reason="needs d-i ppc64el")
def test_ppc64le_placement_matches_qemu_info_roms() -> None:
    ex = explain(ExplainRequest(kernel=str(PPC64EL / "vmlinux"),
                                initrd=str(PPC64EL / "initrd.gz"), accel="tcg",
                                memory_mib=1024))  # fmt: skip
    out = _qemu_paused(ex.argv, [], "info roms\n")
    rom = re.compile(r'addr=(?P<addr>[0-9a-f]+) size=0x[0-9a-f]+ mem=ram name="(?P<name>[^"]+)"')
    roms = {m["name"]: int(m["addr"], 16) for m in rom.finditer(out)}
    regions = {r.name: r.start for r in ex.placement.regions}
    assert roms[str(PPC64EL / "initrd.gz")] == regions["initrd"]
    kernel = min(a for n, a in roms.items() if n.startswith(str(PPC64EL / "vmlinux")))
    assert kernel == regions["vmlinux segments"]
