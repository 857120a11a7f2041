"""Keyboard to the guest's serial port, for ``--console attach`` on a terminal.

Output is not read here: the watcher copies the console *log* to the terminal, so nothing is
lost before this connects. This end only sends keystrokes to QEMU's serial socket (and drains
what QEMU writes to it, so the guest never blocks on a full socket). The terminal is put in
raw mode, so Ctrl-C reaches the guest; Ctrl-] detaches the keyboard and restores the terminal
(the VM keeps running, and a Ctrl-C then interrupts treeboot).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import termios
import tty
from pathlib import Path
from typing import Any

DETACH = b"\x1d"  # Ctrl-]


class KeyboardForwarder:
    def __init__(self, serial_socket: Path, *, stdin_fd: int | None = None) -> None:
        self.serial_socket = serial_socket
        self.fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        self.sock: socket.socket | None = None
        self.saved: list[Any] | None = None
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
        self.saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd)
        mode = termios.tcgetattr(self.fd)
        mode[1] |= termios.OPOST  # keep "\n" -> "\r\n" on output: the log is printed as is
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)
        loop.add_reader(self.fd, self._on_key)
        loop.add_reader(sock.fileno(), self._drain)
        return True

    def _on_key(self) -> None:
        try:
            data = os.read(self.fd, 1024)
        except OSError:
            data = b""
        if not data or DETACH in data:
            data = data.split(DETACH, 1)[0]
            self._send(data)
            self.stop()
            sys.stderr.write("\r\ntreeboot: keyboard detached (Ctrl-C stops the VM)\r\n")
            return
        self._send(data)

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
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            self.saved = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
