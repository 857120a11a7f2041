"""What QEMU 7.2's x86 loader (hw/i386/x86.c ``x86_load_linux``) puts in fw_cfg for
``-kernel``/``-initrd``/``-append``, computed before boot and checked against QEMU's own
``-trace 'fw_cfg*'`` (:mod:`treeboot.boot.tracing`). The kernel file decides the path:

- a bzImage ("HdrS" at 0x202, the classic form): the boot protocol's setup/kernel split,
  entered through the ``linuxboot_dma.bin`` option ROM and the kernel's real-mode setup;
- an ELF vmlinux with the PVH entry note (the fast form): ``load_elfboot`` copies the ELF's
  loadable segments into guest RAM itself, and ``pvh.bin`` jumps to the note's address.

On both the initrd goes at the top of the room below ``initrd_max``; QEMU stops with "initrd
is too large" when it does not fit, and :func:`predict_fw_cfg` refuses it first (BootError).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from treeboot.artifacts._binfmt import PT_LOAD, elf64_segments, pvh_entry
from treeboot.artifacts.kernel import read_kernel
from treeboot.errors import BootError, KernelImageError, LocationError

# QEMU 7.2 pc_machine_class_init: ACPI tables (0x20000) + 0x8000 shared with option ROMs;
# x86_load_linux keeps the initrd below (RAM below 4 GiB) - acpi_data_size.
ACPI_DATA_SIZE = 0x28000
PVH_HEADER_SIZE = 8192  # x86_load_linux's header[8192]: the PVH path publishes it as setup


def below_4g_mem_size(memory_mib: int, machine: str = "pc") -> int:
    """RAM below 4 GiB on QEMU 7.2's ``pc`` (i440fx) or ``q35`` machine (default options)."""
    ram = memory_mib << 20
    if machine.startswith("q35") or machine.startswith("pc-q35"):
        lowmem = 0x80000000 if ram >= 0xB0000000 else 0xB0000000
    else:  # pc_init1: 3.5 GiB, moved to 3 GiB (gigabyte_align) once RAM has to be split
        lowmem = 0xC0000000 if ram >= 0xE0000000 else 0xE0000000
    return min(ram, lowmem)


def predict_fw_cfg(
    kernel_path: Path,
    initrd_path: Path | None,
    cmdline: str,
    memory_mib: int = 128,
    *,
    machine: str = "pc",
) -> dict[str, Any]:
    """The fw_cfg items QEMU will set for this kernel, initrd and command line.

    KernelImageError for a kernel that is neither a bzImage nor an ELF with the PVH note
    (QEMU boots multiboot kernels too; this models only the Linux paths); BootError for an
    initrd that cannot fit in ``memory_mib``.
    """
    try:
        with open(kernel_path, "rb") as f:
            head = f.read(0x206)
            if head[:4] == b"\x7fELF":
                return _pvh(f, kernel_path, initrd_path, cmdline, memory_mib, machine)
    except OSError as e:
        raise LocationError(f"cannot read {kernel_path}: {e.strerror}") from e
    if head[0x202:0x206] != b"HdrS":  # not a bzImage: no need to parse further
        raise KernelImageError(
            f"{kernel_path} is neither an x86 bzImage nor an ELF vmlinux with a PVH entry note,"
            " the two Linux kernels QEMU's x86 loader boots",
            hint="use the x86 kernel of the tree (vmlinuz, linux, bzImage)",
        )
    return _linuxboot(kernel_path, initrd_path, cmdline, memory_mib, machine)


def _linuxboot(
    kernel_path: Path, initrd_path: Path | None, cmdline: str, memory_mib: int, machine: str
) -> dict[str, Any]:
    """The bzImage path:

    - setup: ``setup_size`` = (setup_sects or 4, + 1) x 512 bytes, at ``setup_addr`` 0x10000
      (boot protocol >= 2.02 and LOADED_HIGH; 0x90000 before);
    - kernel: the rest of the file (``kernel_size`` = file size - setup size) at 0x100000;
    - cmdline: at 0x20000, ``cmdline_size`` = bytes + 1 (the NUL);
    - initrd: ``initrd_max`` = 0xFFFFFFFF if xloadflags has XLF_CAN_BE_LOADED_ABOVE_4G, else
      the header's initrd_addr_max (0x37FFFFFF before protocol 2.03), lowered to
      below_4g_mem_size - ACPI_DATA_SIZE - 1 when it reaches that. QEMU's x86 ``-initrd``
      takes exactly one file.
    """
    image = read_kernel(kernel_path)
    x = image.x86
    assert x is not None  # 'HdrS' is what makes read_kernel read the x86 setup header
    proto = x.protocol
    high = proto >= 0x200 and x.loadflags & 1
    real_addr, cmdline_addr = (0x10000, 0x20000) if high and proto >= 0x202 else (0x90000, None)
    cmdline_bytes = len(cmdline.encode()) + 1
    if cmdline_addr is None:
        cmdline_addr = 0x9A000 - ((cmdline_bytes + 15) & ~15)
    above_4g = proto >= 0x20C and x.xloadflags & 2  # XLF_CAN_BE_LOADED_ABOVE_4G
    below = below_4g_mem_size(memory_mib, machine)
    initrd_max = min(0xFFFFFFFF if above_4g else x.initrd_addr_max, below - ACPI_DATA_SIZE - 1)
    if initrd_path is not None and proto < 0x200:
        raise BootError(f"{kernel_path} is too old (boot protocol {x.boot_protocol}) for an initrd")
    initrd_size, initrd_addr = _place_initrd(initrd_path, initrd_max, memory_mib)
    warnings = []
    if cmdline_bytes - 1 > x.cmdline_size:
        warnings.append(f"the command line has {cmdline_bytes - 1} bytes; the kernel keeps"
                        f" only the first {x.cmdline_size}")  # fmt: skip
    return {
        "machine": machine,
        "memory_mib": memory_mib,
        "below_4g_mem_size": below,
        "option_rom": "genroms/linuxboot_dma.bin",
        "kernel_entry": None,  # the option ROM jumps to the setup's own entry
        "setup_addr": real_addr,
        "setup_size": x.setup_size,
        "kernel_addr": 0x100000 if high else 0x10000,
        "kernel_size": image.size - x.setup_size,
        "cmdline_addr": cmdline_addr,
        "cmdline_size": cmdline_bytes,
        "initrd_max": initrd_max,
        "initrd_addr": initrd_addr,
        "initrd_size": initrd_size,
        "warnings": warnings,
    }


def _pvh(
    f: BinaryIO,
    kernel_path: Path,
    initrd_path: Path | None,
    cmdline: str,
    memory_mib: int,
    machine: str,
) -> dict[str, Any]:
    """The PVH path (``load_elfboot``): the entry is the note's address; ``kernel_addr`` and
    ``kernel_size`` span the loadable segments' physical addresses (``load_elf``'s low and
    high); the first 8 KiB of the file are published as setup data; no command line or setup
    address (pvh.bin places them); ``initrd_max`` is below_4g_mem_size - ACPI_DATA_SIZE - 1
    whatever the kernel says."""
    size = os.fstat(f.fileno()).st_size
    segments = elf64_segments(f, size) or []
    entry = pvh_entry(f, size, segments)
    loads = [s for s in segments if s.type == PT_LOAD and s.memsz]
    if entry is None or not loads:
        raise KernelImageError(
            f"{kernel_path} is an ELF file without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY):"
            " QEMU would stop with 'Error loading uncompressed kernel without PVH ELF Note'",
            hint="boot the bzImage (--boot-form classic)",
        )
    low = min(s.paddr for s in loads)
    high = max(s.paddr + s.memsz for s in loads)
    below = below_4g_mem_size(memory_mib, machine)
    initrd_max = below - ACPI_DATA_SIZE - 1
    initrd_size, initrd_addr = _place_initrd(initrd_path, initrd_max, memory_mib)
    return {
        "machine": machine,
        "memory_mib": memory_mib,
        "below_4g_mem_size": below,
        "option_rom": "genroms/pvh.bin",
        "kernel_entry": entry,
        "setup_addr": None,
        "setup_size": PVH_HEADER_SIZE,
        "kernel_addr": low,
        "kernel_size": high - low,
        "cmdline_addr": None,
        "cmdline_size": len(cmdline.encode()) + 1,
        "initrd_max": initrd_max,
        "initrd_addr": initrd_addr,
        "initrd_size": initrd_size,
        "warnings": [],
    }


def _place_initrd(
    initrd_path: Path | None, initrd_max: int, memory_mib: int
) -> tuple[int | None, int | None]:
    """(size, address) of the initrd, as QEMU places it: ``(initrd_max - size) & ~4095``.
    QEMU refuses an initrd of initrd_max bytes or more: BootError here."""
    if initrd_path is None:
        return None, None
    try:
        size = initrd_path.stat().st_size
    except OSError as e:
        raise LocationError(f"cannot read {initrd_path}: {e.strerror}") from e
    if size >= initrd_max:
        raise BootError(
            f"the initrd {initrd_path} ({size} bytes) does not fit below {initrd_max:#x}"
            f" with {memory_mib} MiB of RAM: QEMU would stop with 'initrd is too large'",
            hint="give the machine more memory (--memory)",
        )
    return size, (initrd_max - size) & ~4095
