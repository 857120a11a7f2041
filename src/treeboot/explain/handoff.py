"""Boot hand-off facts (``rules/handoff.toml``) and the placement rules that turn them into
addresses for one kernel, initrd, command line and memory size (used by treeboot.explain.chain).

A rule is a small pure function named by the table's ``placement`` key; its constants come
from the table, its inputs are :class:`BootInputs`; it returns a :class:`Placement` (memory
regions, fw_cfg items, the facts the hand-off steps quote). Unknown inputs (``--no-fetch``:
no kernel header) give ``None`` facts or stated assumptions, never guesses in disguise.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treeboot.arch import Architecture
from treeboot.artifacts.fwcfg import ACPI_DATA_SIZE, below_4g_mem_size
from treeboot.artifacts.kernel import ImageFormat, KernelImage
from treeboot.detect.rules import load_rule_table
from treeboot.errors import MetadataError, TreebootError, UsageError

MiB = 1 << 20
Fact = int | str | None


@dataclass(frozen=True)
class Step:
    source: str
    target: str
    text: str


@dataclass(frozen=True)
class Handoff:
    """One entry of rules/handoff.toml (see the comment at its top)."""

    name: str
    arches: tuple[str, ...]
    boot: str
    firmware: str
    firmware_file: str
    firmware_blob: str
    loader: str
    loader_how: str
    placement: str
    actors: tuple[str, ...]
    steps: tuple[Step, ...]
    notes: tuple[str, ...]
    constants: Mapping[str, int]


@dataclass(frozen=True)
class HandoffRules:
    firmware_dirs: tuple[str, ...]
    fw_cfg_keys: Mapping[str, int]
    handoffs: tuple[Handoff, ...]

    def find(self, arch: Architecture, boot: str) -> Handoff:
        for h in self.handoffs:
            if str(arch) in h.arches and h.boot == boot:
                return h
        offered = sorted({h.boot for h in self.handoffs if str(arch) in h.arches})
        raise UsageError(
            f"--boot {boot}: not described for {arch}",
            hint=f"use --boot {' or '.join(offered) or 'default'}",
        )

    def blob(self, name: str) -> Path | None:
        """A firmware file from QEMU's data directories (None when absent)."""
        for d in self.firmware_dirs if name else ():
            if (path := Path(d) / name).is_file():
                return path
        return None


_TABLE_KEYS = {
    "arches",
    "boot",
    "firmware",
    "firmware_file",
    "firmware_blob",
    "loader",
    "loader_how",
    "placement",
    "actors",
    "steps",
    "notes",
    "constants",
}


def _parse_handoff(name: str, t: Mapping[str, Any]) -> Handoff:
    unknown = set(t) - _TABLE_KEYS
    if unknown or t.get("placement") not in PLACEMENTS:
        raise MetadataError(
            f"rules/handoff.toml [{name}]: bad keys {sorted(unknown)} or"
            f" unknown placement {t.get('placement')!r}"
        )
    actors = tuple(t["actors"])
    steps = tuple(Step(s["from"], s["to"], s["text"]) for s in t["steps"])
    for s in steps:
        if s.source not in actors or s.target not in actors:
            raise MetadataError(
                f"rules/handoff.toml [{name}]: step {s.text!r} names an actor missing from actors"
            )
    return Handoff(
        name=name,
        arches=tuple(t["arches"]),
        boot=t["boot"],
        firmware=t["firmware"],
        firmware_file=t.get("firmware_file", ""),
        firmware_blob=t.get("firmware_blob", ""),
        loader=t["loader"],
        loader_how=" ".join(t["loader_how"].split()),
        placement=t["placement"],
        actors=actors,
        steps=steps,
        notes=tuple(t.get("notes", ())),
        constants=dict(t.get("constants", {})),
    )


def parse_handoff_rules(data: Mapping[str, Any]) -> HandoffRules:
    try:
        handoffs = tuple(_parse_handoff(n, t) for n, t in data["handoff"].items())
        return HandoffRules(tuple(data["firmware_dirs"]), dict(data["fw_cfg_keys"]), handoffs)
    except (KeyError, TypeError) as e:
        raise MetadataError(f"rules/handoff.toml: missing or malformed {e}") from e


@functools.cache
def load_handoff_rules() -> HandoffRules:
    """The packaged ``rules/handoff.toml`` (parsed once)."""
    return parse_handoff_rules(load_rule_table("handoff.toml"))


# -- placement ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A piece of guest memory. ``kind``: firmware, stub, setup, cmdline, kernel, footprint,
    initrd, dtb, reserved (the SVG legend's colours)."""

    name: str
    start: int
    size: int
    kind: str
    detail: str = ""

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class FwCfgItem:
    """An fw_cfg item QEMU publishes: a numbered key (value or data bytes) or a named file."""

    key: int | None
    name: str
    value: int | str | None = None
    size: int | None = None


@dataclass
class BootInputs:
    arch: Architecture
    machine: str
    memory_mib: int
    cmdline: str
    image: KernelImage | None  # None: header not read (--no-fetch or not a kernel we parse)
    kernel_path: Path | None
    kernel_size: int | None  # the file's size
    initrd_size: int | None
    firmware_blob: Path | None = None


@dataclass
class Placement:
    ram: tuple[int, int]  # guest RAM shown in the map: [start, end)
    regions: list[Region] = field(default_factory=list)
    fw_cfg: list[FwCfgItem] = field(default_factory=list)
    facts: dict[str, Fact] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def _regions(*items: tuple[str, int | None, int | None, str, str]) -> list[Region]:
    """Regions whose start and size are known (others stay out of the map)."""
    return [Region(n, s, z, k, d) for n, s, z, k, d in items if s is not None and z]


def _file_item(path: Path | None, name: str) -> FwCfgItem:
    size = path.stat().st_size if path is not None and path.is_file() else None
    return FwCfgItem(None, name, size=size)


def fw_cfg_items(
    keys: Mapping[str, int], facts: Mapping[str, Fact], roles: tuple[str, ...], cmdline: str
) -> list[FwCfgItem]:
    """Items in the order QEMU's x86 loader adds them (cmdline, initrd, kernel, setup)."""
    items = []
    for role in roles:
        size = facts.get(f"{role}_size")
        if f"{role}_addr" in keys and facts.get(f"{role}_addr") is not None:
            items.append(FwCfgItem(keys[f"{role}_addr"], f"{role}_addr", facts[f"{role}_addr"]))
        items.append(FwCfgItem(keys[f"{role}_size"], f"{role}_size", size))
        data = cmdline if role == "cmdline" else None
        items.append(FwCfgItem(keys[f"{role}_data"], f"{role}_data", data, _int(size)))
    return items


def _int(value: Fact) -> int | None:
    return value if isinstance(value, int) else None


# -- x86 ------------------------------------------------------------------------------------


def _x86_facts(inp: BootInputs) -> tuple[dict[str, Fact], list[str], list[str]]:
    """predict_fw_cfg's numbers, or (no header) what any x86_64 kernel since 3.8 gives."""
    from treeboot.artifacts.fwcfg import predict_fw_cfg

    warnings: list[str] = []
    if inp.image is not None and inp.image.x86 is not None and inp.kernel_path is not None:
        try:
            pred = predict_fw_cfg(
                inp.kernel_path, None, inp.cmdline, inp.memory_mib, machine=inp.machine
            )
        except TreebootError as e:
            return {}, [e.message], []
        for key in ("initrd_size", "option_rom", "kernel_entry"):  # the rules table says those
            pred.pop(key)
        warnings += pred.pop("warnings")
        return pred, warnings, []
    if inp.image is not None:
        return (
            {},
            [
                f"the kernel is {inp.image.format}, but QEMU's x86 loader needs a bzImage"
                " (QEMU would stop)"
            ],
            [],
        )
    below = below_4g_mem_size(inp.memory_mib, inp.machine)
    facts: dict[str, Fact] = {
        "below_4g_mem_size": below,
        "setup_addr": 0x10000,
        "setup_size": None,
        "kernel_addr": 0x100000,
        "kernel_size": None,
        "cmdline_addr": 0x20000,
        "cmdline_size": len(inp.cmdline.encode()) + 1,
        "initrd_max": below - ACPI_DATA_SIZE - 1,
    }
    assume = [
        "kernel header not read: assuming boot protocol >= 2.12 with LOADED_HIGH and"
        " XLF_CAN_BE_LOADED_ABOVE_4G (any x86_64 kernel since 3.8)"
    ]
    return facts, warnings, assume


def _x86_initrd(facts: dict[str, Fact], inp: BootInputs, warnings: list[str]) -> None:
    initrd_max = _int(facts.get("initrd_max"))
    facts["initrd_size"] = inp.initrd_size
    facts["initrd_addr"] = None
    if initrd_max is None or inp.initrd_size is None:
        return
    if inp.initrd_size >= initrd_max:
        warnings.append(
            f"the initrd ({inp.initrd_size} bytes) does not fit below"
            f" {initrd_max:#x}: QEMU would stop with 'initrd is too large'"
        )
        return
    facts["initrd_addr"] = (initrd_max - inp.initrd_size) & ~4095


def _x86_runtime(facts: dict[str, Fact], image: KernelImage | None) -> None:
    x = image.x86 if image is not None else None
    if x is None or x.init_size is None or x.pref_address is None:
        facts["runtime_start"] = facts["init_size"] = None
        return
    load = _int(facts.get("kernel_addr")) or 0x100000
    start = x.pref_address
    if x.relocatable and x.kernel_alignment:
        start = max(_align_up(load, x.kernel_alignment), x.pref_address)
    facts["runtime_start"], facts["init_size"] = start, x.init_size


def place_x86(h: Handoff, inp: BootInputs, rules: HandoffRules) -> Placement:
    facts, warnings, assume = _x86_facts(inp)
    _x86_initrd(facts, inp, warnings)
    _x86_runtime(facts, inp.image)
    setup = _int(facts.get("setup_addr"))
    facts["setup_entry"] = None
    if setup is not None:  # linuxboot_dma.c: ljmp to segment setup_addr/16 + 0x20, offset 0
        facts["setup_entry"] = f"{(setup >> 4) + 0x20:#06x}:0000 ({setup + 0x200:#x})"
    below = below_4g_mem_size(inp.memory_mib, inp.machine)
    c = h.constants
    p = Placement((0, below), facts=facts, warnings=warnings, assumptions=assume)
    if h.placement == "x86":
        rom = "SeaBIOS + option ROMs (linuxboot_dma.bin is copied here)"
        p.regions = _regions(
            (
                "real-mode setup",
                setup,
                _int(facts.get("setup_size")),
                "setup",
                "boot sector + setup code, header at +0x1f1",
            ),
            (
                "command line",
                _int(facts.get("cmdline_addr")),
                _int(facts.get("cmdline_size")),
                "cmdline",
                "NUL-terminated, cmd_line_ptr points here",
            ),
            ("BIOS / option ROM area", c.get("rom_area"), c.get("rom_area_size"), "firmware", rom),
            (
                "protected-mode kernel",
                _int(facts.get("kernel_addr")),
                _int(facts.get("kernel_size")),
                "kernel",
                "decompressor + compressed payload",
            ),
            (
                "init_size footprint",
                _int(facts.get("runtime_start")),
                _int(facts.get("init_size")),
                "footprint",
                "where the decompressed kernel runs (KASLR may move it)",
            ),
            (
                "initrd",
                _int(facts.get("initrd_addr")),
                inp.initrd_size,
                "initrd",
                "as high as allowed, 4 KiB aligned",
            ),
            (
                "ACPI tables",
                below - ACPI_DATA_SIZE,
                ACPI_DATA_SIZE,
                "reserved",
                "kept free below the top of low RAM",
            ),
        )
    roles = ("cmdline", "initrd", "kernel", "setup")
    p.fw_cfg = fw_cfg_items(rules.fw_cfg_keys, facts, roles, inp.cmdline)
    rom = "linuxboot_dma.bin"
    p.fw_cfg.append(_file_item(rules.blob(rom), f"genroms/{rom}"))
    return p


# -- aarch64 virt ---------------------------------------------------------------------------


def loaded_size(inp: BootInputs) -> int | None:
    """Bytes QEMU puts in RAM/fw_cfg for the kernel: a gzip'd Image is gunzipped first
    (its size is the gzip trailer's ISIZE, the length modulo 4 GiB)."""
    image, path = inp.image, inp.kernel_path
    gz = image is not None and image.compression == "gzip" and image.x86 is None
    if gz and path is not None:
        try:
            with open(path, "rb") as f:
                f.seek(-4, 2)
                return int(struct.unpack("<I", f.read(4))[0])
        except OSError:
            return None
    return inp.kernel_size


def place_arm_virt(h: Handoff, inp: BootInputs, rules: HandoffRules) -> Placement:
    c = h.constants
    base, ram = c["ram_base"], inp.memory_mib * MiB
    p = Placement((base, base + ram))
    hdr = inp.image.image if inp.image is not None else None
    if inp.image is not None and inp.image.format is ImageFormat.EFI_ZBOOT:
        p.warnings.append(
            "an EFI zboot image cannot be loaded by QEMU 7.2's arm loader"
            " without firmware: use --boot uefi"
        )
    if hdr is None:
        offset = 0
        p.assumptions.append(
            "kernel header not read: assuming an arm64 Image (>= 3.17) with text_offset 0"
        )
    else:
        offset = hdr.text_offset if hdr.image_size else c["default_text_offset"]
    if offset < c["bootloader_max"]:
        offset += 2 * MiB  # the boot stub owns the bottom of RAM
    kernel_addr, size = base + offset, loaded_size(inp)
    initrd = base + min(ram // 2, c["initrd_window"])
    if size is not None:
        initrd = max(initrd, kernel_addr + size)
    initrd = _align_up(initrd, 4096)
    dtb = _align_up(initrd + (inp.initrd_size or 0), c["dtb_align"])
    if dtb >= base + ram:
        p.warnings.append(
            "no room for the DTB after the initrd: QEMU would stop with"
            " 'Not enough space for DTB after kernel/initrd'"
        )
    footprint = hdr.image_size if hdr is not None and hdr.image_size else None
    p.facts = {
        "ram_base": base,
        "kernel_addr": kernel_addr,
        "kernel_size": size,
        "image_size": footprint,
        "initrd_addr": initrd,
        "initrd_size": inp.initrd_size,
        "dtb_addr": dtb,
        "dtb_size": c["dtb_size"],
    }
    p.regions = _regions(
        ("boot stub", base, c["stub_size"], "stub", "sets x0 = DTB, jumps to the kernel"),
        ("Image", kernel_addr, size, "kernel", "RAM base + text_offset (+ 2 MiB)"),
        ("image_size footprint", kernel_addr, footprint, "footprint", "Image + BSS"),
        ("initrd", initrd, inp.initrd_size, "initrd", "RAM base + min(RAM/2, 128 MiB)"),
        ("device tree", dtb, c["dtb_size"], "dtb", "/chosen: bootargs, linux,initrd-*"),
    )
    return p


def place_arm_uefi(h: Handoff, inp: BootInputs, rules: HandoffRules) -> Placement:
    base = h.constants["ram_base"]
    p = Placement((base, base + inp.memory_mib * MiB))
    p.facts = {
        "ram_base": base,
        "kernel_size": loaded_size(inp),
        "initrd_size": inp.initrd_size,
        "cmdline_size": len(inp.cmdline.encode()) + 1,
        "dtb_addr": base,
    }
    p.regions = _regions(
        ("device tree", base, h.constants["dtb_size"], "dtb", "for the firmware, at RAM base")
    )
    p.fw_cfg = fw_cfg_items(
        rules.fw_cfg_keys, p.facts, ("kernel", "initrd", "cmdline"), inp.cmdline
    )
    return p


# -- ppc64 pseries, s390x, riscv64 ----------------------------------------------------------


def elf_load_size(path: Path) -> int | None:
    """Sum of the PT_LOAD segments' memory sizes: what QEMU's load_elf returns."""
    loads = elf_loads(path)
    return None if loads is None else sum(size for _, size in loads)


def elf_loads(path: Path) -> list[tuple[int, int]] | None:
    """(physical address, memory size) of each PT_LOAD segment of a 64-bit ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:
                return None
            e = "<" if head[5] == 1 else ">"
            (phoff,) = struct.unpack_from(e + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(e + "HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return None
    loads = []
    for i in range(phnum):
        (kind,) = struct.unpack_from(e + "I", table, i * phentsize)
        if kind == 1:  # PT_LOAD: p_paddr at 24, p_memsz at 40
            paddr, _, memsz = struct.unpack_from(e + "QQQ", table, i * phentsize + 24)
            loads.append((paddr, memsz))
    return loads


def place_ppc_spapr(h: Handoff, inp: BootInputs, rules: HandoffRules) -> Placement:
    c = h.constants
    p = Placement((0, inp.memory_mib * MiB))
    kernel = c["kernel_addr"]
    size = inp.kernel_size
    if inp.image is not None and inp.image.format is ImageFormat.ELF and inp.kernel_path:
        size = elf_load_size(inp.kernel_path) or size
    elif inp.image is not None:
        p.warnings.append(f"the kernel is {inp.image.format}: pseries wants an ELF vmlinux")
    initrd = (kernel + size + 0x1FFFF) & ~0xFFFF if size is not None else None
    fw = inp.firmware_blob.stat().st_size if inp.firmware_blob else c["firmware_max"]
    p.facts = {
        "kernel_addr": kernel,
        "kernel_size": size,
        "initrd_addr": initrd,
        "initrd_size": inp.initrd_size,
    }
    p.regions = _regions(
        ("SLOF", 0, fw, "firmware", "Open Firmware; runs first"),
        ("vmlinux segments", kernel, size, "kernel", "ELF PT_LOAD sizes incl. BSS"),
        ("initrd", initrd, inp.initrd_size, "initrd", "after the kernel + 64 KiB, aligned"),
    )
    return p


def place_s390_ipl(h: Handoff, inp: BootInputs, rules: HandoffRules) -> Placement:
    c = h.constants
    ram = inp.memory_mib * MiB
    p = Placement((0, ram))
    initrd = c["initrd_start"]
    while inp.kernel_size is not None and inp.kernel_size + c["initrd_step"] > initrd:
        initrd += c["initrd_step"]
    bios = (min(ram, c["bios_limit"]) - c["bios_window"]) & ~0xFFFF
    cmd = len(inp.cmdline.encode()) + 1
    p.facts = {
        "kernel_addr": 0,
        "kernel_size": inp.kernel_size,
        "kernel_entry": c["kernel_entry"],
        "cmdline_addr": c["cmdline_addr"],
        "cmdline_size": cmd,
        "initrd_addr": initrd,
        "initrd_size": inp.initrd_size,
        "bios_addr": bios,
    }
    if inp.kernel_size is None:
        p.assumptions.append("kernel size unknown: the initrd may move up past 8 MiB")
    p.regions = _regions(
        ("kernel image", 0, inp.kernel_size, "kernel", "entry 0x10000"),
        ("command line", c["cmdline_addr"], cmd, "cmdline", "in the kernel's parameter area"),
        ("initrd", initrd, inp.initrd_size, "initrd", "8 MiB, or the next MiB past the kernel"),
        ("s390-ccw BIOS", bios, c["bios_window"], "firmware", "loaded; not run with -kernel"),
    )
    return p


def place_riscv_virt(h: Handoff, inp: BootInputs, rules: HandoffRules) -> Placement:
    c = h.constants
    base, ram = c["ram_base"], inp.memory_mib * MiB
    p = Placement((base, base + ram))
    fw = inp.firmware_blob.stat().st_size if inp.firmware_blob else None
    if inp.image is not None and inp.image.compression:
        p.warnings.append(
            f"the kernel is {inp.image.compression}-compressed: QEMU 7.2's"
            " RISC-V loader needs it uncompressed"
        )
    kernel = _align_up(base + (fw or 1), c["kernel_align"])
    initrd = kernel + min(ram // 2, c["initrd_window"])
    top = min(base + ram, c["dtb_limit"]) if base < c["dtb_limit"] else base + ram
    dtb = (top - c["dtb_size"]) // c["dtb_align"] * c["dtb_align"]
    footprint = inp.image.image.image_size if inp.image and inp.image.image else None
    p.facts = {
        "ram_base": base,
        "kernel_addr": kernel,
        "kernel_size": inp.kernel_size,
        "initrd_addr": initrd,
        "initrd_size": inp.initrd_size,
        "dtb_addr": dtb,
    }
    p.regions = _regions(
        ("OpenSBI", base, fw, "firmware", "fw_dynamic, M-mode"),
        ("Image", kernel, inp.kernel_size, "kernel", "next 2 MiB boundary after OpenSBI"),
        ("image_size footprint", kernel, footprint or None, "footprint", "Image + BSS"),
        ("initrd", initrd, inp.initrd_size, "initrd", "kernel + min(RAM/2, 128 MiB)"),
        ("device tree", dtb, c["dtb_size"], "dtb", "top of RAM below 3 GiB"),
    )
    return p


def place_mips_malta(h: Handoff, inp: BootInputs, rules: HandoffRules) -> Placement:
    c = h.constants
    ram = inp.memory_mib * MiB
    p = Placement((0, ram))
    size, kernel = inp.kernel_size, c["kernel_addr"]
    loads = elf_loads(inp.kernel_path) if inp.kernel_path else None
    if inp.image is not None and inp.image.format is ImageFormat.ELF and loads:
        kernel = min(a for a, _ in loads) & c["kseg0_mask"]  # kseg0 -> physical
        size = max((a & c["kseg0_mask"]) + s for a, s in loads) - kernel
    elif inp.image is not None:
        p.warnings.append(f"the kernel is {inp.image.format}: Malta wants an ELF vmlinux")
    low = min(ram, c["ram_low_max"])  # the initrd goes at the top of the low 256 MiB
    initrd = None
    if inp.initrd_size:
        initrd = _align_up(low - inp.initrd_size - c["bootmem_reserve"], c["initrd_align"])
        if size is not None and kernel + size >= initrd:
            p.warnings.append("memory too small for the initrd: QEMU would refuse to start")
    p.facts = {
        "kernel_addr": kernel,
        "kernel_size": size,
        "initrd_addr": initrd,
        "initrd_size": inp.initrd_size,
        "env_addr": c["env_addr"],
        "bootloader_addr": c["bootloader_addr"],
    }
    p.regions = _regions(
        ("prom env + argv", c["env_addr"], c["env_size"], "cmdline", "YAMON-style environment"),
        ("vmlinux segments", kernel, size, "kernel", "ELF PT_LOAD, kseg0 -> physical"),
        ("initrd", initrd, inp.initrd_size, "initrd", "top of low RAM - 128 KiB, 64 KiB-aligned"),
    )
    return p


PLACEMENTS: dict[str, Callable[[Handoff, BootInputs, HandoffRules], Placement]] = {
    "x86": place_x86,
    "x86-uefi": place_x86,
    "arm-virt": place_arm_virt,
    "arm-virt-uefi": place_arm_uefi,
    "ppc-spapr": place_ppc_spapr,
    "s390-ipl": place_s390_ipl,
    "riscv-virt": place_riscv_virt,
    "mips-malta": place_mips_malta,
}


def place(h: Handoff, inp: BootInputs, rules: HandoffRules | None = None) -> Placement:
    """Where the pieces of a direct kernel boot go for hand-off ``h``."""
    return PLACEMENTS[h.placement](h, inp, rules or load_handoff_rules())
