"""Backends render a :class:`treeboot.boot.plan.BootPlan` with pure functions (QEMU argv today)."""

from treeboot.boot.backends.qemu import render_qemu_argv

__all__ = ["render_qemu_argv"]
