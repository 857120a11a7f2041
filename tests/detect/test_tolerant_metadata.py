"""A MANIFEST or SHA256SUMS with junk around the real lines (issue 10, cases 6 and 7): parse
what is valid and skip the rest. A missing entry still means unverified, a wrong one still
fails the fetch, and a signed SHA256SUMS with junk lines still vouches for its real entries."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from _signature_helpers import TestKey, make_debian_tree, make_key, release_text
from treeboot.detect.identify import identify
from treeboot.errors import ChecksumMismatch
from treeboot.model import Verified
from treeboot.store.cache import Cache

KERNEL = b"kernel-bytes\n" * 100
INITRD = b"initrd-bytes\n" * 200
NETBOOT = "./netboot/debian-installer/amd64/"
JUNK_MANIFEST = b"\xff\xfe\x00binary junk without a separator\n"


def junk_sums(entries: bytes) -> bytes:
    bsd = f"SHA256 (netboot/mini.iso) = {hashlib.sha256(b'iso').hexdigest()}\n".encode()
    return (
        b"These are the checksums of the installer images.\n\n"
        + bsd
        + b"abc123  ./netboot/short-hash\n"
        + b"\xe9t\xe9 \xff\xfe caf\xe9\x00\n\n"
        + entries
        + b"\n-- end of file --\n"
    )


def sums_line(data: bytes, name: str) -> bytes:
    return f"{hashlib.sha256(data).hexdigest()}  {NETBOOT}{name}\n".encode()


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestKey]:
    k = make_key(tmp_path_factory.mktemp("key"))
    yield k
    k.close()


def junk_tree(
    root: Path, sums: bytes, key: TestKey | None = None, *, manifest_junk: bool = False
) -> str:
    """A Debian tree whose SHA256SUMS is ``sums`` (listed in a Release signed by ``key``, if
    given) and, with ``manifest_junk``, whose MANIFEST has non-UTF-8 bytes and a junk line;
    its URL."""
    tree = make_debian_tree(root, None, mode="none", kernel=KERNEL, initrd=INITRD)
    images = tree.sums.parent
    manifest = images / "MANIFEST"
    if manifest_junk:
        text = manifest.read_bytes() if manifest.is_file() else b""
        text = text.replace(b"Linux kernel", b"Linux kernel \xe9\xff (\xa0build\xa1)", 1)
        junk_line = b"netboot/debian-installer/amd64/linux -- Linux kernel \xc3\x28 for netboot\n"
        manifest.write_bytes(text + JUNK_MANIFEST + junk_line)
    tree.sums.write_bytes(sums)
    if key is not None:
        release = release_text({"main/installer-amd64/current/images/SHA256SUMS": sums})
        (tree.dists / "InRelease").write_bytes(key.clearsign(release))
    return str(tree.location) + "/"


def good_sums() -> bytes:
    return junk_sums(sums_line(KERNEL, "linux") + sums_line(INITRD, "initrd.gz"))


def test_manifest_with_non_utf8_bytes_and_a_junk_line_is_a_debian_tree(tmp_path: Path) -> None:
    ident = identify(junk_tree(tmp_path, good_sums(), manifest_junk=True))
    assert ident.os and ident.os.startswith("debian"), ident
    assert ident.installer == "debian-installer"


def test_sha256sums_with_junk_keeps_its_valid_entries(tmp_path: Path) -> None:
    ident = identify(junk_tree(tmp_path, good_sums()))
    assert ident.verified == Verified.SHA256
    assert ident.checksums[ident.kernel or ""] == "sha256:" + hashlib.sha256(KERNEL).hexdigest()


def test_signed_sha256sums_with_junk_still_vouches(tmp_path: Path, key: TestKey) -> None:
    ident = identify(junk_tree(tmp_path, good_sums(), key), keyring=key.keyring)
    assert ident.verified == Verified.SIGNED_CHAIN, ident.extra.get("signature")


def test_missing_entry_is_unverified_and_a_wrong_one_fails(tmp_path: Path) -> None:
    from treeboot.download.fetch import fetch

    missing = junk_sums(sums_line(INITRD, "initrd.gz"))  # no kernel line
    ident = identify(junk_tree(tmp_path / "a", missing))
    assert ident.kernel not in ident.checksums
    wrong = junk_sums(sums_line(b"not the kernel", "linux") + sums_line(INITRD, "initrd.gz"))
    with pytest.raises(ChecksumMismatch):
        fetch(junk_tree(tmp_path / "b", wrong), cache=Cache(tmp_path / "cache"), progress=False)
