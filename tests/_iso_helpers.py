"""Build ISO images for tests with xorriso, using real volume ids and layouts of real media.

    iso = build_iso(tmp / "x.iso", {"casper/vmlinuz": b"...", "big": Path(...)},
                    volume_id="Ubuntu-Server 22.04.3 LTS amd64")

Contents are bytes or host files (grafted, not copied). The Debian 12 netboot kernel/initrd from
the debian-installer-12-netboot-amd64 package are the real binaries the media carry.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
FAKEMEDIA = SHARED / "fixtures" / "fakemedia"
DI = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
DEBIAN_KERNEL = DI / "linux"
DEBIAN_INITRD = DI / "initrd.gz"

Content = bytes | str | Path


def need_xorriso() -> str:
    path = shutil.which("xorriso")
    if path is None:
        pytest.skip("xorriso is not installed (apt-get install xorriso)")
    return path


def need_debian_netboot() -> tuple[Path, Path]:
    if not (DEBIAN_KERNEL.is_file() and DEBIAN_INITRD.is_file()):
        pytest.skip("debian-installer-12-netboot-amd64 is not installed")
    return DEBIAN_KERNEL, DEBIAN_INITRD


def fakemedia(name: str) -> Path:
    path = FAKEMEDIA / name
    if not path.is_file():
        pytest.skip(f"shared fixture {path} not found")
    return path


def build_iso(
    out: Path,
    files: dict[str, Content],
    *,
    volume_id: str,
    system_id: str = "LINUX",
    publisher: str | None = None,
    application_id: str | None = None,
    joliet: bool = True,
    rock_ridge: bool = True,
    boot_image: str | None = None,
) -> Path:
    """Write an ISO9660 image with ``files`` (path inside -> content) and return its path."""
    xorriso = need_xorriso()
    staging = out.parent / (out.name + ".d")
    grafts = graft_points(files, staging)
    argv = [xorriso, "-as", "mkisofs", "-quiet", "-o", str(out), "-V", volume_id]
    argv += ["-sysid", system_id, "-graft-points"]
    argv += ["-publisher", publisher] if publisher else []
    argv += ["-A", application_id] if application_id else []
    argv += ["-J", "-joliet-long"] if joliet else []
    argv += ["-R"] if rock_ridge else ["--norock"]
    if boot_image:
        argv += ["-b", boot_image, "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"]
    argv += grafts
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"xorriso failed ({proc.returncode}): {proc.stderr.strip()}")
    # xorriso upper-cases these; real media keep their case ("FreeBSD", "SUSE LINUX GmbH").
    patch_pvd(out, 8, 32, system_id)
    if publisher:
        patch_pvd(out, 318, 128, publisher)
    shutil.rmtree(staging)
    return out


def graft_points(files: dict[str, Content], staging: Path) -> list[str]:
    """xorriso ``-graft-points`` for ``files``: host files as they are, the rest written below
    ``staging`` (created here; the caller removes it)."""
    staging.mkdir(parents=True, exist_ok=True)
    grafts: list[str] = []
    for inside, content in files.items():
        if isinstance(content, Path):
            grafts.append(f"/{inside}={content}")
            continue
        local = staging / inside
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(content.encode() if isinstance(content, str) else content)
        grafts.append(f"/{inside}={local}")
    return grafts


def patch_pvd(iso: Path, offset: int, size: int, text: str) -> None:
    """Overwrite a space-padded text field of the primary volume descriptor (ECMA-119 8.4)."""
    with iso.open("r+b") as f:
        f.seek(16 * 2048 + offset)
        f.write(text.encode("ascii")[:size].ljust(size, b" "))


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def md5(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


# --------------------------------------------------------------------------- real layouts

DEBIAN_ISOLINUX = """\
# D-I config version 2.0
path
include menu.cfg
default vesamenu.c32
prompt 0
timeout 0
"""
DEBIAN_MENU = """\
menu hshift 4
menu width 70
menu title Debian GNU/Linux installer menu (BIOS mode)
include stdmenu.cfg
include gtk.cfg
include txt.cfg
"""
DEBIAN_GTK = """\
default installgui
label installgui
\tmenu label ^Graphical install
\tmenu default
\tkernel /install.amd/vmlinuz
\tappend vga=788 initrd=/install.amd/gtk/initrd.gz --- quiet
"""
DEBIAN_TXT = """\
label install
\tmenu label ^Install
\tkernel /install.amd/vmlinuz
\tappend vga=788 initrd=/install.amd/initrd.gz --- quiet
"""
DEBIAN_GRUB = """\
if [ x$feature_default_font_path = xy ] ; then
   font=unicode
else
   font=$prefix/font.pf2
fi
menuentry --hotkey=i 'Install' {
    set background_color=black
    linux    /install.amd/vmlinuz vga=788 --- quiet
    initrd   /install.amd/initrd.gz
}
submenu --hotkey=a 'Advanced options ...' {
    menuentry '... Expert install' {
        linux    /install.amd/vmlinuz priority=low vga=788 ---
        initrd   /install.amd/initrd.gz
    }
}
"""


def debian_netinst_files(version: str = "12.4.0") -> dict[str, Content]:
    """A Debian netinst image as cdimage.debian.org lays it out, with the real d-i binaries."""
    kernel, initrd = need_debian_netboot()
    md5s = f"{md5(kernel)}  ./install.amd/vmlinuz\n{md5(initrd)}  ./install.amd/initrd.gz\n"
    sums = f"{sha256(kernel)}  ./install.amd/vmlinuz\n{sha256(initrd)}  ./install.amd/initrd.gz\n"
    return {
        ".disk/info": f'Debian GNU/Linux {version} "Bookworm" - Official amd64 NETINST with '
        "firmware 20231210-17:56",
        "install.amd/vmlinuz": kernel,
        "install.amd/initrd.gz": initrd,
        "isolinux/isolinux.cfg": DEBIAN_ISOLINUX,
        "isolinux/menu.cfg": DEBIAN_MENU,
        "isolinux/stdmenu.cfg": "menu background splash.png\n",
        "isolinux/gtk.cfg": DEBIAN_GTK,
        "isolinux/txt.cfg": DEBIAN_TXT,
        "isolinux/isolinux.bin": b"\0" * 2048,
        "boot/grub/grub.cfg": DEBIAN_GRUB,
        "md5sum.txt": md5s,
        "sha256sum.txt": sums,
    }


UBUNTU_GRUB = """\
set timeout=30
loadfont unicode
set menu_color_normal=white/black
menuentry "Try or Install Ubuntu Server" {
\tset gfxpayload=keep
\tlinux\t/casper/vmlinuz  ---
\tinitrd\t/casper/initrd
}
menuentry "Ubuntu Server with the HWE kernel" {
\tset gfxpayload=keep
\tlinux\t/casper/hwe-vmlinuz  ---
\tinitrd\t/casper/hwe-initrd
}
"""
UBUNTU_LOOPBACK = """\
menuentry "Try or Install Ubuntu Server" {
\tset gfxpayload=keep
\tlinux\t/casper/vmlinuz  iso-scan/filename=${iso_path} ---
\tinitrd\t/casper/initrd
}
"""

ANACONDA_ISOLINUX = """\
default vesamenu.c32
timeout 600
label linux
  menu label ^Install Fedora 37
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL=Fedora-S-dvd-x86_64-37 quiet
label check
  menu label Test this ^media & install Fedora 37
  menu default
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL=Fedora-S-dvd-x86_64-37 rd.live.check quiet
label memtest
  kernel memtest
"""

SUSE_ISOLINUX = """\
default harddisk
timeout 600
label harddisk
  localboot 0x80
label linux
  kernel linux
  append initrd=initrd splash=silent showopts
"""

ARCH_SYSLINUX = """\
DEFAULT select
LABEL select
COM32 boot/syslinux/whichsys.c32
APPEND -pxe- pxe -sys- sys -iso- sys
INCLUDE archiso_sys-linux.cfg
"""
ARCH_SYS_LINUX = """\
LABEL arch64
TEXT HELP
Boot the Arch Linux install medium on BIOS.
ENDTEXT
MENU LABEL Arch Linux install medium (x86_64, BIOS)
LINUX /arch/boot/x86_64/vmlinuz-linux
INITRD /arch/boot/intel-ucode.img,/arch/boot/amd-ucode.img,/arch/boot/x86_64/initramfs-linux.img
APPEND archisobasedir=arch archisolabel=ARCH_202212
"""

ALPINE_SYSLINUX = """\
SERIAL 0 115200
TIMEOUT 10
PROMPT 1
DEFAULT lts

LABEL lts
MENU LABEL Linux lts
KERNEL /boot/vmlinuz-lts
INITRD /boot/initramfs-lts
FDTDIR /boot/dtbs-lts
APPEND modules=loop,squashfs,sd-mod,usb-storage quiet console=tty0 console=ttyS0,115200
"""

CUSTOM_GRUB = """\
set default="1"
set timeout=5
menuentry "Memory test" {
    linux16 /boot/memtest86+.bin
}
menuentry "Install MyDistro (serial)" --class os {
    linux ($root)/live/vmlinuz boot=live components console=ttyS0,115200n8 findiso=${iso_path}
    initrd ($root)/live/initrd.img
}
menuentry "Install MyDistro (graphical)" {
    linux /live/vmlinuz boot=live components splash
    initrd /live/initrd.img
}
"""
