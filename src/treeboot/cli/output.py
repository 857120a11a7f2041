"""Human output of the command line: JSON on stdout, notices and progress on stderr."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from treeboot.download.progress import progress_enabled, stderr_console
from treeboot.model import redact_text
from treeboot.notices import LOGGER_NAME

__all__ = ["emit_json", "install_notice_handler", "notice", "progress_enabled", "stderr_console"]


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def notice(message: str) -> None:
    """A one-line notice for the user on stderr (never on stdout, which may carry JSON)."""
    line = f"treeboot: {redact_text(message)}"
    stderr_console().print(line, markup=False, soft_wrap=True)  # one line, no password


class _NoticeHandler(logging.Handler):
    """Library notices (:mod:`treeboot.notices`) printed like the CLI's own, through the
    rich console so that they never tear a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        notice(record.getMessage())


def install_notice_handler() -> None:
    """Route the library's notices to stderr (once per process, however often main() runs)."""
    log = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _NoticeHandler) for h in log.handlers):
        log.addHandler(_NoticeHandler())
    log.propagate = False
