"""The keyboard side of ``--console attach``: Ctrl-] (or the end of input) detaches, the
terminal goes raw and comes back as it was, and which stdin the libvirt console forwards."""

from __future__ import annotations

import os
import pty
import termios
from pathlib import Path

import pytest

from treeboot.boot._console import RawTerminal, split_detach
from treeboot.boot._domain_watch import StreamKeyboard


@pytest.mark.parametrize(
    ("typed", "keys", "detach"),
    [
        (b"\r", b"\r", False),
        (b"ab\x1dcd", b"ab", True),  # Ctrl-]: what follows is not sent
        (b"\x1d", b"", True),
        (b"", b"", True),  # end of input (a pipe closed, a terminal hung up)
    ],
)
def test_ctrl_close_bracket_detaches(typed: bytes, keys: bytes, detach: bool) -> None:
    assert split_detach(typed) == (keys, detach)


def test_raw_terminal_is_restored() -> None:
    leader, follower = pty.openpty()
    try:
        before = termios.tcgetattr(follower)
        term = RawTerminal(follower)
        assert term.enter()
        raw = termios.tcgetattr(follower)
        assert not raw[3] & (termios.ICANON | termios.ECHO | termios.ISIG)  # Ctrl-C is a key
        assert raw[1] & termios.OPOST  # the console log is printed as it is
        term.restore()
        assert termios.tcgetattr(follower) == before
    finally:
        os.close(leader)
        os.close(follower)


def test_a_pipe_is_not_a_terminal_and_stays_as_it_is() -> None:
    r, w = os.pipe()
    try:
        assert not RawTerminal(r).enter()
    finally:
        os.close(r)
        os.close(w)


def test_which_stdin_the_libvirt_console_forwards(tmp_path: Path) -> None:
    r, w = os.pipe()
    leader, follower = pty.openpty()
    devnull = os.open(os.devnull, os.O_RDONLY)
    file = tmp_path / "keys"
    file.write_bytes(b"x")
    regular = os.open(file, os.O_RDONLY)
    try:
        assert StreamKeyboard.wanted(r)  # a pipe
        assert StreamKeyboard.wanted(follower)  # a terminal
        assert not StreamKeyboard.wanted(devnull)  # a background job's stdin
        assert not StreamKeyboard.wanted(regular)
    finally:
        for fd in (r, w, leader, follower, devnull, regular):
            os.close(fd)
