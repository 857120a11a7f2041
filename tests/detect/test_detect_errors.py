"""Malformed, truncated and hostile metadata give clean errors; overrides; nothing found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _detect_helpers import fixture, treeinfo, write_tree
from treeboot.detect.identify import identify, identify_location
from treeboot.errors import DetectionError, MetadataError, UsageError
from treeboot.locate.open import open_location

PXE = ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img")


def _tree(tmp_path: Path, text: str | bytes) -> str:
    write_tree(tmp_path, {".treeinfo": text})
    return str(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "this is not an ini file\nkernel = x\n",
        "[general\nfamily = Fedora\n",
        "[general]\nfamily = Fedora\n[general]\n[images-x86_64\nkernel=x",
    ],
    ids=["no-section", "broken-header", "truncated-header"],
)
def test_bad_ini_is_a_metadata_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(MetadataError) as e:
        identify(_tree(tmp_path, text))
    assert ".treeinfo" in e.value.message and e.value.exit_code == 3


def test_truncated_treeinfo(tmp_path: Path) -> None:
    full = (fixture("fedora/30") / ".treeinfo").read_text()
    text = full[:300]  # cut mid-line
    with pytest.raises(MetadataError, match=r"line \d+: 'images/"):
        identify(_tree(tmp_path, text))
    cut = full[: full.index("[general]")]  # only whole lines: no image section is left
    with pytest.raises(MetadataError, match="images"):
        identify(_tree(tmp_path, cut))


def test_binary_treeinfo(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="binary"):
        identify(_tree(tmp_path, os.urandom(512) + b"\0"))


@pytest.mark.parametrize(
    "kernel", ["../../../etc/passwd", "/boot/vmlinuz", "images/../../x", "C:/vmlinuz"]
)
def test_image_paths_outside_the_tree(tmp_path: Path, kernel: str) -> None:
    text = treeinfo("Fedora", "37", "x86_64", {"x86_64": (kernel, PXE[1])})
    with pytest.raises(MetadataError) as e:
        identify(_tree(tmp_path, text))
    assert ".treeinfo" in e.value.message


def test_missing_initrd_key(tmp_path: Path) -> None:
    text = "[general]\nfamily = Fedora\nversion = 37\narch = x86_64\n[images-x86_64]\nkernel = k\n"
    with pytest.raises(MetadataError, match="no initrd"):
        identify(_tree(tmp_path, text))


def test_huge_treeinfo_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / ".treeinfo"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB of nothing
    with open_location(str(tmp_path)) as loc, pytest.raises(MetadataError) as e:
        identify_location(loc)
    assert "more than" in e.value.message and e.value.exit_code == 3
    assert loc.bytes_transferred < 1 << 20


def test_html_everywhere_is_not_a_tree(tmp_path: Path) -> None:
    page = "<html><body>Welcome to our mirror!</body></html>\n"
    files = {p: page for p in (".treeinfo", "current/images/MANIFEST", ".disk/info", "content",
                               "VERSION", ".alpine-release", "media.1/products")}
    write_tree(tmp_path, files)
    with pytest.raises(DetectionError):
        identify(str(tmp_path))


def test_hostile_sha256sums_lines_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "bookworm" / "main" / "installer-amd64"
    sums = "\n".join(["not a checksum", "ab  ./short", "0" * 64 + "  ../../../etc/passwd",
                      "1" * 64 + "  ./netboot/debian-installer/amd64/linux"]) + "\n"
    write_tree(root, {"current/images/MANIFEST": "netboot/debian-installer -- PXE\n",
                      "current/images/SHA256SUMS": sums})
    ident = identify(str(root))
    assert ident.checksums == {
        "current/images/netboot/debian-installer/amd64/linux": "sha256:" + "1" * 64
    }


def test_nothing_recognised_lists_every_probe(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("just a directory\n")
    with pytest.raises(DetectionError) as e:
        identify(str(tmp_path))
    err = e.value
    for probe in (".treeinfo", "treeinfo", "current/images/MANIFEST", "daily/MANIFEST",
                  ".disk/info", "content", "media.1/products", "VERSION", ".alpine-release",
                  "arch/boot/x86_64/vmlinuz-linux"):
        assert probe in err.tried
        assert probe in str(err)
    assert err.hint and "installer-<arch>" in err.hint and "--kernel" in err.hint
    assert err.exit_code == 3


def test_arch_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DetectionError, match="not aarch64") as e:
        identify(str(fixture("fedora/30")), arch="aarch64")
    assert e.value.hint and "--arch x86_64" in e.value.hint
    with pytest.raises(DetectionError, match="not s390x"):
        identify(str(fixture("debian/buster/main/installer-amd64")), arch="s390x")
    with pytest.raises(DetectionError, match="offers"):
        identify(str(fixture("suse/SLES-10-SP4-DVD-x86_64-GM-DVD1.iso")), arch="aarch64")


def test_unknown_arch_in_disk_info() -> None:
    with pytest.raises(DetectionError, match="architecture") as e:
        identify(str(fixture("debian/debian-8.10.0-badarch-netinst.iso")))
    assert e.value.hint and "--arch" in e.value.hint


# -- --kernel / --initrd ------------------------------------------------------------------------


def test_overrides_make_an_unknown_tree_usable(tmp_path: Path) -> None:
    write_tree(tmp_path, {"boot/bzImage": b"k", "boot/rootfs.cpio": b"i"})
    ident = identify(str(tmp_path), kernel="boot/bzImage", initrd="./boot/rootfs.cpio",
                     arch="amd64")
    assert ident.os is None and ident.known_to_database is False
    assert (ident.kernel, ident.initrd, ident.arch) == ("boot/bzImage", "boot/rootfs.cpio",
                                                        "x86_64")
    assert "detection" in ident.extra


def test_overrides_on_a_known_tree_keep_the_os(tmp_path: Path) -> None:
    ident = identify(str(fixture("fedora/30")), kernel="images/pxeboot/vmlinuz",
                     initrd="images/other.img")
    assert ident.os == "fedora30"
    assert (ident.kernel, ident.initrd) == ("images/pxeboot/vmlinuz", "images/other.img")
    assert list(ident.checksums) == ["images/pxeboot/vmlinuz"]  # only what the tree publishes
    assert ident.extra["overridden"] == ["kernel", "initrd"]


def test_overrides_also_rescue_malformed_metadata(tmp_path: Path) -> None:
    ident = identify(_tree(tmp_path, "[broken\n"), kernel="k", initrd="i")
    assert (ident.os, ident.kernel) == (None, "k")


def test_one_override_is_not_enough_for_an_unknown_tree(tmp_path: Path) -> None:
    with pytest.raises(DetectionError):
        identify(str(tmp_path), kernel="vmlinuz")


@pytest.mark.parametrize("bad", ["../vmlinuz", "/boot/vmlinuz", "", "a\0b"])
def test_override_paths_are_checked(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError):
        identify(str(tmp_path), kernel=bad, initrd="initrd")
