"""Backends render a :class:`treeboot.plan.BootPlan` with pure functions (QEMU argv today)."""

from treeboot.backends.qemu import render_qemu_argv

__all__ = ["render_qemu_argv"]
