"""Human-readable reports of kernel and initrd facts: the ``to_json()`` dicts of
:mod:`~treeboot.artifacts.kernel` and :mod:`~treeboot.artifacts.initrd`, as text.

The formatter lives with the data it formats, so ``inspect`` (the CLI) and ``explain`` share it.
"""

from __future__ import annotations

from typing import Any

# Rows of the human output of a kernel: (JSON key, label, how to show the value).
_KERNEL_ROWS: tuple[tuple[str, str, str], ...] = (
    ("kernel_banner", "version string", "s"),
    ("compression", "compression", "s"),
    ("boot_protocol", "boot protocol", "s"),
    ("setup_size", "real-mode setup", "bytes"),
    ("protected_mode_size", "protected mode", "bytes"),
    ("payload_length", "payload", "bytes"),
    ("loadflags_names", "loadflags", "list"),
    ("relocatable", "relocatable", "s"),
    ("kernel_alignment", "kernel alignment", "hex"),
    ("xloadflags_names", "xloadflags", "list"),
    ("init_size", "init_size", "hex"),
    ("pref_address", "pref_address", "hex"),
    ("initrd_addr_max", "initrd_addr_max", "hex"),
    ("cmdline_size", "cmdline_size", "s"),
    ("text_offset", "text_offset", "hex"),
    ("image_size", "image_size", "hex"),
    ("endianness", "endianness", "s"),
    ("page_size", "page size", "s"),
    ("physical_placement", "placement", "s"),
    ("header_version", "header version", "s"),
    ("elf_class", "ELF class", "s"),
    ("type", "ELF type", "s"),
    ("entry", "entry", "hex"),
)


def _show(value: Any, how: str) -> str:
    if how == "hex":
        return f"{value:#x}"
    if how == "bytes":
        return f"{value} bytes"
    if how == "list":
        return " ".join(value) or "-"
    return str(value)


def format_kernel(d: dict[str, Any]) -> str:
    version = f", Linux {d['kernel_version']}" if d.get("kernel_version") else ""
    lines = [f"{d['path']}: {d['format']}, {d['arch'] or 'unknown arch'}{version}"]
    for key, label, how in _KERNEL_ROWS:
        if d.get(key) is not None:
            lines.append(f"  {label:<17}{_show(d[key], how)}")
    if zboot := d.get("zboot"):
        lines.append(
            f"  {'zboot payload':<17}{zboot['compression']}, {zboot['payload_size']} bytes"
            f" at {zboot['payload_offset']:#x}"
        )
    if pe := d.get("pe"):
        sections = " ".join(s["name"] for s in pe["sections"])
        lines.append(
            f"  {'PE/COFF':<17}{pe['machine'] or hex(pe['machine_code'])}, {pe['subsystem']},"
            f" sections {sections}"
        )
    return "\n".join(lines)


def format_initrd(d: dict[str, Any]) -> str:
    about = [f"{d['size']} bytes", d["arch"] or "unknown arch"]
    if d["kernel_version"]:
        about.append(f"modules for {d['kernel_version']}")
    lines = [f"{d['path']}: initrd, " + ", ".join(about)]
    for i, seg in enumerate(d["segments"], 1):
        length = "?" if seg["length"] is None else seg["length"]
        entries = "? entries" if seg["entries"] is None else f"{seg['entries']} entries"
        text = f"  segment {i}: offset {seg['offset']}, {length} bytes, {seg['compression']}"
        if seg["compression"] != "none" and seg["decompressed_size"] is not None:
            text += f" -> {seg['decompressed_size']} bytes"
        text += f", {entries}"
        if seg["early_microcode"]:
            text += " (early microcode)"
        lines.append(text)
        if seg["note"]:
            lines.append(f"    note: {seg['note']}")
    return "\n".join(lines)
