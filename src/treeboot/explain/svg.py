"""``treeboot explain --svg``: the boot chain as one plain SVG picture (no dependency).

Left: guest memory as a column, high addresses at the top. Each stretch between two region
boundaries gets a height that grows with the log of its size, so a 14-byte command line and
a 40 MiB initrd are both readable while bigger still looks bigger; free RAM is drawn lighter
and lower. Footprints (the memory a kernel needs once decompressed) are a hatched bar beside
the column. Labels sit on the right, pushed apart so they never overlap, with leader lines.

Right: the hand-off as a sequence diagram (actors, lifelines, numbered messages), then the
fw_cfg items QEMU publishes. A legend explains the colours.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from treeboot.explain.handoff import Region

if TYPE_CHECKING:
    from treeboot.explain.chain import Explanation

WIDTH = 1400
MAP_TOP = 150
ADDR_X = 140  # right edge of the address labels
COL_X, COL_W = 150, 190
LANE_X, LANE_W = 346, 14  # footprints
LABEL_X = 382
LABEL_GAP = 44  # three label lines
SEQ_X0, SEQ_X1 = 740, 1380
CHAR_W = 6.3  # average advance of 11 px sans-serif text
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"

KINDS = {  # kind -> (fill, legend text)
    "firmware": ("#f4a261", "firmware / ROM"),
    "stub": ("#e9c46a", "boot stub"),
    "setup": ("#8ecae6", "real-mode setup"),
    "cmdline": ("#ffd166", "command line"),
    "kernel": ("#3a86ff", "kernel image"),
    "footprint": ("#1d3557", "kernel footprint once running"),
    "initrd": ("#80b918", "initrd"),
    "dtb": ("#c77dff", "device tree"),
    "reserved": ("#adb5bd", "reserved"),
    "free": ("#f1f3f5", "free RAM (scale compressed)"),
}


@dataclass
class _Seg:
    start: int
    end: int
    height: float
    main: Region | None  # the region drawn in the column here (None: free RAM)
    y: float = 0.0  # top edge (the segment's end address)


def _text(
    x: float,
    y: float,
    s: str,
    size: float = 11,
    anchor: str = "start",
    weight: str = "normal",
    fill: str = "#212529",
    family: str = FONT,
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-family="{family}" font-size="{size}"'
        f' font-weight="{weight}" fill="{fill}" text-anchor="{anchor}">{escape(s)}</text>'
    )


def _size(n: int) -> str:
    from treeboot.explain.text import human_size

    return human_size(n)


# -- memory map -----------------------------------------------------------------------------


def _height(size: int, used: bool) -> float:
    steps = math.log2(max(size, 4096) / 4096)
    return min(26 + 4.0 * steps, 72) if used else min(14 + 2.2 * steps, 44)


def _segments(ram: tuple[int, int], regions: list[Region]) -> list[_Seg]:
    lo, hi = ram
    main = [r for r in regions if r.kind != "footprint"]
    cuts = {lo, hi}
    for r in regions:
        cuts |= {min(max(r.start, lo), hi), min(max(r.end, lo), hi)}
    points = sorted(cuts)
    segs = []
    for a, b in itertools.pairwise(points):
        owner = next((r for r in main if r.start <= a and r.end >= b), None)
        segs.append(_Seg(a, b, _height(b - a, owner is not None), owner))
    y: float = MAP_TOP
    for seg in reversed(segs):  # high addresses on top
        seg.y = y
        y += seg.height
    return segs


def _span(segs: list[_Seg], r: Region) -> tuple[float, float]:
    inside = [s for s in segs if s.start >= r.start and s.end <= r.end]
    return min(s.y for s in inside), max(s.y + s.height for s in inside)


def _spread(targets: list[float], gap: float, top: float) -> list[float]:
    """Label centres as close to ``targets`` (sorted) as possible, ``gap`` apart."""
    out: list[float] = []
    for t in targets:
        out.append(max(t, out[-1] + gap if out else top))
    return out


def _address_labels(segs: list[_Seg], bottom: float) -> list[str]:
    out, last = [], -100.0
    marks = sorted({(s.y + s.height, s.start) for s in segs} | {(segs[-1].y, segs[-1].end)})
    for y, addr in sorted(marks, key=lambda m: -m[0]):  # bottom-up: low addresses first
        if last - y >= 11 or last < 0:
            out.append(_text(ADDR_X, y + 3.5, f"{addr:#x}", 10, "end", family=MONO))
            out.append(
                f'<line x1="{ADDR_X + 2}" y1="{y:.1f}" x2="{COL_X}" y2="{y:.1f}"'
                ' stroke="#868e96" stroke-width="0.8"/>'
            )
            last = y
    return out


def _column(segs: list[_Seg]) -> list[str]:
    out = []
    for s in segs:
        if s.main is None:
            out.append(
                f'<rect x="{COL_X}" y="{s.y:.1f}" width="{COL_W}" height="{s.height:.1f}"'
                f' fill="{KINDS["free"][0]}" stroke="#ced4da" stroke-dasharray="4 3"/>'
            )
            if s.height >= 14:
                label = f"free · {_size(s.end - s.start)}"
                out.append(
                    _text(
                        COL_X + COL_W / 2,
                        s.y + s.height / 2 + 4,
                        label,
                        10,
                        "middle",
                        fill="#868e96",
                    )
                )
    drawn = {id(s.main): s.main for s in segs if s.main is not None}
    for r in drawn.values():
        y0, y1 = _span(segs, r)
        fill = KINDS.get(r.kind, KINDS["reserved"])[0]
        out.append(
            f'<rect x="{COL_X}" y="{y0:.1f}" width="{COL_W}" height="{y1 - y0:.1f}"'
            f' fill="{fill}" stroke="#343a40" stroke-width="1"/>'
        )
        dark = r.kind in ("kernel", "footprint")
        out.append(
            _text(
                COL_X + COL_W / 2,
                (y0 + y1) / 2 + 4,
                r.name,
                11,
                "middle",
                "bold",
                "#ffffff" if dark else "#212529",
            )
        )
    return out


def _footprints(segs: list[_Seg], regions: list[Region]) -> list[str]:
    out = []
    for r in regions:
        if r.kind == "footprint":
            y0, y1 = _span(segs, r)
            out.append(
                f'<rect x="{LANE_X}" y="{y0:.1f}" width="{LANE_W}" height="{y1 - y0:.1f}"'
                ' fill="url(#hatch)" stroke="#1d3557"/>'
            )
    return out


def _labels(segs: list[_Seg], regions: list[Region]) -> list[str]:
    items = []
    for r in regions:
        y0, y1 = _span(segs, r)
        items.append(((y0 + y1) / 2, r))
    items.sort(key=lambda i: i[0])
    centres = _spread([t for t, _ in items], LABEL_GAP, MAP_TOP + 14)
    out = []
    for (target, r), y in zip(items, centres, strict=True):
        x0 = LANE_X + LANE_W if r.kind == "footprint" else COL_X + COL_W
        out.append(
            f'<polyline points="{x0},{target:.1f} {LABEL_X - 14},{target:.1f}'
            f' {LABEL_X - 4},{y:.1f}" fill="none" stroke="#868e96"/>'
        )
        head = f"{r.name} · {_size(r.size)}"
        out.append(_text(LABEL_X, y - 8, head, 11.5, weight="bold"))
        where = f"{r.start:#x} – {r.end - 1:#x}"
        out.append(_text(LABEL_X, y + 5, where, 10, fill="#343a40", family=MONO))
        detail = r.detail if len(r.detail) <= 60 else r.detail[:59] + "…"
        out.append(_text(LABEL_X, y + 18, detail, 10, fill="#495057"))
    return out


def _above(ex: Explanation) -> str:
    shown = (ex.placement.ram[1] - ex.placement.ram[0]) >> 20
    return f" (+{ex.memory_mib - shown} MiB above 4 GiB)" if shown < ex.memory_mib else ""


def _memory_map(ex: Explanation) -> tuple[list[str], float]:
    p = ex.placement
    out = [
        _text(20, MAP_TOP - 34, "Guest memory", 15, weight="bold"),
        _text(
            20,
            MAP_TOP - 16,
            f"physical addresses, RAM {p.ram[0]:#x}–{p.ram[1]:#x}{_above(ex)};"
            " heights grow with log(size)",
            10.5,
            fill="#495057",
        ),
    ]
    regions = [r for r in p.regions if r.end > p.ram[0] and r.start < p.ram[1]]
    segs = _segments(p.ram, regions)
    bottom = segs[0].y + segs[0].height
    out += _column(segs) + _footprints(segs, regions) + _address_labels(segs, bottom)
    out += _labels(segs, regions)
    if not regions:
        out.append(
            _text(
                COL_X + COL_W + 16,
                MAP_TOP + 20,
                "chosen at run time by the firmware and the EFI stub",
                11,
                fill="#495057",
            )
        )
    label_bottom = MAP_TOP + LABEL_GAP * len(regions) + 20
    return out, max(bottom, label_bottom)


def _legend(ex: Explanation, top: float) -> tuple[list[str], float]:
    kinds = [k for k in KINDS if k == "free" or any(r.kind == k for r in ex.placement.regions)]
    out = [_text(20, top + 14, "Legend", 12, weight="bold")]
    for i, kind in enumerate(kinds):
        x, y = 20 + (i % 3) * 230, top + 26 + (i // 3) * 22
        fill = "url(#hatch)" if kind == "footprint" else KINDS[kind][0]
        out.append(f'<rect x="{x}" y="{y}" width="22" height="14" fill="{fill}" stroke="#343a40"/>')
        out.append(_text(x + 30, y + 11, KINDS[kind][1], 11))
    return out, top + 26 + ((len(kinds) + 2) // 3) * 22


# -- sequence diagram -----------------------------------------------------------------------


def _actor_x(actors: tuple[str, ...]) -> dict[str, float]:
    step = (SEQ_X1 - SEQ_X0) / len(actors)
    return {a: SEQ_X0 + step * (i + 0.5) for i, a in enumerate(actors)}


def _message(n: int, x1: float, x2: float, y: float, text: str) -> tuple[list[str], float]:
    """One numbered message whose label starts at ``y``; returns (svg, next y)."""
    self_msg = x1 == x2
    span = abs(x2 - x1)
    width = 300 if self_msg else max(span - 12, 250)
    lines = textwrap.wrap(f"{n}. {text}", int(width / CHAR_W))
    if self_msg:
        left = x1 + 44 if x1 + 44 + width <= SEQ_X1 else x1 - 44 - width
        anchor_x = left
    else:
        centre = min(max((x1 + x2) / 2, SEQ_X0 + width / 2), SEQ_X1 - width / 2)
        anchor_x = centre - width / 2
    out = [_text(anchor_x, y + 11 + 14 * i, line, 11) for i, line in enumerate(lines)]
    if self_msg:
        ay = y + 6
        out.append(
            f'<path d="M{x1},{ay} h34 v{14 * len(lines) + 4} h-32" fill="none"'
            ' stroke="#212529" stroke-width="1.4" marker-end="url(#arrow)"/>'
        )
        return out, ay + 14 * len(lines) + 22
    ay = y + 14 * len(lines) + 6
    out.append(
        f'<line x1="{x1}" y1="{ay}" x2="{x2 + (-3 if x2 > x1 else 3)}" y2="{ay}"'
        ' stroke="#212529" stroke-width="1.4" marker-end="url(#arrow)"/>'
    )
    return out, ay + 16


def _split_name(name: str, fits: int) -> list[str]:
    """An actor name on one line, or two split after a separator near the middle."""
    if len(name) <= fits:
        return [name]
    cuts = [i + 1 for i, c in enumerate(name) if c in " _.-/"] or [len(name) // 2]
    cut = min(cuts, key=lambda i: abs(i - len(name) / 2))
    return [name[:cut].strip(), name[cut:].strip()]


def _sequence(ex: Explanation) -> tuple[list[str], float]:
    actors = ex.handoff.actors
    xs = _actor_x(actors)
    box_w = min((SEQ_X1 - SEQ_X0) / len(actors) - 8, 120)
    out = [
        _text(SEQ_X0, MAP_TOP - 34, "Hand-off sequence", 15, weight="bold"),
        _text(
            SEQ_X0,
            MAP_TOP - 16,
            f"firmware: {ex.handoff.firmware}; loader: {ex.handoff.loader}",
            10.5,
            fill="#495057",
        ),
    ]
    y: float = MAP_TOP + 44
    body: list[str] = []
    for n, (a, b, text) in enumerate(ex.sequence, 1):
        svg, y = _message(n, xs[a], xs[b], y, text)
        body += svg
    for a, x in xs.items():
        out.append(
            f'<line x1="{x}" y1="{MAP_TOP + 30}" x2="{x}" y2="{y}" stroke="#adb5bd"'
            ' stroke-dasharray="5 4"/>'
        )
        out.append(
            f'<rect x="{x - box_w / 2:.1f}" y="{MAP_TOP}" width="{box_w:.1f}" height="30"'
            ' rx="5" fill="#e9ecef" stroke="#495057"/>'
        )
        lines = _split_name(a, int((box_w - 8) / 6.8))
        for i, line in enumerate(lines):
            y0 = MAP_TOP + 19 + (i - (len(lines) - 1) / 2) * 12
            out.append(_text(x, y0, line, 11 if len(lines) == 1 else 10, "middle", "bold"))
    return out + body, y


def _fw_cfg_box(ex: Explanation, top: float) -> tuple[list[str], float]:
    """One row per published item: selector key, name, size, and where it is copied to."""
    items = ex.placement.fw_cfg
    if not items:
        return [], top
    out = [
        _text(
            SEQ_X0,
            top + 16,
            "fw_cfg items QEMU publishes (what the firmware reads)",
            12,
            weight="bold",
        )
    ]
    addrs = {i.name.removesuffix("_addr"): i.value for i in items if i.name.endswith("_addr")}
    head = ((0, "key"), (60, "data item"), (250, "size"), (340, "its *_addr item"))
    out += [_text(SEQ_X0 + dx, top + 34, t, 10, weight="bold", fill="#495057") for dx, t in head]
    y = top + 50
    for item in items:
        if item.name.endswith(("_addr", "_size")):
            continue
        role = item.name.removesuffix("_data")
        key = f"{item.key:#06x}" if item.key is not None else "file"
        addr = addrs.get(role)
        cells = (
            (0, key),
            (60, item.name),
            (250, _size(item.size) if item.size else "? bytes"),
            (340, f"{addr:#x}" if isinstance(addr, int) else "-"),
        )
        out += [_text(SEQ_X0 + dx, y, text, 10.5, family=MONO) for dx, text in cells]
        y += 15
    if ex.handoff.boot == "uefi":
        out.append(
            _text(
                SEQ_X0,
                y + 4,
                "UEFI ignores the *_addr items: it allocates memory itself",
                10,
                fill="#495057",
            )
        )
        y += 18
    return out, y


# -- the picture ----------------------------------------------------------------------------


_DEFS = """<defs>
<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8"
 orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#212529"/></marker>
<pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse"
 patternTransform="rotate(45)"><rect width="6" height="6" fill="#dee2e6"/>
<line x1="0" y1="0" x2="0" y2="6" stroke="#1d3557" stroke-width="3"/></pattern>
</defs>"""


def _header(ex: Explanation) -> list[str]:
    kernel = ex.image.kernel_version if ex.image and ex.image.kernel_version else "kernel"
    sizes = " · ".join(
        f"{a.role} {_size(a.size) if a.size is not None else '?'}" for a in ex.artifacts
    )
    cmd = ex.cmdline_text if len(ex.cmdline_text) < 150 else ex.cmdline_text[:147] + "..."
    return [
        _text(20, 34, f"Boot chain: {ex.title}, {ex.memory_mib} MiB", 20, weight="bold"),
        _text(
            20,
            56,
            f"{kernel} ({ex.image.format if ex.image else '?'}) · {sizes} · backend {ex.backend}",
            12,
            fill="#495057",
        ),
        _text(20, 74, f"kernel command line: {cmd or '(empty)'}", 11, fill="#495057", family=MONO),
    ]


def render_svg(ex: Explanation) -> str:
    """The explanation as a standalone SVG document."""
    memory, map_bottom = _memory_map(ex)
    legend, legend_bottom = _legend(ex, map_bottom + 16)
    seq, seq_bottom = _sequence(ex)
    fw_cfg, fw_bottom = _fw_cfg_box(ex, seq_bottom + 8)
    height = int(max(legend_bottom, fw_bottom) + 24)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}"'
        f' viewBox="0 0 {WIDTH} {height}">',
        f"<title>{escape('Boot chain: ' + ex.title)}</title>",
        _DEFS,
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        *_header(ex),
        f'<line x1="{SEQ_X0 - 24}" y1="{MAP_TOP - 50}" x2="{SEQ_X0 - 24}" y2="{height - 16}"'
        ' stroke="#dee2e6"/>',
        *memory,
        *legend,
        *seq,
        *fw_cfg,
        "</svg>",
    ]
    return "\n".join(parts) + "\n"
