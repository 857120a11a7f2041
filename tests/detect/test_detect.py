"""Tree identification against real metadata from public trees (shared/fixtures/urldetect)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from _detect_helpers import fixture, mirror_copy, sha256, treeinfo, write_tree
from _net_helpers import serve_http
from treeboot.detect.identify import identify
from treeboot.devtree import DI_IMAGES, build_debian_tree
from treeboot.model import Verified

PXE = ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img")
SUSE = ("boot/x86_64/loader/linux", "boot/x86_64/loader/initrd")
DI = "current/images/netboot/debian-installer/amd64/"


class Expect(NamedTuple):
    path: str
    os: str | None
    known: bool
    arch: str
    kernel: str
    initrd: str
    installer: str
    family: str | None = None


CASES = [
    Expect("centos/6.10", "centos6.10", True, "x86_64", *PXE, "anaconda", "centos"),
    Expect("centos/sl7", "scientificlinux7.8", False, "x86_64", *PXE, "anaconda"),
    Expect("fedora/30", "fedora30", True, "x86_64", *PXE, "anaconda", "fedora"),
    Expect("fedora/99", "fedora99", False, "x86_64", *PXE, "anaconda", "fedora"),
    Expect("fedora/rawhide", "fedora-rawhide", True, "x86_64", *PXE, "anaconda", "fedora"),
    Expect("generic", None, False, "x86_64", *PXE, "anaconda"),
    Expect("rhel/7.6", "rhel7.6", True, "x86_64", *PXE, "anaconda", "rhel"),
    Expect("rhel/7.20", "rhel7.20", False, "x86_64", *PXE, "anaconda", "rhel"),
    Expect("opensuse/15.9", "opensuse15.9", False, "x86_64", *SUSE, "linuxrc", "opensuse"),
    Expect("opensuse/tumbleweed", "opensusetumbleweed", True, "x86_64", *SUSE, "linuxrc"),
    Expect("opensuse/10.3", "opensuse10.3", True, "x86_64", *SUSE, "linuxrc", "opensuse"),
    Expect("opensuse/11.4", "opensuse11.4", True, "x86_64", *SUSE, "linuxrc"),
    Expect("opensuse/12.3", "opensuse12.3", True, "x86_64", *SUSE, "linuxrc"),
    Expect("opensuse/13.2", "opensuse13.2", True, "x86_64", *SUSE, "linuxrc"),
    Expect("opensuse/42.3", "opensuse42.3", True, "x86_64", *SUSE, "linuxrc"),
    Expect("opensuse/badversion", "opensuse77.77", False, "x86_64", *SUSE, "linuxrc"),
    Expect("suse/SLES-10-SP4-DVD-x86_64-GM-DVD1.iso", "sles10sp4", True, "x86_64", *SUSE,
           "linuxrc", "sles"),
    Expect("suse/SLES-11-SP4-DVD-ppc64-GM-DVD1.iso", "sles11sp4", True, "ppc64",
           "suseboot/linux64", "suseboot/initrd64", "linuxrc"),
    Expect("suse/SLES-11-SP4-DVD-s390x-GM-DVD1.iso", "sles11sp4", True, "s390x",
           "boot/s390x/vmrdr.ikr", "boot/s390x/initrd", "linuxrc"),
    Expect("debian/buster/main/installer-amd64", "debian10", True, "x86_64", DI + "linux",
           DI + "initrd.gz", "debian-installer", "debian"),
    Expect("debian/daily-images/amd64", "debiantesting", True, "x86_64",
           "daily/netboot/debian-installer/amd64/linux",
           "daily/netboot/debian-installer/amd64/initrd.gz", "debian-installer"),
    Expect("ubuntu/bionic/main/installer-amd64", "ubuntu18.04", True, "x86_64",
           "current/images/netboot/ubuntu-installer/amd64/linux",
           "current/images/netboot/ubuntu-installer/amd64/initrd.gz", "debian-installer",
           "ubuntu"),
    Expect("ubuntu/focal/main/installer-amd64", "ubuntu20.04", True, "x86_64",
           "current/legacy-images/netboot/ubuntu-installer/amd64/linux",
           "current/legacy-images/netboot/ubuntu-installer/amd64/initrd.gz",
           "debian-installer"),
    Expect("debian/debian-8.10.0-amd64-netinst.iso", "debian8", True, "x86_64",
           "install.amd/vmlinuz", "install.amd/initrd.gz", "debian-installer"),
    Expect("debian/debian-8.10.0-arm64-netinst.iso", "debian8", True, "aarch64",
           "install.a64/vmlinuz", "install.a64/initrd.gz", "debian-installer"),
    Expect("debian/debian-8.10.0-i386-netinst.iso", "debian8", True, "i686",
           "install.386/vmlinuz", "install.386/initrd.gz", "debian-installer"),
    Expect("debian/debian-8.10.0-ppc64el-netinst.iso", "debian8", True, "ppc64le",
           "install/vmlinux", "install/initrd.gz", "debian-installer"),
    Expect("debian/debian-8.10.0-s390x-netinst.iso", "debian8", True, "s390x",
           "boot/linux_vm", "boot/root.bin", "debian-installer"),
    Expect("ubuntu/ubuntu-17.10-amd64.iso", "ubuntu17.10", True, "x86_64", "install/vmlinuz",
           "install/initrd.gz", "debian-installer", "ubuntu"),
    Expect("ubuntu/ubuntu-17.10-s390x.iso", "ubuntu17.10", True, "s390x",
           "boot/kernel.ubuntu", "boot/initrd.ubuntu", "debian-installer"),
    Expect("mageia/5", "mageia5", True, "x86_64", "isolinux/x86_64/vmlinuz",
           "isolinux/x86_64/all.rdz", "drakx", "mageia"),
    Expect("mageia/8", "mageia8", True, "x86_64", "isolinux/x86_64/vmlinuz",
           "isolinux/x86_64/all.rdz", "drakx"),
]


@pytest.fixture(autouse=True)
def _x86_64_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-arch SUSE trees default to the host's arch: pin the host fact."""
    monkeypatch.setattr("treeboot.detect._layouts.platform.machine", lambda: "x86_64")


@pytest.mark.parametrize("case", CASES, ids=[c.path for c in CASES])
def test_fixture_trees(case: Expect) -> None:
    ident = identify(str(fixture(case.path)))
    got = (ident.os, ident.known_to_database, ident.arch, ident.kernel, ident.initrd)
    assert got == (case.os, case.known, case.arch, case.kernel, case.initrd)
    assert ident.installer == case.installer
    if case.family:
        assert ident.family == case.family
    assert ident.media == "tree"
    assert ident.location.endswith(case.path + "/")
    assert ident.evidence and ident.extra["rounds"] <= 2


def test_every_fixture_tree_is_covered() -> None:
    """Each metadata file in the shared fixtures belongs to a case above (or a test below)."""
    covered = {c.path for c in CASES} | {"debian/debian-8.10.0-badarch-netinst.iso"}
    root = fixture(".")
    markers = {".treeinfo", "MANIFEST", "info", "content", "VERSION"}
    dirs = {p.parent for p in root.rglob("*") if p.name in markers}
    for d in dirs:
        rel = d.relative_to(root).as_posix()
        assert any(rel == c or rel.startswith(c + "/") for c in covered), rel


def test_treeinfo_checksums_and_evidence() -> None:
    ident = identify(str(fixture("fedora/30")))
    assert ident.checksums == {
        "images/pxeboot/vmlinuz":
            "sha256:187e65c35f449df145b57940cb73606623ab1eccc352f5b0d9b64c4d2ad3be58",
        "images/pxeboot/initrd.img":
            "sha256:a1407d2997c1b0544621bfcedce6e174dddf95f64187320da092c7e416b783cd",
    }
    assert ident.verified == Verified.SHA256
    assert ident.evidence == [".treeinfo"]
    assert ident.name == "Fedora 30" and ident.version == "30"
    assert ident.needs == ["repo-url"]
    assert ident.extra["rounds"] == 1


def test_suse_content_sha256_hash_lines() -> None:
    ident = identify(str(fixture("opensuse/12.3")))
    assert ident.checksums[SUSE[0]] == (
        "sha256:7846fee062340add40ab2da72360b701b4c1bc49c25bd6d4a1d730a3f984d7ea"
    )
    assert len(ident.checksums) == 2
    sha1_only = identify(str(fixture("opensuse/11.4")))
    assert sha1_only.checksums == {} and sha1_only.verified == Verified.NONE


def test_suse_multiarch_content_honours_requested_arch() -> None:
    ident = identify(str(fixture("opensuse/13.2")), arch="i586")
    assert (ident.arch, ident.kernel) == ("i686", "boot/i386/loader/linux")


# -- versions newer than the installed database ------------------------------------------------


def test_newer_fedora_is_derived_not_an_older_release() -> None:
    ident = identify(str(fixture("fedora/99")))
    assert (ident.os, ident.known_to_database, ident.version) == ("fedora99", False, "99")
    assert ident.extra["osinfo_match"] == "fedora-unknown"
    assert ident.name == "Fedora Linux 99"


@pytest.mark.parametrize(
    ("family", "version", "variant", "expected", "known"),
    [
        ("Fedora", "137", "Server", "fedora137", False),  # osinfo's '37' regex also hits 137
        ("Fedora", "37", "Server", "fedora37", True),
        ("Red Hat Enterprise Linux", "9.2", None, "rhel9.2", False),
        ("Red Hat Enterprise Linux", "9.1", None, "rhel9.1", True),
        ("CentOS Stream", "10", None, "centos-stream10", False),
        ("CentOS Stream", "9", None, "centos-stream9", True),
        ("AlmaLinux", "9", None, "almalinux9", True),
        ("Rocky Linux", "9.3", None, "rocky9", True),
        ("Oracle Linux Server", "9.3", None, "ol9.3", False),
        ("Oracle Linux Server", "8.5", None, "ol8.5", True),
        ("openSUSE Leap", "15.5", None, "opensuse15.5", False),
        ("SUSE Linux Enterprise Server", "15.5", None, "sle15sp5", False),
        ("SUSE Linux Enterprise Server", "15.4", None, "sle15sp4", True),
    ],
)
def test_treeinfo_versions(
    tmp_path: Path, family: str, version: str, variant: str | None, expected: str, known: bool
) -> None:
    write_tree(tmp_path, {".treeinfo": treeinfo(family, version, "x86_64", {"x86_64": PXE},
                                                variant=variant)})
    ident = identify(str(tmp_path))
    assert (ident.os, ident.known_to_database, ident.arch) == (expected, known, "x86_64")
    assert ident.kernel == PXE[0]


def test_debian12_netboot_tree(tmp_path: Path) -> None:
    """The real debian-installer-12-netboot-amd64 files laid out like deb.debian.org."""
    if not (DI_IMAGES / "amd64").is_dir():
        pytest.skip("debian-installer-12-netboot-amd64 is not installed")
    tree = build_debian_tree(tmp_path)
    ident = identify(str(tree))
    assert (ident.os, ident.family, ident.arch) == ("debian12", "debian", "x86_64")
    assert (ident.installer, ident.known_to_database) == ("debian-installer", False)
    assert ident.name == "Debian 12 (bookworm)" and ident.version == "12"
    assert (ident.kernel, ident.initrd) == (DI + "linux", DI + "initrd.gz")
    src = DI_IMAGES / "amd64" / "text" / "debian-installer" / "amd64"
    assert ident.checksums == {
        DI + "linux": "sha256:" + sha256((src / "linux").read_bytes()),
        DI + "initrd.gz": "sha256:" + sha256((src / "initrd.gz").read_bytes()),
    }
    assert ident.verified == Verified.SHA256
    assert ident.evidence == [
        "current/images/MANIFEST",
        "current/images/SHA256SUMS",
        "current/images/netboot/version.info",
    ]
    assert ident.extra["rounds"] == 2


def test_debian_codename_from_url_without_version_info(tmp_path: Path) -> None:
    manifest = "netboot/debian-installer -- PXE boot directory for tftp server\n"
    for suite, os_id, known in [("trixie", "debian13", False), ("bullseye", "debian11", True),
                                ("sid", "debiantesting", True)]:
        root = tmp_path / suite / "main" / "installer-arm64"
        write_tree(root, {"current/images/MANIFEST": manifest})
        ident = identify(str(root))
        assert (ident.os, ident.known_to_database, ident.arch) == (os_id, known, "aarch64")
        assert ident.kernel == "current/images/netboot/debian-installer/arm64/linux"


def test_ubuntu_codename_newer_than_database(tmp_path: Path) -> None:
    root = tmp_path / "ubuntu" / "dists" / "noble" / "main" / "installer-amd64"
    write_tree(root, {"current/legacy-images/MANIFEST":
                      "netboot/ubuntu-installer -- PXE boot directory for tftp server\n"})
    ident = identify(str(root))
    assert (ident.os, ident.known_to_database, ident.family) == ("ubuntu24.04", False, "ubuntu")
    assert ident.kernel == "current/legacy-images/netboot/ubuntu-installer/amd64/linux"


# -- architectures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree_arch", "section", "pair", "expected"),
    [
        ("x86_64_v2", "x86_64_v2", PXE, "x86_64"),
        ("aarch64", "aarch64", PXE, "aarch64"),
        ("ppc64le", "ppc64le", ("ppc/ppc64/vmlinuz", "ppc/ppc64/initrd.img"), "ppc64le"),
        ("s390x", "s390x", ("images/kernel.img", "images/initrd.img"), "s390x"),
    ],
)
def test_treeinfo_arch_variants(
    tmp_path: Path, tree_arch: str, section: str, pair: tuple[str, str], expected: str
) -> None:
    text = treeinfo("CentOS Stream", "9", tree_arch, {section: pair, "xen": PXE})
    write_tree(tmp_path, {".treeinfo": text})
    ident = identify(str(tmp_path))
    assert (ident.arch, ident.kernel, ident.initrd) == (expected, *pair)
    assert ident.os == "centos-stream9"
    assert identify(str(tmp_path), arch=expected).kernel == pair[0]


def test_treeinfo_picks_the_requested_section(tmp_path: Path) -> None:
    text = treeinfo("Fedora", "37", "x86_64",
                    {"x86_64": PXE, "aarch64": ("images/a64/vmlinuz", "images/a64/initrd.img")})
    write_tree(tmp_path, {".treeinfo": text})
    assert identify(str(tmp_path)).kernel == PXE[0]
    ident = identify(str(tmp_path), arch="arm64")
    assert (ident.arch, ident.kernel) == ("aarch64", "images/a64/vmlinuz")


@pytest.mark.network
@pytest.mark.parametrize(
    ("arch_dir", "arch", "kernel"),
    [
        ("installer-arm64", "aarch64", "current/images/netboot/debian-installer/arm64/linux"),
        ("installer-ppc64el", "ppc64le",
         "current/images/netboot/debian-installer/ppc64el/vmlinux"),
        ("installer-s390x", "s390x", "current/images/generic/kernel.debian"),
    ],
)
def test_debian_arch_from_installer_dir(
    tmp_path: Path, arch_dir: str, arch: str, kernel: str
) -> None:
    """virtinst's fixture: installer-<arch> symlinks to one MANIFEST; the URL names the arch."""
    mirror_copy(tmp_path, "debian/buster")
    with serve_http(tmp_path) as srv:
        ident = identify(f"{srv.url}debian/buster/main/{arch_dir}/")
    assert (ident.os, ident.arch, ident.kernel) == ("debian10", arch, kernel)


def test_disk_info_unknown_arch_needs_arch_option() -> None:
    path = fixture("debian/debian-8.10.0-badarch-netinst.iso")
    ident = identify(str(path), arch="x86_64")
    assert (ident.os, ident.arch, ident.kernel) == ("debian8", "x86_64", "install.amd/vmlinuz")


# -- other layouts ------------------------------------------------------------------------------


def test_ubuntu_live_server_tree(tmp_path: Path) -> None:
    info = 'Ubuntu-Server 24.04 LTS "Noble Numbat" - Release amd64 (20240423)'
    write_tree(tmp_path, {".disk/info": info, "casper/vmlinuz": b"k", "casper/initrd": b"i",
                          "sha256sum.txt": f"{sha256(b'k')}  ./casper/vmlinuz\n"})
    ident = identify(str(tmp_path))
    assert (ident.os, ident.known_to_database, ident.installer) == (
        "ubuntu24.04", False, "subiquity")
    assert (ident.kernel, ident.initrd) == ("casper/vmlinuz", "casper/initrd")
    assert ident.needs == ["cdrom"] and ident.boot_args == ["boot=casper"]
    assert ident.checksums == {"casper/vmlinuz": "sha256:" + sha256(b"k")}
    assert ident.verified == Verified.NONE  # the initrd has no published checksum
    assert ident.name == "Ubuntu 24.04 (noble)"


def test_archiso_tree(tmp_path: Path) -> None:
    write_tree(tmp_path, {"arch/version": "2024.03.01\n",
                          "arch/boot/x86_64/vmlinuz-linux": b"k",
                          "arch/boot/x86_64/initramfs-linux.img": b"i"})
    ident = identify(str(tmp_path))
    assert (ident.os, ident.known_to_database, ident.installer) == ("archlinux", True, "archiso")
    assert ident.kernel == "arch/boot/x86_64/vmlinuz-linux"
    assert ident.initrd == "arch/boot/x86_64/initramfs-linux.img"
    assert ident.boot_args == ["archisobasedir=arch"] and ident.version == "2024.03.01"


def test_archiso_tree_without_version_file(tmp_path: Path) -> None:
    write_tree(tmp_path, {"arch/boot/x86_64/vmlinuz-linux": b"k"})
    ident = identify(str(tmp_path))
    assert (ident.os, ident.arch) == ("archlinux", "x86_64")
    assert ident.extra["rounds"] == 1


def test_alpine_tree(tmp_path: Path) -> None:
    write_tree(tmp_path, {".alpine-release": "3.19.1\n", "boot/vmlinuz-virt": b"k",
                          "boot/initramfs-virt": b"i", "apks/aarch64/APKINDEX.tar.gz": b"x"})
    ident = identify(str(tmp_path))
    assert (ident.os, ident.known_to_database, ident.arch) == ("alpinelinux3.19", False, "aarch64")
    assert (ident.kernel, ident.initrd) == ("boot/vmlinuz-virt", "boot/initramfs-virt")
    assert ident.installer == "alpine" and ident.extra["rounds"] == 2


def test_suse_products_tree(tmp_path: Path) -> None:
    write_tree(tmp_path, {"media.1/products": "/ openSUSE 20240301-0\n",
                          "boot/aarch64/linux": b"k", "boot/aarch64/initrd": b"i"})
    ident = identify(str(tmp_path))
    assert (ident.os, ident.known_to_database, ident.arch) == (
        "opensusetumbleweed", True, "aarch64")
    assert ident.kernel == "boot/aarch64/linux" and ident.installer == "linuxrc"


def test_multiarch_content_on_another_host_prefers_x86_64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("treeboot.detect._layouts.platform.machine", lambda: "riscv64")
    assert identify(str(fixture("opensuse/11.4"))).arch == "x86_64"  # offers i586 and x86_64


def test_iso_images_go_to_the_iso_helper() -> None:
    iso = fixture("../fakemedia/fake-f26-netinst.iso")
    ident = identify(str(iso))
    assert (ident.media, ident.os) == ("iso", "fedora26")
