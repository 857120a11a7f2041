"""Stage 5, explain: the hand-off from firmware to kernel, with evidence.

Takes: a location (or kernel/initrd files) and install options. Gives: an
:class:`~treeboot.explain.chain.Explanation` (memory map, fw_cfg items, hand-off steps) as text,
JSON or SVG, from the per-arch facts in ``rules/handoff.toml``.
May import: ``boot`` and everything below it.
"""

from treeboot.explain.chain import ExplainRequest, Explanation, explain
from treeboot.explain.text import format_explanation

__all__ = ["ExplainRequest", "Explanation", "explain", "format_explanation"]
