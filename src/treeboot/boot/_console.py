"""Keyboard to the guest's serial port, for ``--console attach`` on a terminal.

(This is QEMU's side; with ``--connect`` the keys go into the libvirt console stream instead,
see ``_domain_watch.StreamKeyboard``, with the same raw terminal and the same Ctrl-].)

Output is not read here: the watcher copies the console *log* to the terminal, so nothing is
lost before this connects. This end only sends keystrokes to QEMU's serial socket (and drains
what QEMU writes to it, so the guest never blocks on a full socket). The terminal is put in
raw mode, so Ctrl-C reaches the guest; Ctrl-] detaches the keyboard and restores the terminal
(the VM keeps running, and a Ctrl-C then interrupts treeboot).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import termios
import tty
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

DETACH = b"\x1d"  # Ctrl-]
ATTACHED = "treeboot: console attached; Ctrl-] detaches the keyboard\r\n"
DETACHED = "\r\ntreeboot: keyboard detached (Ctrl-C stops the VM)\r\n"


def split_detach(data: bytes) -> tuple[bytes, bool]:
    """The keys to send, and whether the user asked to detach (Ctrl-], or end of input)."""
    if not data:
        return b"", True
    keys, found, _ = data.partition(DETACH)
    return keys, bool(found)


class RawTerminal:
    """A terminal in raw mode (Ctrl-C and Ctrl-Z go to the guest), restored by :meth:`restore`;
    nothing happens when ``fd`` is not a terminal (a pipe)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: list[Any] | None = None

    def enter(self) -> bool:
        """True if ``fd`` is a terminal, now raw."""
        if not os.isatty(self.fd):
            return False
        self.saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd)
        mode = termios.tcgetattr(self.fd)
        mode[1] |= termios.OPOST  # keep "\n" -> "\r\n" on output: the log is printed as is
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)
        return True

    def restore(self) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            self.saved = None


class KeyboardForwarder:
    def __init__(self, serial_socket: Path, *, stdin_fd: int | None = None) -> None:
        self.serial_socket = serial_socket
        self.fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        self.sock: socket.socket | None = None
        self.terminal = RawTerminal(self.fd)
        self.loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def wanted(stdin_fd: int | None = None) -> bool:
        fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        with contextlib.suppress(OSError, ValueError):
            return os.isatty(fd)
        return False

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.serial_socket))
        except OSError:
            sock.close()
            return False
        sock.setblocking(False)
        self.sock, self.loop = sock, loop
        self.terminal.enter()
        loop.add_reader(self.fd, self._on_key)
        loop.add_reader(sock.fileno(), self._drain)
        return True

    def _on_key(self) -> None:
        try:
            data = os.read(self.fd, 1024)
        except OSError:
            data = b""
        keys, detach = split_detach(data)
        self._send(keys)
        if detach:
            self.stop()
            sys.stderr.write(DETACHED)

    def _send(self, data: bytes) -> None:
        if data and self.sock is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                self.sock.send(data)

    def _drain(self) -> None:
        if self.sock is None:
            return
        try:
            if not self.sock.recv(65536):
                self.stop()
        except BlockingIOError:
            pass
        except OSError:
            self.stop()

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.remove_reader(self.fd)
            if self.sock is not None:
                self.loop.remove_reader(self.sock.fileno())
            self.loop = None
        self.terminal.restore()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# -- what the guest may do to the user's terminal ------------------------------------------

# C0 controls passed through: BEL BS HT LF VT FF CR SO SI (SO/SI: the line-drawing set).
_C0_KEPT = frozenset(b"\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f")
# CSI finals that only draw: cursor moves, erase, scroll, SGR colours, modes, insert/delete.
# Dropped: n (device status report), c (device attributes), t (window ops, title reports),
# q and p variants (DECRQSS-like requests): anything that makes the terminal answer, since an
# answer is typed into whatever reads the terminal next.
_CSI_KEPT = frozenset(b"@ABCDEFGHIJKLMPSTXZ`abdefghlmrsu")
# ESC + one byte: charset selection (ESC ( 0 is line drawing), save/restore cursor, keypad
# modes, index/reverse index, next line; ESC Z (identify) and ESC c (reset) are dropped.
_ESC_KEPT = frozenset(b"78=>DEM")
_ESC, _CSI_START, _STRING_STARTS = 0x1B, ord("["), frozenset(b"]PX^_")


class TerminalFilter:
    """Guest console bytes made safe for the user's terminal (``--console attach``).

    Text, UTF-8 and the sequences an installer draws with (colours, cursor, line drawing)
    pass; OSC/DCS/APC/PM/SOS strings (window title, OSC 52 clipboard writes, hyperlinks),
    requests that make the terminal answer, ENQ and other controls are dropped. Stateful: a
    sequence may straddle two reads of the console log.
    """

    def __init__(self) -> None:
        self._pending = b""  # an unfinished escape sequence
        self._in_string = False  # inside OSC/DCS/...: dropped up to ST or BEL

    def feed(self, data: bytes) -> bytes:
        data, self._pending = self._pending + data, b""
        out = bytearray()
        i, n = 0, len(data)
        while i < n:
            if self._in_string:
                end = _string_end(data, i)
                if end < 0:
                    self._pending = b"\x1b" if data.endswith(b"\x1b") else b""
                    return bytes(out)
                self._in_string, i = False, end
                continue
            b = data[i]
            if b != _ESC:
                if b >= 0x20 or b in _C0_KEPT:
                    out.append(b)
                i += 1
                continue
            if i + 1 >= n:
                self._pending = data[i:]
                break
            nxt = data[i + 1]
            if nxt in _STRING_STARTS:
                self._in_string, i = True, i + 2
            elif nxt == _CSI_START:
                j = i + 2
                while j < n and 0x20 <= data[j] <= 0x3F:  # parameters, intermediates
                    j += 1
                if j >= n:
                    self._pending = data[i:]
                    break
                if data[j] in _CSI_KEPT and 0x40 <= data[j] <= 0x7E:
                    out += data[i : j + 1]
                i = j + 1
            elif nxt in b"()*+":  # charset designation: ESC ( X
                if i + 2 >= n:
                    self._pending = data[i:]
                    break
                out += data[i : i + 3]
                i += 3
            else:
                if nxt in _ESC_KEPT:
                    out += data[i : i + 2]
                i += 2
        return bytes(out)


def _string_end(data: bytes, start: int) -> int:
    """The index after the terminator (BEL or ESC \\) of a control string, or -1."""
    for j in range(start, len(data)):
        if data[j] == 0x07:
            return j + 1
        if data[j] == _ESC and j + 1 < len(data) and data[j + 1] == ord("\\"):
            return j + 2
    return -1
