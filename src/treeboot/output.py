"""Output helpers for the ``_cli_*`` modules: JSON on stdout, notices and progress on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

stderr = Console(stderr=True, highlight=False)


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def notice(message: str) -> None:
    """A one-line notice for the user on stderr (never on stdout, which may carry JSON)."""
    stderr.print(f"treeboot: {message}", markup=False)


def progress_enabled(quiet: bool = False) -> bool:
    """Progress bars only on a terminal, never when stderr is piped."""
    return not quiet and sys.stderr.isatty()
