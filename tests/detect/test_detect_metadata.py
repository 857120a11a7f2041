"""The metadata parsers on real files, and on anything at all (they never crash)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _detect_helpers import fixture
from treeboot.detect import identify as detect
from treeboot.detect.metadata import (
    parse_disk_info,
    parse_mageia_version,
    parse_manifest,
    parse_one_version,
    parse_sha256sums,
    parse_suse_content,
    parse_suse_products,
    parse_version_info,
)
from treeboot.detect.treeinfo import match_treeinfo, parse_treeinfo
from treeboot.errors import DetectionError, MetadataError


def test_manifest() -> None:
    text = (fixture("debian/buster/main/installer-amd64") / "current/images/MANIFEST").read_text()
    m = parse_manifest(text)
    assert m["netboot/debian-installer"] == "PXE boot directory for tftp server"
    assert "cdrom/vmlinuz" in m and len(m) > 100
    assert parse_manifest("<html>\n<body>no</body>\n") == {}


def test_sha256sums() -> None:
    h = "a" * 64
    text = f"{h}  ./netboot/x\n{h.upper()} *bin/y\nbad line\n{'b' * 63}  short\n"
    assert parse_sha256sums(text) == {"netboot/x": h, "bin/y": h}


def test_version_info() -> None:
    info = parse_version_info("Debian version:  12 (bookworm)\nInstaller build: 20230607+deb12u5\n")
    assert info is not None
    assert (info.distro, info.version, info.codename, info.build) == (
        "debian", "12", "bookworm", "20230607+deb12u5")
    assert parse_version_info("hello") is None


@pytest.mark.parametrize(
    ("rel", "name", "version", "codename", "arch_word"),
    [
        ("debian/debian-8.10.0-amd64-netinst.iso", "Debian GNU/Linux", "8.10.0", "jessie",
         "amd64"),
        ("debian/debian-8.10.0-ppc64el-netinst.iso", "Debian GNU/Linux", "8.10.0", "jessie",
         "ppc64el"),
        ("ubuntu/ubuntu-17.10-s390x.iso", "Ubuntu-Server", "17.10", "artful", "s390x"),
    ],
)
def test_disk_info(rel: str, name: str, version: str, codename: str, arch_word: str) -> None:
    info = parse_disk_info((fixture(rel) / ".disk/info").read_text())
    assert info is not None
    assert (info.name, info.version, info.first_codename_word) == (name, version, codename)
    assert arch_word in info.words
    assert detect.parse_disk_info is parse_disk_info  # re-exported for the ISO helper


def test_disk_info_modern_lines() -> None:
    lts = parse_disk_info('Ubuntu 22.04.3 LTS "Jammy Jellyfish" - Release amd64 (20230807.2)')
    assert lts is not None and (lts.name, lts.version) == ("Ubuntu", "22.04.3")
    assert parse_disk_info("just text") is None and parse_disk_info("") is None


@pytest.mark.parametrize(
    ("rel", "names0", "version", "arches"),
    [
        ("opensuse/10.3", "openSUSE 10.3", "10.3", ("ppc64", "ppc", "x86_64", "i686", "i586",
                                                     "i486", "i386")),
        ("opensuse/11.4", "openSUSE 11.4", "11.4", ("i586", "x86_64")),
        ("opensuse/13.2", "opensuse", "13.2", ("i586", "x86_64")),
        ("opensuse/42.3", "opensuse", "42.3", ("x86_64",)),
        ("suse/SLES-10-SP4-DVD-x86_64-GM-DVD1.iso", "SUSE Linux Enterprise Server 10 SP4", "10.4",
         ("x86_64",)),
        ("suse/SLES-11-SP4-DVD-s390x-GM-DVD1.iso", "SUSE Linux Enterprise Server 11 SP4", "11.4",
         ("s390x",)),
    ],
)
def test_suse_content(rel: str, names0: str, version: str, arches: tuple[str, ...]) -> None:
    content = parse_suse_content((fixture(rel) / "content").read_text(errors="replace"))
    assert content is not None
    assert (content.names[0], content.version, content.arches) == (names0, version, arches)


def test_suse_products_and_mageia_and_one_line_versions() -> None:
    (p,) = parse_suse_products("/ SLES15-SP5 15.5-0\nnot a line\n")
    assert (p.path, p.name, p.version) == ("/", "SLES15-SP5", "15.5")
    mga = parse_mageia_version((fixture("mageia/8") / "VERSION").read_text())
    assert mga is not None and (mga.version, mga.arch, mga.kind) == ("8", "x86_64", "Devel")
    assert parse_one_version("3.19.1\n") == "3.19.1"
    assert parse_one_version("<html>") is None


def test_match_treeinfo_for_the_iso_helper() -> None:
    m = match_treeinfo((fixture("rhel/7.20") / ".treeinfo").read_text())
    assert (m.os.short_id, m.os.known, m.arch) == ("rhel7.20", False, "x86_64")
    assert m.kernel == "images/pxeboot/vmlinuz" and set(m.checksums) == {m.kernel, m.initrd}
    assert m.installer is not None and m.installer.name == "anaconda"
    assert m.os.notes == {"osinfo_match": "rhel7-unknown"}


PARSERS = [parse_manifest, parse_sha256sums, parse_version_info, parse_disk_info,
           parse_suse_content, parse_suse_products, parse_mageia_version, parse_one_version]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_parsers_never_crash(text: str) -> None:
    for parse in PARSERS:
        parse(text)
    with contextlib.suppress(MetadataError):
        parse_treeinfo(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["[general]", "[images-x86_64]", "[checksums]", "family = F",
                                 "kernel = a/b", "initrd = ../c", "arch = x86_64", "version = 1",
                                 "kernel = /abs", "= x", "[", "images/x = sha256:zz"]),
                max_size=12))
def test_treeinfo_matching_fails_only_cleanly(lines: list[str]) -> None:
    with contextlib.suppress(MetadataError, DetectionError):
        match_treeinfo("\n".join(lines))
