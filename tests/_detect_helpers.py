"""Helpers for the detection tests: fixture paths, small tree builders, request-round analysis."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
URLDETECT = SHARED / "fixtures" / "urldetect"


def fixture(rel: str) -> Path:
    """A directory of the shared urldetect fixtures (the test is skipped if they are absent)."""
    path = URLDETECT / rel
    if not path.exists():
        pytest.skip(f"shared fixture {path} not found")
    return path


def mirror_copy(dest: Path, rel: str) -> Path:
    """Copy fixture ``rel`` to ``dest/rel``, turning flattened symlinks back into symlinks.

    The shared fixtures store virtinst's ``installer-arm64 -> installer-amd64/`` symlinks as
    tiny files holding the target; a mirror has real symlinks there.
    """
    src = fixture(rel)
    out = dest / rel
    shutil.copytree(src, out, symlinks=True)
    for f in list(out.rglob("*")):
        if f.is_file() and f.stat().st_size < 64 and f.name.startswith("installer-"):
            target = f.read_text().strip().rstrip("/")
            f.unlink()
            f.symlink_to(target)
    return out


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Create ``root`` with ``files`` (relative path -> content)."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def treeinfo(
    family: str,
    version: str | None,
    arch: str,
    images: Mapping[str, tuple[str, str]],
    *,
    variant: str | None = None,
    checksums: Mapping[str, str] | None = None,
) -> str:
    """A productmd-style ``.treeinfo`` text."""
    lines = ["[header]", "type = productmd.treeinfo", "version = 1.2", "", "[general]"]
    lines += [f"family = {family}", f"arch = {arch}", f"name = {family} {version or ''}"]
    if version is not None:
        lines.append(f"version = {version}")
    if variant:
        lines.append(f"variant = {variant}")
    for section, (kernel, initrd) in images.items():
        lines += ["", f"[images-{section}]", f"kernel = {kernel}", f"initrd = {initrd}"]
    if checksums:
        lines += ["", "[checksums]", *(f"{p} = sha256:{h}" for p, h in checksums.items())]
    return "\n".join(lines) + "\n"


class _Timed(Protocol):
    @property
    def t0(self) -> float: ...

    @property
    def t1(self) -> float: ...


def sequential_rounds(requests: Sequence[_Timed]) -> int:
    """The longest chain of requests each starting after the previous one finished.

    Requests sent concurrently overlap and count once; a request that had to wait for an
    answer before it could be sent adds a round. Measured on the server's own timestamps,
    so it does not depend on how fast the machine is.
    """
    depth: list[int] = []
    ordered = sorted(requests, key=lambda r: r.t0)
    for i, r in enumerate(ordered):
        before = [depth[j] for j in range(i) if ordered[j].t1 <= r.t0]
        depth.append(1 + max(before, default=0))
    return max(depth, default=0)


def paths_of(requests: Iterable[object], prefix: str) -> list[str]:
    return [str(getattr(r, "path", ""))[len(prefix) :] for r in requests]
