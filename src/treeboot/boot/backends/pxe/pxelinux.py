"""pxelinux configs: the ``APPEND`` line goes to the kernel as it is written.

So the kernel's own quoting is the right one (``key="a b"``), and nothing else is escaped.
"""

from __future__ import annotations

from treeboot.boot.backends.pxe.entry import Choice, LocalBoot
from treeboot.prepare.cmdline import join_cmdline


def render_pxelinux_cfg(choice: Choice) -> str:
    if isinstance(choice, LocalBoot):
        say = f"treeboot: local boot ({choice.reason})"
        return f"DEFAULT local\nLABEL local\n  SAY {say}\n  LOCALBOOT 0\n"
    append = join_cmdline(["initrd=" + choice.initrd_url, *choice.cmdline])
    return f"DEFAULT install\nLABEL install\n  KERNEL {choice.kernel_url}\n  APPEND {append}\n"
