"""Output helpers for the ``_cli_*`` modules: JSON on stdout, notices and progress on stderr."""

from __future__ import annotations

import functools
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


@functools.cache
def stderr_console() -> Console:
    """The rich console on stderr, created on first use (rich costs ~20 ms to import)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def __getattr__(name: str) -> Any:
    if name == "stderr":  # the module attribute this used to be
        return stderr_console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def notice(message: str) -> None:
    """A one-line notice for the user on stderr (never on stdout, which may carry JSON)."""
    stderr_console().print(f"treeboot: {message}", markup=False)


def progress_enabled(quiet: bool = False) -> bool:
    """Progress bars only on a terminal, never when stderr is piped."""
    return not quiet and sys.stderr.isatty()
