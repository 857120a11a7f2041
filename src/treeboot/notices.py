"""One-line notices for the user (a fallback taken, a KVM probe's verdict), sent through
logging: the library never prints. The command line shows them on stderr as
``treeboot: MESSAGE``; a program using the API gets them from the ``treeboot.notice`` logger
(without a handler of its own, logging's last-resort handler prints them to stderr).
"""

from __future__ import annotations

import logging

LOGGER_NAME = "treeboot.notice"
_log = logging.getLogger(LOGGER_NAME)


def notice(message: str) -> None:
    """Tell the user something worth knowing that is not an error."""
    _log.warning(message)
