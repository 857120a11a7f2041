"""A tiny template renderer: ``string.Template`` plus whole-line conditionals.

Template syntax (files in ``templates/``)::

    @if NAME        keep the following lines when flag NAME is true
    @else
    @endif          (blocks nest)
    $name           substituted by string.Template; a literal dollar is $$

Substituted values are not scanned again, so a crypt hash's ``$6$`` needs no escaping. Values
are validated (options.py) or encoded for the format (JSON for YAML, escaped for XML) by the
caller.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any


@cache
def load_template(name: str) -> str:
    return (resources.files("treeboot.prepare.unattended") / "templates" / name).read_text("utf-8")


@cache
def load_families() -> dict[str, Any]:
    """``templates/families.toml``: installers, kinds, profile packages."""
    return tomllib.loads(load_template("families.toml"))


def _keep_lines(text: str, flags: Mapping[str, bool]) -> str:
    out: list[str] = []
    stack: list[tuple[bool, bool]] = []  # (active before the @if, condition)
    active = True
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        word, _, arg = line.strip().partition(" ")
        if word == "@if":
            cond = flags[arg.strip()]
            stack.append((active, cond))
            active = active and cond
        elif word in ("@else", "@endif"):
            if not stack:
                raise ValueError(f"template line {number}: {word} without @if")
            parent, cond = stack[-1]
            if word == "@else":
                active = parent and not cond
            else:
                stack.pop()
                active = parent
        elif active:
            out.append(line)
    if stack:
        raise ValueError("template: @if without @endif")
    return "".join(out)


def fill(name: str, values: Mapping[str, str], flags: Mapping[str, bool]) -> str:
    """Render template ``name``: drop lines of false ``@if`` blocks, then substitute values."""
    return string.Template(_keep_lines(load_template(name), flags)).substitute(values)
