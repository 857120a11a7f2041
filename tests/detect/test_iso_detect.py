"""Identifying ISO images: osinfo-db media rules, layouts inside, the image's own boot loader."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _iso_helpers import (
    ALPINE_SYSLINUX,
    ANACONDA_ISOLINUX,
    ARCH_SYS_LINUX,
    ARCH_SYSLINUX,
    CUSTOM_GRUB,
    DEBIAN_INITRD,
    DEBIAN_KERNEL,
    SUSE_ISOLINUX,
    UBUNTU_GRUB,
    UBUNTU_LOOPBACK,
    Content,
    build_iso,
    debian_netinst_files,
    fakemedia,
    need_debian_netboot,
    sha256,
)
from _net_helpers import serve_http
from _paths import ROOT
from treeboot.detect.iso import identify_iso, load_layouts, network_install_error
from treeboot.detect.rules import load_rules
from treeboot.errors import DetectionError
from treeboot.locate.iso import open_iso
from treeboot.model import Identification, Media, Verified
from treeboot.prepare import cmdline


def identify(
    path: Path, *, arch: str | None = None, kernel: str | None = None, initrd: str | None = None
) -> Identification:
    with open_iso(str(path)) as loc:
        return identify_iso(loc, arch=arch, kernel=kernel, initrd=initrd)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cdrom_args(ident: Identification) -> list[str]:
    """What the kernel command line adds to the medium's own args to boot from the CD-ROM."""
    args = cmdline.build_cmdline(
        ident, arch=ident.arch or "x86_64", repo_url=None, console=None, medium_attached=True
    )
    return [a for a in args if a not in ident.boot_args]


# --------------------------------------------------------------------------- rules


def test_every_layout_rule_loads_and_is_consistent() -> None:
    layouts = load_layouts()
    assert layouts
    names = set()
    for layout in layouts:
        assert layout.name not in names
        names.add(layout.name)
        assert bool(layout.kernel) == bool(layout.initrd)
        assert bool(layout.kernel) != bool(layout.markers), layout.name
        if layout.installer:
            assert layout.installer in load_rules().installers, layout.name
            assert cmdline.load_rules().installer(layout.installer) is not None, layout.name


# --------------------------------------------------------------------------- shared fixtures


def test_fedora_netinst_fixture() -> None:
    ident = identify(fakemedia("fake-f26-netinst.iso"))
    assert ident.media is Media.ISO
    assert (ident.os, ident.family, ident.arch) == ("fedora26", "fedora", "x86_64")
    assert ident.known_to_database and ident.installer == "anaconda"
    assert (ident.kernel, ident.initrd) == ("isolinux/vmlinuz", "isolinux/initrd.img")
    assert ident.needs == ["cdrom"]
    assert cdrom_args(ident) == ["inst.stage2=hd:CDLABEL=Fedora-WS-dvd-x86_64-26"]
    iso = ident.extra["iso"]
    assert iso["volume_id"] == "Fedora-WS-dvd-x86_64-26" and iso["system_id"] == "LINUX"
    assert iso["el_torito"] and iso["rock_ridge"] and iso["joliet"]
    assert json.loads(json.dumps(ident.to_json()))["media"] == "iso"


def test_fedora_live_fixture() -> None:
    ident = identify(fakemedia("fake-f29-live.iso"))
    assert ident.os == "fedora29"
    assert ident.extra["osinfo_media"]["live"] is True


def test_respun_label_is_pointed_at_the_real_volume() -> None:
    ident = identify(fakemedia("fake-centos65-label.iso"))
    assert ident.os == "centos6.5"
    assert "inst.stage2=hd:LABEL=CentOS_6.5_Final" in ident.boot_args
    assert ident.extra["boot_args_relabelled"] == ["Fedora-S-dvd-x86_64-25"]
    assert "isolinux/isolinux.cfg" in ident.evidence


def test_treeinfo_inside_an_iso() -> None:
    ident = identify(fakemedia("fake-fedora17-tree.iso"))
    assert (ident.os, ident.version, ident.arch) == ("fedora17", "17", "x86_64")
    assert ident.kernel == "images/pxeboot/vmlinuz"
    assert ident.checksums["images/pxeboot/vmlinuz"].startswith("sha256:")
    assert ident.verified is Verified.SHA256
    assert ".treeinfo" in ident.evidence


def test_windows_is_identified_without_a_kernel() -> None:
    ident = identify(fakemedia("fake-win7.iso"))
    assert (ident.os, ident.family) == ("win7", "win")
    assert ident.kernel is None and ident.initrd is None
    assert ident.needs == ["cdrom"]
    err = network_install_error(ident)
    assert isinstance(err, DetectionError) and err.exit_code == 3
    assert "Windows" in str(err) and "CD-ROM" in str(err)


def test_windows_ambiguous_volume_id_lists_candidates() -> None:
    ident = identify(fakemedia("fake-win-multi.iso"))
    candidates = ident.extra["osinfo_candidates"]
    assert ident.os == candidates[0] and len(candidates) >= 2
    assert all(c.startswith("win2k") for c in candidates)


def test_unknown_media_without_boot_loader_is_a_detection_error() -> None:
    with pytest.raises(DetectionError) as e:
        identify(fakemedia("fake-no-osinfo.iso"))
    assert e.value.exit_code == 3
    assert "isolinux/isolinux.cfg" in e.value.tried and e.value.hint


# --------------------------------------------------------------------------- built images


@pytest.fixture(scope="module")
def isos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One image per supported layout, with real volume ids."""
    d = tmp_path_factory.mktemp("isos")
    k, i = b"\x00kernel\x00" * 64, b"\x1f\x8binitrd" * 64
    treeinfo = (
        "[header]\ntype = productmd.treeinfo\nversion = 1.2\n"
        "[release]\nname = Fedora\nshort = Fedora\nversion = 37\n"
        "[tree]\narch = x86_64\nplatforms = x86_64,xen\n"
        "[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n"
        "[stage2]\nmainimage = images/install.img\n"
        f"[checksums]\nimages/pxeboot/vmlinuz = sha256:{_sha(k)}\n"
        f"images/pxeboot/initrd.img = sha256:{_sha(i)}\n"
    )
    kernel, _ = need_debian_netboot()
    # name -> (files, primary volume descriptor fields)
    images: dict[str, tuple[dict[str, Content], dict[str, Any]]] = {
        "debian-12": (
            debian_netinst_files(),
            {"volume_id": "Debian 12.4.0 amd64 n", "boot_image": "isolinux/isolinux.bin"},
        ),
        "debian-11": (
            {
                "install.amd/vmlinuz": k,
                "install.amd/initrd.gz": i,
                "install.386/vmlinuz": k,
                "install.386/initrd.gz": i,
            },
            {"volume_id": "Debian 11.5.0 amd64 n"},
        ),
        "ubuntu": (
            {
                "casper/vmlinuz": k,
                "casper/initrd": i,
                ".disk/info": 'Ubuntu-Server 22.04.3 LTS "Jammy Jellyfish" - Release amd64'
                " (20230810)",
                "boot/grub/grub.cfg": UBUNTU_GRUB,
                "boot/grub/loopback.cfg": UBUNTU_LOOPBACK,
                "md5sum.txt": f"{hashlib.md5(k).hexdigest()}  ./casper/vmlinuz\n",
            },
            {"volume_id": "Ubuntu-Server 22.04.3 LTS amd64"},
        ),
        "fedora": (
            {
                ".treeinfo": treeinfo,
                "images/pxeboot/vmlinuz": k,
                "images/pxeboot/initrd.img": i,
                "isolinux/vmlinuz": k,
                "isolinux/initrd.img": i,
                "isolinux/isolinux.cfg": ANACONDA_ISOLINUX,
            },
            {"volume_id": "Fedora-S-dvd-x86_64-37"},
        ),
        "opensuse": (
            {
                "boot/x86_64/loader/linux": k,
                "boot/x86_64/loader/initrd": i,
                "boot/x86_64/loader/isolinux.cfg": SUSE_ISOLINUX,
                "content": f"DISTRO cpe:/o:opensuse:leap:15.4,openSUSE Leap 15.4\n"
                f"HASH SHA256 {_sha(k)}  boot/x86_64/loader/linux\n"
                f"HASH SHA256 {_sha(i)}  boot/x86_64/loader/initrd\n",
            },
            {"volume_id": "openSUSE-Leap-15.4-DVD-x86_64", "publisher": "SUSE LINUX GmbH"},
        ),
        "arch": (
            {
                "arch/boot/x86_64/vmlinuz-linux": k,
                "arch/boot/x86_64/initramfs-linux.img": i,
                "arch/boot/intel-ucode.img": b"ucode",
                "arch/boot/amd-ucode.img": b"ucode",
                "syslinux/syslinux.cfg": ARCH_SYSLINUX,
                "syslinux/archiso_sys-linux.cfg": ARCH_SYS_LINUX,
                "arch/version": "2022.12.01\n",
            },
            {
                "volume_id": "ARCH_202212",
                "publisher": "ARCH LINUX <HTTPS://ARCHLINUX.ORG>",
                "application_id": "ARCH LINUX LIVE/RESCUE CD",
            },
        ),
        "alpine": (
            {
                "boot/vmlinuz-lts": k,
                "boot/initramfs-lts": i,
                "boot/syslinux/syslinux.cfg": ALPINE_SYSLINUX,
                ".alpine-release": "3.17.0\n",
            },
            {"volume_id": "alpine-std 3.17.0 x86_64"},
        ),
        "freebsd": (
            {"boot/kernel/kernel": b"\x7fELF", "boot/loader.conf": "x=1\n"},
            {"volume_id": "13_1_RELEASE_AMD64_CD", "system_id": "FreeBSD"},
        ),
        "custom": (
            {
                "live/vmlinuz": kernel,
                "live/initrd.img": i,
                "boot/grub/grub.cfg": CUSTOM_GRUB,
                "boot/memtest86+.bin": b"m",
            },
            {"volume_id": "MYDISTRO_2024"},
        ),
    }
    return {
        name.replace("-", ""): build_iso(d / f"{name}.iso", files, **pvd)
        for name, (files, pvd) in images.items()
    }


def test_debian_netinst_newer_than_the_database(isos: dict[str, Path]) -> None:
    ident = identify(isos["debian12"])
    assert (ident.os, ident.family, ident.arch) == ("debian12", "debian", "x86_64")
    assert not ident.known_to_database  # osinfo-db 20221203 has no debian12
    assert ident.installer == "debian-installer" and ident.version == "12.4.0"
    assert (ident.kernel, ident.initrd) == ("install.amd/vmlinuz", "install.amd/initrd.gz")
    assert ident.checksums == {
        "install.amd/vmlinuz": f"sha256:{sha256(DEBIAN_KERNEL)}",
        "install.amd/initrd.gz": f"sha256:{sha256(DEBIAN_INITRD)}",
    }
    assert ident.verified is Verified.SHA256
    assert ident.boot_args == ["vga=788", "---", "quiet"]
    assert ident.needs == ["cdrom"]
    assert ".disk/info" in ident.evidence and "sha256sum.txt" in ident.evidence
    assert ident.extra["codename"] == "bookworm"


def test_debian_volume_id_rule_and_arch_choice(isos: dict[str, Path]) -> None:
    ident = identify(isos["debian11"])
    assert ident.os == "debian11" and ident.known_to_database
    assert ident.kernel == "install.amd/vmlinuz" and ident.arch == "x86_64"
    assert ident.evidence[0] == "iso9660:volume-descriptor"
    i686 = identify(isos["debian11"], arch="i686")
    assert i686.kernel == "install.386/vmlinuz" and i686.arch == "i686"


def test_arch_mismatch_is_refused(isos: dict[str, Path]) -> None:
    with pytest.raises(DetectionError) as e:
        identify(isos["debian12"], arch="aarch64")
    assert "x86_64" in str(e.value)


def test_ubuntu_live_server(isos: dict[str, Path]) -> None:
    ident = identify(isos["ubuntu"])
    assert ident.os == "ubuntu22.04" and ident.known_to_database
    assert (ident.kernel, ident.initrd) == ("casper/vmlinuz", "casper/initrd")
    assert ident.installer == "subiquity" and ident.needs == ["cdrom"]
    assert ident.boot_args == ["---"]
    assert cdrom_args(ident) == ["boot=casper"]
    assert ident.checksums == {}  # md5 only: reported, not used for verification
    assert ident.extra["other_checksums"]["casper/vmlinuz"].startswith("md5:")


def test_fedora_dvd_with_productmd_treeinfo(isos: dict[str, Path]) -> None:
    ident = identify(isos["fedora"])
    assert ident.os == "fedora37" and ident.installer == "anaconda"
    assert (ident.kernel, ident.initrd) == ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img")
    assert ident.extra["kernel_source"] == ".treeinfo"
    assert ident.verified is Verified.SHA256
    assert ident.extra["stage2"] == "images/install.img"
    # The isolinux entry boots another copy of the kernel: no args are borrowed from it.
    assert ident.boot_args == []
    assert cdrom_args(ident) == ["inst.stage2=hd:CDLABEL=Fedora-S-dvd-x86_64-37"]


def test_damaged_treeinfo_leaves_the_other_evidence(tmp_path: Path) -> None:
    files: dict[str, Content] = {
        ".treeinfo": "kernel = images/pxeboot/vmlinuz\n[images-x86_64\n",
        "images/pxeboot/vmlinuz": b"k",
        "images/pxeboot/initrd.img": b"i",
    }
    ident = identify(build_iso(tmp_path / "f.iso", files, volume_id="Fedora-S-dvd-x86_64-37"))
    assert ident.os == "fedora37" and ident.installer == "anaconda"
    assert ident.kernel == "images/pxeboot/vmlinuz"
    assert ident.extra["kernel_source"] == "layout:anaconda"


def test_opensuse_leap(isos: dict[str, Path]) -> None:
    ident = identify(isos["opensuse"])
    assert ident.os == "opensuse15.4" and ident.installer == "linuxrc"
    assert ident.kernel == "boot/x86_64/loader/linux" and ident.arch == "x86_64"
    assert ident.boot_args == ["splash=silent", "showopts"]
    assert ident.verified is Verified.SHA256 and "content" in ident.evidence


def test_arch_linux(isos: dict[str, Path]) -> None:
    ident = identify(isos["arch"])
    assert ident.os == "archlinux" and ident.installer == "archiso"
    assert ident.initrd == "arch/boot/x86_64/initramfs-linux.img"
    assert "archisolabel=ARCH_202212" in ident.boot_args
    assert cdrom_args(ident) == []  # the medium's own args already say it


def test_alpine(isos: dict[str, Path]) -> None:
    ident = identify(isos["alpine"])
    assert ident.os == "alpinelinux3.17" and ident.installer == "alpine"
    assert (ident.kernel, ident.initrd) == ("boot/vmlinuz-lts", "boot/initramfs-lts")
    assert ".alpine-release" in ident.evidence


def test_freebsd_has_no_linux_kernel(isos: dict[str, Path]) -> None:
    ident = identify(isos["freebsd"])
    assert ident.os == "freebsd13.1" and ident.kernel is None
    assert "no Linux kernel" in ident.extra["no_kernel_reason"]


def test_unknown_but_bootable(isos: dict[str, Path]) -> None:
    ident = identify(isos["custom"])
    assert ident.os is None and not ident.known_to_database
    assert (ident.kernel, ident.initrd) == ("live/vmlinuz", "live/initrd.img")
    assert ident.boot_args == ["boot=live", "components", "console=ttyS0,115200n8"]
    assert ident.arch == "x86_64"  # from the kernel's boot protocol header
    assert ident.needs == ["cdrom"]
    assert "boot/grub/grub.cfg" in ident.evidence


def test_kernel_and_initrd_overrides(isos: dict[str, Path]) -> None:
    ident = identify(isos["custom"], kernel="live/vmlinuz", initrd="live/initrd.img")
    assert ident.kernel == "live/vmlinuz"
    with pytest.raises(DetectionError):
        identify(isos["custom"], kernel="nope/vmlinuz")


# --------------------------------------------------------------------------- fetch, remote


@pytest.mark.network
def test_remote_identify_and_fetch_transfer_little(isos: dict[str, Path], tmp_path: Path) -> None:
    from treeboot.download.fetch import fetch
    from treeboot.store.cache import Cache

    with serve_http(isos["debian12"].parent) as srv:
        url = srv.url + isos["debian12"].name
        with open_iso(url) as loc:
            ident = identify_iso(loc)
            meta_bytes = loc.bytes_transferred
        assert ident.location == url and ident.verified is Verified.SHA256
        result = fetch(ident, cache=Cache(tmp_path / "cache"), progress=False)
        payload = DEBIAN_KERNEL.stat().st_size + DEBIAN_INITRD.stat().st_size
        assert result.bytes_downloaded == payload
        assert result.kernel.sha256 == sha256(DEBIAN_KERNEL)
        assert result.verified is Verified.SHA256
        served = sum(r.bytes for r in srv.log)
        assert served <= 1.1 * (payload + meta_bytes)
        assert served < isos["debian12"].stat().st_size + 1  # never the whole image twice
        again = fetch(ident, cache=Cache(tmp_path / "cache"), progress=False)
        assert again.from_cache and again.bytes_downloaded == 0


# --------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "treeboot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_identify_iso_json(isos: dict[str, Path]) -> None:
    proc = _cli("identify", str(isos["debian12"]), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["media"] == "iso" and data["os"] == "debian12"
    assert data["extra"]["iso"]["volume_id"] == "Debian 12.4.0 amd64 n"


def test_cli_identify_damaged_and_non_iso(tmp_path: Path) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"not an iso" * 5000)
    proc = _cli("identify", str(junk), "--json")
    assert proc.returncode == 3 and "not an ISO9660 image" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_fetch_iso(
    isos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREEBOOT_CACHE", str(tmp_path / "cache"))  # a cold cache of its own
    proc = _cli("fetch", str(isos["debian12"]), "--json", "--dest", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["verified"] == "sha256"
    assert data["bytes_downloaded"] == DEBIAN_KERNEL.stat().st_size + DEBIAN_INITRD.stat().st_size
    assert sha256(Path(data["kernel"])) == sha256(DEBIAN_KERNEL)


def test_cli_fetch_windows_says_why(tmp_path: Path) -> None:
    proc = _cli("fetch", str(fakemedia("fake-win7.iso")), "--json")
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "Windows" in proc.stderr and "CD-ROM" in proc.stderr
