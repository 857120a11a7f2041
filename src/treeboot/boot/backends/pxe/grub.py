"""GRUB configs for the Secure Boot chain (shim -> the tree's signed GRUB): pure functions.

GRUB splits words like a shell (``'...'`` is literal, ``$`` expands outside single quotes),
then rebuilds the kernel command line itself, putting double quotes around a word with a space
(``grub_create_loader_cmdline``). So each argument goes in *unquoted* and single-quoted for
GRUB: ``'key=a b'`` reaches the kernel as ``"key=a b"``, which it reads as ``key`` = ``a b``.
Writing the kernel's own ``key="a b"`` here would reach it as ``key=\\"a b\\"`` (cobbler#1777).
"""

from __future__ import annotations

from collections.abc import Sequence

from treeboot.boot.backends.pxe.entry import Choice, LocalBoot
from treeboot.errors import UsageError
from treeboot.prepare.cmdline import quote_karg

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,:/=+@%~")


def quote_grub_word(word: str) -> str:
    if any(c in word for c in "\n\r\0"):
        raise UsageError(f"{word!r} cannot be written in a GRUB config (newline or NUL)")
    if word and all(c in _PLAIN for c in word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def quote_grub_cmdline(args: Sequence[str]) -> str:
    """Arguments for GRUB's ``linux`` command (checked as kernel arguments first)."""
    for a in args:
        quote_karg(a)  # refuses what no loader can pass (double quotes, tabs)
    return " ".join(quote_grub_word(a) for a in args if a)


def render_grub_stub() -> str:
    """The ``grub.cfg`` at GRUB's prefix on TFTP: go on with this MAC's own config.

    Debian's signed GRUB has no ``http`` module (and loads no unsigned module under Secure
    Boot), so its kernel, initrd and per-MAC config come over TFTP from the same server.
    """
    return "set timeout=0\nconfigfile $prefix/treeboot/${net_default_mac}.cfg\n"


def render_grub_cfg(choice: Choice) -> str:
    """The per-MAC config: the installer (kernel/initrd paths on GRUB's root), or local boot."""
    if isinstance(choice, LocalBoot):
        return f"echo 'treeboot: local boot ({choice.reason})'\nexit\n"
    args = quote_grub_cmdline(choice.cmdline)
    return (
        "set timeout=0\n"
        f"menuentry {quote_grub_word(choice.label)} {{\n"
        f"  linux {quote_grub_word(choice.kernel_url)} {args}\n"
        f"  initrd {quote_grub_word(choice.initrd_url)}\n"
        "}\n"
    )
