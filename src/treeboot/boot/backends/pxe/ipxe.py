"""iPXE scripts (https://ipxe.org/scripting): pure functions, checked against golden files.

iPXE expands ``${setting}`` in the whole line, then splits it at whitespace with no quoting
at all, and ``kernel`` joins the words after the image with single spaces. So the kernel's own
quoting (``key="a b"``) passes through unchanged as long as no run of spaces is in a value;
``${`` and runs of whitespace cannot be expressed and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from treeboot.boot.backends.pxe.entry import BootEntry, Choice, LocalBoot
from treeboot.errors import UsageError
from treeboot.prepare.cmdline import quote_karg

INITRD_NAME = "initrd.img"  # the name iPXE gives the initrd; the EFI stub finds it by initrd=


def quote_ipxe_word(word: str) -> str:
    """One word (or kernel argument) as iPXE will hand it on: it must survive the split."""
    if "${" in word or "  " in word or any(c in word for c in "\t\n\r\0"):
        raise UsageError(
            f"{word!r} cannot be written in an iPXE script",
            hint="iPXE expands ${...} and collapses runs of spaces; drop them from the argument",
        )
    return word


def quote_ipxe_cmdline(args: Sequence[str]) -> str:
    """The kernel cmdline for iPXE's ``kernel`` command: the kernel's quoting, checked."""
    return " ".join(quote_ipxe_word(quote_karg(a)) for a in args if a)


def render_ipxe_chain(base_url: str) -> str:
    """What ``/boot.ipxe`` without a MAC answers: come back with the MAC (one hop, no loop)."""
    return f"#!ipxe\nchain --autofree {base_url}boot.ipxe?mac=${{net0/mac}}\n"


def render_ipxe_script(choice: Choice) -> str:
    """The per-MAC script: boot the installer, or leave iPXE for the next boot device."""
    if isinstance(choice, LocalBoot):
        return f"#!ipxe\necho treeboot: local boot ({choice.reason})\nexit\n"
    return "#!ipxe\n" + _entry_lines(choice) + "boot\n"


def _entry_lines(entry: BootEntry) -> str:
    args = quote_ipxe_cmdline([f"initrd={INITRD_NAME}", *entry.cmdline])
    return (
        f"echo treeboot: {_label(entry.label)}\n"
        f"kernel {quote_ipxe_word(entry.kernel_url)} {args}\n"
        f"initrd --name {INITRD_NAME} {quote_ipxe_word(entry.initrd_url)}\n"
    )


def render_ipxe_menu(entries: Sequence[BootEntry], *, timeout_s: int = 10) -> str:
    """``--menu``: one item per location, the first as the default, then local boot."""
    lines = ["#!ipxe", "menu treeboot"]
    for i, e in enumerate(entries):
        lines.append(f"item e{i} {_label(e.label)}")
    lines += ["item local Boot from local disk",
              f"choose --default e0 --timeout {timeout_s * 1000} target && goto ${{target}}",
              "goto local"]  # fmt: skip
    for i, e in enumerate(entries):
        lines += [f":e{i}", *_entry_lines(e).splitlines(), "boot"]
    lines += [":local", "exit"]
    return "\n".join(lines) + "\n"


def _label(text: str) -> str:
    """Display text: no setting expansion, one line."""
    return " ".join(text.replace("${", "$ {").split())
