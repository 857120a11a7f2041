"""The boot chain of an :class:`~treeboot.explain.chain.Explanation` as text, for people."""

from __future__ import annotations

import textwrap

from treeboot.explain.chain import Explanation
from treeboot.explain.handoff import FwCfgItem


def human_size(n: int | None) -> str:
    if n is None:
        return "? bytes"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return (
                f"{value:.0f} {unit}"
                if value >= 100 or value == int(value)
                else (f"{value:.1f} {unit}")
            )
    return f"{n} bytes"


def _wrap(text: str, indent: str = "  ", hang: str = "  ") -> list[str]:

    out = textwrap.wrap(text, 96, initial_indent=indent, subsequent_indent=indent + hang)
    return out or [indent]


def _artifact_lines(ex: Explanation) -> list[str]:
    ident = ex.identification
    lines = ["What is fetched"]
    if ex.location:
        about = f"  ({ident.os or '?'}, {ident.installer or 'unknown installer'})" if ident else ""
        lines.append(f"  location  {ex.location}{about}")
    if ident and ident.evidence:
        lines.append(f"  identified from {', '.join(ident.evidence)}")
    for a in ex.artifacts:
        lines.append(f"  {a.role:<9} {a.source}")
        digest = f", sha256 {a.sha256[:16]}..." if a.sha256 else ""
        lines.append(f"            {a.size if a.size is not None else '?'} bytes{digest}")
        lines += _wrap(f"verified: {a.verified} -- {a.how}", " " * 12, "")
        if a.path and a.path != a.source:
            cached = " (cache hit)" if a.from_cache else ""
            lines.append(f"            local file {a.path}{cached}")
    return lines


def _fw_cfg_lines(items: list[FwCfgItem]) -> list[str]:
    if not items:
        return []
    lines = ["", "fw_cfg items QEMU publishes (key, name, value or data size)"]
    for item in items:
        key = f"{item.key:#06x}" if item.key is not None else "file  "
        if isinstance(item.value, int):
            shown = f"{item.value:#x}" if item.name.endswith("_addr") else str(item.value)
        elif item.size is not None or item.value is None:
            shown = f"{item.size if item.size is not None else '?'} bytes"
        else:
            shown = ""
        if isinstance(item.value, str):
            shown += f" {item.value[:60]!r}{'...' if len(item.value) > 60 else ''}"
        lines.append(f"  {key}  {item.name:<26} {shown.strip()}")
    return lines


def _memory_lines(ex: Explanation) -> list[str]:
    p = ex.placement
    lines = ["", f"Guest memory (RAM {p.ram[0]:#x}-{p.ram[1]:#x}), who puts what where"]
    if not p.regions:
        lines.append("  (nothing is placed before the firmware runs: it chooses at run time)")
    for r in sorted(p.regions, key=lambda r: (r.start, -r.size)):
        span = f"{r.start:#010x}-{r.end - 1:#010x}"
        lines.append(f"  {span}  {human_size(r.size):>9}  {r.name:<22} {r.detail}")
    return lines


def format_explanation(ex: Explanation) -> str:
    """The human-readable explanation (``treeboot explain`` without ``--json``)."""
    from treeboot.artifacts.report import format_kernel
    from treeboot.boot.backends.qemu import format_argv

    h = ex.handoff
    lines = [f"Boot chain: {ex.title}, backend {ex.backend}, {ex.memory_mib} MiB", ""]
    lines += _artifact_lines(ex)
    lines += ["", "Kernel"]
    if ex.image is not None:
        lines += ["  " + line for line in format_kernel(ex.image.to_json()).splitlines()]
    else:
        lines.append("  header not read (not fetched, or not a format treeboot parses)")
    size = len(ex.cmdline_text.encode()) + 1
    limit = f", the kernel keeps {ex.image.x86.cmdline_size}" if ex.image and ex.image.x86 else ""
    lines += ["", f"Kernel command line ({size} bytes with the NUL{limit})"]
    lines += _wrap(ex.cmdline_text or "(empty)", "  ", "")
    lines += ["", "QEMU command (as treeboot install runs it)", "  " + format_argv(ex.argv)]
    if ex.boot_form is not None:
        f = ex.boot_form
        lines += ["", f"Boot form: {f.form} (kernel {f.kernel}, initrd {f.initrd})"]
        lines += _wrap(f"why: {f.reason}", "  ", "    ")
        lines += _wrap(f"hand-off: {f.handoff}", "  ", "    ")
    lines += ["", f"Firmware: {h.firmware}; loader: {h.loader}"]
    if ex.firmware_path:
        lines.append(f"  firmware file {ex.firmware_path}")
    lines += _wrap(h.loader_how, "  ", "")
    lines += _fw_cfg_lines(ex.placement.fw_cfg)
    lines += _memory_lines(ex)
    lines += ["", "Hand-off sequence"]
    for i, (a, b, text) in enumerate(ex.sequence, 1):
        lines += _wrap(f"{i}. {a} -> {b}: {text}", "  ", "   ")
    for title, items in (
        ("Notes", ex.notes),
        ("Assumptions", ex.placement.assumptions),
        ("Warnings", ex.warnings),
    ):
        if items:
            lines += ["", title] + [w for item in items for w in _wrap(f"- {item}")]
    return "\n".join(lines)
