"""Explain a direct kernel boot from QEMU's fw_cfg trace (``--trace-boot``).

With ``-kernel/-initrd/-append`` QEMU does not put the kernel in guest memory itself (on x86):
it publishes the pieces as fw_cfg items, and an option ROM (``genroms/linuxboot_dma.bin``)
run by the firmware copies them into place. QEMU's trace events show both sides:

    fw_cfg_add_i32 key 0x0007 'kernel_addr', value 0x100000       (QEMU publishes)
    fw_cfg_add_bytes key 0x0011 'kernel_data', 8202176 bytes
    fw_cfg_add_file 0x55d8c45d3100 #3: genroms/linuxboot_dma.bin (1536 bytes)
    fw_cfg_select 0x55d8c45d3100 key 0x0011 'kernel_data', ret: 1  (the guest reads)
    serial_update_parameters baudrate=9600 parity='N' data=8 stop=1 (a driver set up the UART)

Lines carry ``PID@SECONDS.MICROS:`` prefixes when QEMU runs with ``-msg timestamp=on``
(:func:`qemu_trace_args`); without it the trace has no times and the report says so.
Keys are QEMU's (include/standard-headers/linux/qemu_fw_cfg.h); files get selector keys
0x20 + their index in the file directory, which this module rebuilds by replaying the
``#index`` insertions exactly as QEMU made them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treeboot.errors import BootError

FILE_FIRST_KEY = 0x20
# The direct-kernel-boot items, as (role, address key, size key, data key).
BOOT_ITEMS = (
    ("setup", 0x16, 0x17, 0x18),
    ("kernel", 0x07, 0x08, 0x11),
    ("initrd", 0x0A, 0x0B, 0x12),
    ("cmdline", 0x13, 0x14, 0x15),
)
OPTION_ROMS = (
    "linuxboot_dma.bin",
    "linuxboot.bin",
    "multiboot_dma.bin",
    "multiboot.bin",
    "pvh.bin",
)
UART_EVENTS = ("serial_update_parameters", "pl011_baudrate_change")
KERNEL_ENTRY = 0x10  # FW_CFG_KERNEL_ENTRY: set on the PVH path (the ELF note's address)
COMPARED = (
    *(f"{role}_{what}" for role, *_ in BOOT_ITEMS for what in ("addr", "size")),
    "kernel_entry",
    "option_rom",
)

_PREFIX = re.compile(r"^(?:(?P<pid>\d+)@(?P<ts>\d+\.\d+):)?(?P<event>[a-z0-9_]+) ?(?P<rest>.*)$")
_ADD_VALUE = re.compile(r"^key 0x(?P<key>[0-9a-f]+) '(?P<name>[^']*)', value (?P<value>.*)$")
_ADD_BYTES = re.compile(r"^key 0x(?P<key>[0-9a-f]+) '(?P<name>[^']*)', (?P<size>\d+) bytes$")
_ADD_FILE = re.compile(r"^\S+ #(?P<index>-?\d+): (?P<name>.*) \((?P<size>-?\d+) bytes\)$")
_SELECT = re.compile(r"^\S+ key 0x(?P<key>[0-9a-f]+) '(?P<name>[^']*)', ret: (?P<ret>-?\d+)$")


@dataclass
class FwCfgItem:
    """One fw_cfg item as QEMU published it."""

    key: int | None  # None: a file whose selector could not be worked out
    name: str  # QEMU's item name ("kernel_size") or the file name ("etc/e820")
    size: int | None = None
    value: int | str | None = None  # from fw_cfg_add_i16/i32/i64/string
    added_at: float | None = None


@dataclass(frozen=True)
class FwCfgSelect:
    """The guest (or QEMU's reset) selected an item; reads of it follow."""

    at: float | None
    key: int
    name: str
    thread: int | None


@dataclass
class BootTrace:
    """What a ``-trace fw_cfg*`` log says about one boot."""

    items: dict[int, FwCfgItem] = field(default_factory=dict)  # by selector key
    files: dict[str, FwCfgItem] = field(default_factory=dict)  # by file name
    selects: list[FwCfgSelect] = field(default_factory=list)
    uart_setups: list[float] = field(default_factory=list)  # times a guest driver set the UART
    events: list[float] = field(default_factory=list)  # every timestamp, in order
    lines: int = 0
    unparsed: int = 0
    reads: int = 0

    @property
    def started_at(self) -> float | None:
        return self.events[0] if self.events else None

    @property
    def timed(self) -> bool:
        return bool(self.events)

    def value(self, key: int) -> int | None:
        item = self.items.get(key)
        return item.value if item is not None and isinstance(item.value, int) else None

    @property
    def cmdline(self) -> str | None:
        item = self.items.get(0x15)
        return item.value if item is not None and isinstance(item.value, str) else None

    @property
    def option_rom(self) -> FwCfgItem | None:
        """The direct-boot option ROM QEMU added (linuxboot_dma.bin on x86)."""
        for rom in OPTION_ROMS:
            item = self.files.get(f"genroms/{rom}")
            if item is not None:
                return item
        return None

    def first_select(self, key: int) -> FwCfgSelect | None:
        return next((s for s in self.selects if s.key == key and s.thread is not None), None) or (
            next((s for s in self.selects if s.key == key), None)
        )

    def read_window(self, key: int) -> tuple[float, float | None] | None:
        """(selected, next selection) for the guest's first read of ``key``, or None without
        times. With the DMA interface the copy happens in between; after the last selection
        the end is unknown (None)."""
        sel = self.first_select(key)
        if sel is None or sel.at is None:
            return None
        start = sel.at
        later = [s.at for s in self.selects if s.at is not None and s.at > start]
        return start, (later[0] if later else None)

    def uart_after(self, t: float | None) -> float | None:
        """The first UART set-up at or after ``t``: the kernel's serial console starting."""
        return next((u for u in self.uart_setups if t is None or u >= t), None)

    def to_json(self) -> dict[str, Any]:
        """Values keyed like treeboot.artifacts.kernel.predict_fw_cfg, plus what the guest read."""
        d: dict[str, Any] = {}
        for role, addr, size, _ in BOOT_ITEMS:
            d[f"{role}_addr"] = self.value(addr)
            d[f"{role}_size"] = self.value(size)
        rom = self.option_rom
        d["kernel_entry"] = self.value(KERNEL_ENTRY)
        d["cmdline"] = self.cmdline
        d["option_rom"] = rom.name if rom else None
        t0 = self.started_at
        for role, _, _, data in BOOT_ITEMS:
            w = self.read_window(data)
            d[f"{role}_read_at"] = round(w[0] - t0, 6) if w and t0 is not None else None
        d["files"] = {n: f.size for n, f in self.files.items()}
        return d


# -- parsing --------------------------------------------------------------------------------


def _number(text: str) -> int | str:
    text = text.strip()
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1]
    try:
        return int(text, 0)
    except ValueError:
        return text


def _item(trace: BootTrace, key: int, name: str) -> FwCfgItem:
    item = trace.items.get(key)
    if item is None:
        item = trace.items[key] = FwCfgItem(key, name)
    return item


def _parse_event(trace: BootTrace, order: list[str], event: str, rest: str, at: float | None,
                 thread: int | None) -> bool:  # fmt: skip
    if event == "fw_cfg_read":
        trace.reads += 1
        return True
    if event in UART_EVENTS:
        if at is not None:
            trace.uart_setups.append(at)
        return True
    if event in ("fw_cfg_add_i16", "fw_cfg_add_i32", "fw_cfg_add_i64", "fw_cfg_add_string"):
        m = _ADD_VALUE.match(rest)
        if m:
            item = _item(trace, int(m["key"], 16), m["name"])
            item.value, item.added_at = _number(m["value"]), at
        return m is not None
    if event == "fw_cfg_add_bytes":
        m = _ADD_BYTES.match(rest)
        if m:
            item = _item(trace, int(m["key"], 16), m["name"])
            item.size, item.added_at = int(m["size"]), item.added_at or at
        return m is not None
    if event == "fw_cfg_add_file":
        m = _ADD_FILE.match(rest)
        if m:
            index = int(m["index"])
            order.insert(max(0, min(index, len(order))), m["name"])
            trace.files[m["name"]] = FwCfgItem(None, m["name"], int(m["size"]), None, at)
        return m is not None
    if event == "fw_cfg_select":
        m = _SELECT.match(rest)
        if m:
            trace.selects.append(FwCfgSelect(at, int(m["key"], 16), m["name"], thread))
        return m is not None
    return False


def parse_fw_cfg_lines(lines: list[str]) -> BootTrace:
    """Parse the lines of a QEMU ``-trace fw_cfg* -D FILE`` log (see module docstring)."""
    trace = BootTrace()
    order: list[str] = []  # the fw_cfg file directory, rebuilt from the insertions
    main_pid: int | None = None
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip() or line.startswith("#"):  # comments: committed excerpts
            continue
        trace.lines += 1
        m = _PREFIX.match(line)
        if m is None:
            trace.unparsed += 1
            continue
        at = float(m["ts"]) if m["ts"] else None
        pid = int(m["pid"]) if m["pid"] else None
        main_pid = main_pid if main_pid is not None else pid
        if at is not None:
            trace.events.append(at)
        # QEMU's main thread adds items and resets the device; guest accesses come from a
        # vCPU thread (a different id in the prefix).
        thread = pid if pid is not None and pid != main_pid else None
        if not _parse_event(trace, order, m["event"], m["rest"], at, thread):
            trace.unparsed += 1
    _assign_file_keys(trace, order)
    return trace


def _assign_file_keys(trace: BootTrace, order: list[str]) -> None:
    for index, name in enumerate(order):
        item = trace.files[name]
        item.key = FILE_FIRST_KEY + index
    by_key = {f.key: f.name for f in trace.files.values() if f.key is not None}
    trace.selects = [
        FwCfgSelect(s.at, s.key, by_key.get(s.key, s.name), s.thread) if s.name == "unknown" else s
        for s in trace.selects
    ]


def parse_fw_cfg_trace(path: Path) -> BootTrace:
    """Parse a trace file written by QEMU (``-trace fw_cfg* -D path``)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise BootError(
            f"cannot read the boot trace {path}: {e.strerror}",
            hint="run with --trace-boot so QEMU writes it",
        ) from e
    return parse_fw_cfg_lines(text.splitlines())


def qemu_trace_args(trace_file: Path) -> list[str]:
    """QEMU arguments that write the trace this module reads, with timestamps."""
    args = ["-trace", "fw_cfg_add_*", "-trace", "fw_cfg_select"]
    for event in UART_EVENTS:
        args += ["-trace", event]
    return [*args, "-D", str(trace_file), "-msg", "timestamp=on"]


# -- the report -----------------------------------------------------------------------------


def _rel(t: float | None, t0: float | None) -> str:
    return f"+{t - t0:.3f} s" if t is not None and t0 is not None else "?"


def _hex(v: int | str | None) -> str:
    return "?" if v is None else v if isinstance(v, str) else f"{v:#x}"


def _item_lines(trace: BootTrace) -> list[str]:
    t0 = trace.started_at
    out = []
    rom = trace.option_rom
    if rom is not None:
        sel = trace.first_select(rom.key) if rom.key is not None else None
        when = f", read by the firmware at {_rel(sel.at, t0)}" if sel and sel.at else ""
        out.append(f"  option ROM  {rom.name} ({rom.size} bytes){when}")
    else:
        out.append("  option ROM  none (QEMU loaded the kernel itself, or no -kernel)")
    entry = trace.value(KERNEL_ENTRY)
    if entry is not None:
        out.append(f"  entry       {entry:#x} (the vmlinux's PVH note: the ROM jumps there)")
    if all(trace.value(a) is None and trace.value(n) is None for _, a, n, _ in BOOT_ITEMS):
        out.append("  kernel, initrd and command line did not go through fw_cfg (QEMU put them")
        out.append("  in guest memory itself, as on arm/riscv 'virt' without firmware)")
        return out
    for role, addr, size, data in BOOT_ITEMS:
        a, n = trace.value(addr), trace.value(size)
        if a is None and n is None:
            out.append(f"  {role:<10}  not set")
            continue
        w = trace.read_window(data)
        if w is not None:
            took = f" ({(w[1] - w[0]) * 1000:.1f} ms)" if w[1] is not None else ""
            when = f"read at {_rel(w[0], t0)}{took}"
        elif trace.first_select(data) is not None:
            when = "read by the guest"
        else:
            when = "not read by the guest"
        text = f": {trace.cmdline!r}" if role == "cmdline" and trace.cmdline is not None else ""
        out.append(f"  {role:<10}  {n if n is not None else '?'} bytes at {_hex(a)}, {when}{text}")
    return out


def _serial_lines(
    trace: BootTrace, serial_log: Path | None, first_output_at: float | None
) -> list[str]:
    t0 = trace.started_at
    kernel = trace.read_window(0x11)
    source = "as the caller saw it"
    at = first_output_at
    if at is None:
        at = trace.uart_after(kernel[0] if kernel else None)
        source = "when the guest's serial driver set up the UART"
    out = []
    if at is not None and t0 is not None:
        after = f", {at - kernel[0]:.3f} s after the kernel was read" if kernel else ""
        out.append(f"  first serial output at {_rel(at, t0)}{after} ({source})")
    elif not trace.timed:
        out.append("  no times: run QEMU with -msg timestamp=on (see qemu_trace_args)")
    if serial_log is not None:
        first = _first_line(serial_log)
        out.append(f"  first console line: {first!r}" if first else "  the console log is empty")
    return out


def _first_line(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for _ in range(1000):
                line = f.readline()
                if not line:
                    return None
                if line.strip():
                    return line.strip()[:160]
    except OSError:
        return None
    return None


def compare_prediction(trace: BootTrace, prediction: Mapping[str, Any]) -> list[str]:
    """Mismatches between the trace and treeboot.artifacts.kernel.predict_fw_cfg (empty: agree)."""
    seen = trace.to_json()
    out = []
    for key in COMPARED:
        want, got = prediction.get(key), seen.get(key)
        if want is None or got is None or want == got:
            continue
        out.append(f"{key}: QEMU set {_hex(got)}, predicted {_hex(want)}")
    return out


def _prediction_lines(trace: BootTrace, prediction: Mapping[str, Any] | None) -> list[str]:
    if prediction is None:
        return []
    compared = [k for k in COMPARED if prediction.get(k) is not None]
    seen = trace.to_json()
    checked = [k for k in compared if seen.get(k) is not None]
    bad = compare_prediction(trace, prediction)
    out = []
    if not checked:
        out.append("  prediction: nothing to compare (the trace has no direct-boot items)")
    elif bad:
        out.append(f"  prediction: {len(bad)} of {len(checked)} values differ:")
        out += [f"    {b}" for b in bad]
    else:
        out.append(f"  prediction: all {len(checked)} values agree ({', '.join(checked)})")
    setup = trace.value(0x17)
    bzimage = prediction.get("kernel_entry") is None  # PVH publishes an 8 KiB header instead
    setup_agrees = not any(b.startswith("setup_size") for b in bad)
    if bzimage and setup_agrees and setup is not None and setup % 512 == 0:
        out.append(f"    setup_size {setup} = (setup_sects {setup // 512 - 1} + 1) x 512")
    out += [f"  warning: {w}" for w in prediction.get("warnings", []) or []]
    return out


def render_trace_report(
    trace: BootTrace,
    prediction: Mapping[str, Any] | None,
    serial_log: Path | None = None,
    *,
    first_output_at: float | None = None,
) -> str:
    """A short text report: what QEMU published, when the guest read it, when the console
    started, and whether it matches ``prediction`` (treeboot.artifacts.kernel.predict_fw_cfg).

    ``first_output_at`` is the host time (epoch seconds, same clock as the trace) the first
    byte reached the serial console, when the caller watched it; else the trace's first UART
    set-up after the kernel was read stands for it.
    """
    head = "Direct kernel boot (QEMU fw_cfg trace"
    head += ", times from the first event):" if trace.timed else "):"
    lines = [head, *_item_lines(trace)]
    lines += _serial_lines(trace, serial_log, first_output_at)
    lines += _prediction_lines(trace, prediction)
    if trace.unparsed:
        lines.append(f"  ({trace.unparsed} of {trace.lines} trace lines not understood)")
    return "\n".join(lines) + "\n"
