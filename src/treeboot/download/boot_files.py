"""The kernel and initrd a boot uses: fetched from the location (verified, cached), or local
files the user gave in their place (``--kernel ./file``). One path for ``install``,
``explain`` and every backend, so that they verify and cache alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from treeboot.download.fetch import fetch
from treeboot.errors import UsageError
from treeboot.model import FetchResult


def local_file(spec: str | None) -> Path | None:
    """``--kernel``/``--initrd`` name a local file when absolute, ``./``- or ``~``-relative."""
    if spec is None or not spec.startswith(("/", "./", "../", "~")):
        return None
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        raise UsageError(f"{spec}: no such file", hint="give an existing kernel/initrd file")
    return path


@dataclass(frozen=True)
class BootFiles:
    """The two files to boot; ``result`` is None when both were local files (nothing fetched)."""

    kernel: Path
    initrd: Path
    result: FetchResult | None
    local_kernel: Path | None = None
    local_initrd: Path | None = None


def fetch_boot_files(
    location: str,
    *,
    kernel: str | None = None,
    initrd: str | None = None,
    arch: str | None = None,
    insecure: bool = False,
    require_signature: bool = False,
    keyring: Path | None = None,
    progress: bool | None = None,
) -> BootFiles:
    """Fetch what the location's identification names, except what ``kernel``/``initrd``
    give as local files (paths inside the tree are fetched and verified like the rest)."""
    local_kernel, local_initrd = local_file(kernel), local_file(initrd)
    if local_kernel and local_initrd:
        return BootFiles(local_kernel, local_initrd, None, local_kernel, local_initrd)
    result = fetch(
        location,
        arch=arch,
        kernel=None if local_kernel else kernel,
        initrd=None if local_initrd else initrd,
        insecure=insecure,
        require_signature=require_signature,
        keyring=keyring,
        progress=progress,
    )
    return BootFiles(
        local_kernel or result.kernel.path,
        local_initrd or result.initrd.path,
        result,
        local_kernel,
        local_initrd,
    )
