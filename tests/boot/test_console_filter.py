"""``--console attach`` (issue 10, case 13): the guest's bytes reach the user's terminal only
through :class:`TerminalFilter` -- what an installer draws with passes, what would act on the
terminal (title, clipboard, answers typed back as input) does not."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from treeboot.boot._console import TerminalFilter
from treeboot.boot.plan import ConsoleMode
from treeboot.boot.watch import WatchOptions, _Watcher

DRAWING = (
    b"\x1b[0;37;44m\x1b[2J\x1b[1;1H\x1b(0lqqk\x1b(B Select a language \x1b[?25l\x1b[K"
    b"caf\xc3\xa9 \xe2\x94\x80\r\n\x0e\x0f\ttab\x1b7\x1b8"
)
HOSTILE = {
    "title": b"\x1b]0;pwned\x07",
    "clipboard": b"\x1b]52;c;ZWNobyBwd25lZA==\x1b\\",
    "hyperlink": b"\x1b]8;;http://evil/\x1b\\",
    "dcs": b"\x1bP$qm\x1b\\",
    "status report": b"\x1b[6n",
    "device attributes": b"\x1b[c",
    "window report": b"\x1b[21t",
    "identify": b"\x1bZ",
    "reset": b"\x1bc",
    "enq": b"\x05",
}


def test_drawing_passes_unchanged() -> None:
    assert TerminalFilter().feed(DRAWING) == DRAWING


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_sequences_are_dropped(name: str) -> None:
    got = TerminalFilter().feed(b"before " + HOSTILE[name] + b" after")
    assert got == b"before  after", got


def test_sequences_straddling_reads() -> None:
    data = DRAWING + HOSTILE["clipboard"] + b"end" + HOSTILE["title"] + DRAWING
    want = DRAWING + b"end" + DRAWING
    for size in (1, 2, 3, 7):
        f = TerminalFilter()
        out = b"".join(f.feed(data[i : i + size]) for i in range(0, len(data), size))
        assert out == want, size


def test_attached_console_is_filtered(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"Debian installer " + HOSTILE["clipboard"] + HOSTILE["status report"] + b"ok")
    out = io.BytesIO()
    watcher = _Watcher(0, log, 0, WatchOptions(ConsoleMode.ATTACH), None, out)
    watcher._read_console()
    assert out.getvalue() == b"Debian installer ok"
