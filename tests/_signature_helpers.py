"""Throwaway OpenPGP keys and signed Debian-style trees, made in the test (nothing committed).

``TestKey`` generates an ed25519 key in a private GNUPGHOME with ``gpg --batch --quick-gen-key``
and exports it to a binary keyring file for gpgv. ``make_debian_tree`` lays out a mirror::

    <root>/debian/dists/<suite>/InRelease (or Release + Release.gpg)
    <root>/debian/dists/<suite>/main/installer-<arch>/current/images/SHA256SUMS
    <root>/debian/dists/<suite>/main/installer-<arch>/current/images/netboot/
        debian-installer/<arch>/{linux,initrd.gz}
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from treeboot.devtree import debian_manifest

NETBOOT = "current/images/netboot/debian-installer/{arch}"


@dataclass
class TestKey:
    home: Path
    fingerprint: str
    keyring: Path  # binary keyring for gpgv
    armored: Path  # the same key, ASCII-armored

    __test__ = False  # not a pytest class

    def _gpg(self, *args: str, data: bytes | None = None) -> bytes:
        env = dict(os.environ, GNUPGHOME=str(self.home))
        proc = subprocess.run(
            ["gpg", "--batch", "--yes", "--quiet", "--pinentry-mode", "loopback",
             "--passphrase", "", *args],
            input=data, capture_output=True, env=env, check=False, timeout=60,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode(errors="replace"))
        return proc.stdout

    def clearsign(self, data: bytes, *, digest: str = "SHA256") -> bytes:
        return self._gpg("--digest-algo", digest, "--clearsign", "-u", self.fingerprint, data=data)

    def detach_sign(self, data: bytes) -> bytes:
        return self._gpg("--armor", "--detach-sign", "-u", self.fingerprint, data=data)

    def close(self) -> None:
        env = dict(os.environ, GNUPGHOME=str(self.home))
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)


def make_key(base: Path, name: str = "treeboot test archive") -> TestKey:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (apt-get install gpg)")
    home = base / "gnupg"
    home.mkdir(mode=0o700)
    key = TestKey(home, "", base / "keyring.gpg", base / "keyring.asc")
    key._gpg("--quick-gen-key", f"{name} <archive@example.invalid>", "ed25519", "sign", "never")
    listing = key._gpg("--with-colons", "--list-keys").decode()
    key.fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    key.keyring.write_bytes(key._gpg("--export", key.fingerprint))
    key.armored.write_bytes(key._gpg("--armor", "--export", key.fingerprint))
    return key


def release_text(files: dict[str, bytes], *, suite: str = "bookworm", extra: str = "") -> bytes:
    lines = [
        "Origin: Debian",
        "Label: Debian",
        "Suite: stable",
        f"Codename: {suite}",
        "Date: Sat, 10 Jun 2023 08:53:33 UTC",
        "Architectures: amd64 arm64",
        "Components: main",
        *([extra] if extra else []),
        "SHA256:",
    ]
    for path, data in sorted(files.items()):
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data):>16} {path}")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class DebianTree:
    root: Path  # served directory
    dists: Path  # <root>/debian/dists/<suite>
    location: Path  # <dists>/main/installer-<arch>/
    kernel: str  # relative to location
    initrd: str
    sums: Path


def make_debian_tree(
    root: Path,
    key: TestKey | None,
    *,
    suite: str = "bookworm",
    arch: str = "amd64",
    kernel: bytes = b"kernel-bytes\n" * 100,
    initrd: bytes = b"initrd-bytes\n" * 200,
    mode: str = "inrelease",  # "inrelease" | "detached" | "unsigned" | "none"
    release_extra: str = "",
) -> DebianTree:
    dists = root / "debian" / "dists" / suite
    location = dists / "main" / f"installer-{arch}"
    images = location / "current" / "images"
    netboot = location / NETBOOT.format(arch=arch)
    netboot.mkdir(parents=True)
    (netboot / "linux").write_bytes(kernel)
    (netboot / "initrd.gz").write_bytes(initrd)
    # d-i's own MANIFEST format, written for what this tree holds (as devtree does), so the
    # tree is the same with or without ../shared beside the checkout.
    (images / "MANIFEST").write_text(debian_manifest(images))
    sums = (
        f"{hashlib.sha256(kernel).hexdigest()}  ./netboot/debian-installer/{arch}/linux\n"
        f"{hashlib.sha256(initrd).hexdigest()}  ./netboot/debian-installer/{arch}/initrd.gz\n"
        f"{hashlib.sha256(b'x').hexdigest()}  ./cdrom/vmlinuz\n"
    ).encode()
    (images / "SHA256SUMS").write_bytes(sums)
    listed = {f"main/installer-{arch}/current/images/SHA256SUMS": sums}
    release = release_text(listed, suite=suite, extra=release_extra)
    if mode != "none":
        (dists / "Release").write_bytes(release)
    if key is not None and mode == "inrelease":
        (dists / "InRelease").write_bytes(key.clearsign(release))
    elif key is not None and mode == "detached":
        (dists / "Release.gpg").write_bytes(key.detach_sign(release))
    return DebianTree(
        root=root,
        dists=dists,
        location=location,
        kernel=NETBOOT.format(arch=arch) + "/linux",
        initrd=NETBOOT.format(arch=arch) + "/initrd.gz",
        sums=images / "SHA256SUMS",
    )


class DirReader:
    """A minimal reader over a local directory, for testing the chain without the network."""

    def __init__(self, path: Path | str) -> None:
        self.base = Path(path)
        self.url = str(self.base).rstrip("/") + "/"
        self.reads: list[str] = []

    def read(self, path: str, max_size: int = 1 << 30) -> bytes | None:
        self.reads.append(path)
        target = self.base / path
        if not target.is_file():
            return None
        data = target.read_bytes()
        assert len(data) <= max_size
        return data
