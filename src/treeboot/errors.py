"""One error hierarchy. Every error says what was tried and, in ``hint``, what to do.

Only :mod:`treeboot.cli.main` turns these into messages and exit codes.
"""

from __future__ import annotations


class TreebootError(Exception):
    """Base of every error treeboot raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(TreebootError):
    """The command line or API call is wrong (exit 2)."""

    exit_code = 2


class LocationError(TreebootError):
    """A location cannot be opened or read (unreachable host, bad scheme, I/O error)."""

    exit_code = 4


class StallError(LocationError):
    """A server stopped answering: a request or transfer timed out."""


class MetadataError(TreebootError):
    """A metadata file exists but is malformed, oversized or hostile."""

    exit_code = 3


class DetectionError(TreebootError):
    """The location was read but is not an installable tree or medium we can identify."""

    exit_code = 3

    def __init__(
        self, message: str, *, tried: list[str] | None = None, hint: str | None = None
    ) -> None:
        self.tried = list(tried or [])
        if self.tried:
            message = message + "\n  looked for: " + ", ".join(self.tried)
        super().__init__(message, hint=hint)


class IsoError(DetectionError):
    """An ISO image is damaged, truncated or not an ISO9660 image."""


class FetchError(TreebootError):
    """Downloading an artifact failed."""

    exit_code = 5


class ChecksumMismatch(FetchError):
    """Downloaded bytes do not match the checksum the tree publishes (or the user pinned)."""

    exit_code = 6


class SignatureError(TreebootError):
    """A signature chain is missing, broken or does not verify."""

    exit_code = 6


class KernelImageError(TreebootError):
    """A file is not the kernel or initrd format it was expected to be."""

    exit_code = 3


class UnattendedError(TreebootError):
    """An unattended-install file cannot be generated or is invalid."""

    exit_code = 2


class BootError(TreebootError):
    """The machine could not be prepared or started."""

    exit_code = 7


class MissingToolError(BootError):
    """A required host program is missing; the message names its Debian package."""
