"""Boot loader configuration parsing: isolinux/syslinux, GRUB, BLS."""

from __future__ import annotations

from collections.abc import Callable

from _iso_helpers import (
    ALPINE_SYSLINUX,
    ANACONDA_ISOLINUX,
    ARCH_SYS_LINUX,
    ARCH_SYSLINUX,
    CUSTOM_GRUB,
    DEBIAN_GRUB,
    DEBIAN_GTK,
    DEBIAN_ISOLINUX,
    DEBIAN_MENU,
    DEBIAN_TXT,
    SUSE_ISOLINUX,
    UBUNTU_GRUB,
    UBUNTU_LOOPBACK,
)
from treeboot.detect.bootcfg import (
    BootConfig,
    parse_bls,
    parse_grub,
    parse_syslinux,
    read_boot_config,
)


def _reader(files: dict[str, str]) -> Callable[[str], bytes | None]:
    def read(path: str) -> bytes | None:
        text = files.get(path)
        return None if text is None else text.encode()

    return read


def test_syslinux_follows_includes_and_menu_default() -> None:
    files = {
        "isolinux/menu.cfg": DEBIAN_MENU,
        "isolinux/gtk.cfg": DEBIAN_GTK,
        "isolinux/txt.cfg": DEBIAN_TXT,
        "isolinux/stdmenu.cfg": "menu background splash.png\n",
    }
    entries = parse_syslinux(DEBIAN_ISOLINUX, "isolinux/isolinux.cfg", _reader(files))
    assert [e.label for e in entries] == ["installgui", "install"]
    gui, text = entries
    assert gui.default and not text.default
    assert gui.kernel == "install.amd/vmlinuz"
    assert gui.initrds == ("install.amd/gtk/initrd.gz",)
    assert text.args == ("vga=788", "---", "quiet")
    assert text.source == "isolinux/txt.cfg" or text.source == "isolinux/isolinux.cfg"


def test_syslinux_relative_paths_and_media_only_args() -> None:
    entries = parse_syslinux(ANACONDA_ISOLINUX, "isolinux/isolinux.cfg")
    assert [e.label for e in entries] == ["linux", "check"]  # memtest is not Linux
    check = BootConfig(tuple(entries)).choose()
    assert check is not None and check.label == "check"
    assert check.kernel == "isolinux/vmlinuz" and check.initrd == "isolinux/initrd.img"
    assert "rd.live.check" not in check.args  # media check dropped
    assert check.args == ("inst.stage2=hd:LABEL=Fedora-S-dvd-x86_64-37", "quiet")


def test_syslinux_default_label_and_suse_loader_dir() -> None:
    entries = parse_syslinux(SUSE_ISOLINUX, "boot/x86_64/loader/isolinux.cfg")
    assert [e.label for e in entries] == ["linux"]  # "harddisk" boots the local disk
    linux = BootConfig(tuple(entries)).choose()
    assert linux is not None and not linux.default
    assert linux.kernel == "boot/x86_64/loader/linux"
    assert linux.initrd == "boot/x86_64/loader/initrd"
    assert linux.args == ("splash=silent", "showopts")


def test_syslinux_initrd_directive_lists_microcode_first() -> None:
    files = {"syslinux/archiso_sys-linux.cfg": ARCH_SYS_LINUX}
    entries = parse_syslinux(ARCH_SYSLINUX, "syslinux/syslinux.cfg", _reader(files))
    assert len(entries) == 1
    arch = entries[0]
    assert arch.kernel == "arch/boot/x86_64/vmlinuz-linux"
    assert arch.initrds[0] == "arch/boot/intel-ucode.img"
    assert arch.initrd == "arch/boot/x86_64/initramfs-linux.img"
    assert arch.args == ("archisobasedir=arch", "archisolabel=ARCH_202212")


def test_syslinux_alpine_and_implicit_default() -> None:
    (lts,) = parse_syslinux(ALPINE_SYSLINUX, "boot/syslinux/syslinux.cfg")
    assert lts.default and lts.kernel == "boot/vmlinuz-lts" and lts.initrd == "boot/initramfs-lts"
    assert "console=ttyS0,115200" in lts.args
    (implicit,) = parse_syslinux("DEFAULT vmlinuz initrd=initrd.gz quiet\n", "isolinux.cfg")
    assert implicit.kernel == "vmlinuz" and implicit.initrd == "initrd.gz"
    assert implicit.args == ("quiet",) and implicit.default


def test_syslinux_include_loops_are_bounded() -> None:
    files = {"a.cfg": "include b.cfg\n", "b.cfg": "include a.cfg\nlabel x\nkernel /k\n"}
    entries = parse_syslinux("include a.cfg\n", "isolinux.cfg", _reader(files))
    assert [e.kernel for e in entries] == ["k"]


def test_grub_default_index_submenu_and_variables() -> None:
    entries = parse_grub(CUSTOM_GRUB, "boot/grub/grub.cfg")
    assert [e.label for e in entries] == [
        "Install MyDistro (serial)",
        "Install MyDistro (graphical)",
    ]
    serial = entries[0]
    assert serial.default  # set default="1": the second entry (the first is memtest)
    assert serial.kernel == "live/vmlinuz" and serial.initrd == "live/initrd.img"
    assert serial.args == ("boot=live", "components", "console=ttyS0,115200n8")  # no ${...}
    debian = parse_grub(DEBIAN_GRUB, "boot/grub/grub.cfg")
    assert [e.label for e in debian] == ["Install", "... Expert install"]
    assert debian[0].default and debian[0].args == ("vga=788", "---", "quiet")


def test_grub_ubuntu_and_loopback() -> None:
    entries = parse_grub(UBUNTU_GRUB, "boot/grub/grub.cfg")
    assert entries[0].kernel == "casper/vmlinuz" and entries[0].args == ("---",)
    assert entries[0].default
    (loop,) = parse_grub(UBUNTU_LOOPBACK, "boot/grub/loopback.cfg")
    assert loop.args == ("---",)


def test_grub_title_default_and_source() -> None:
    files = {"boot/grub/entries.cfg": "menuentry 'B' {\n linux /b\n initrd /bi\n}\n"}
    text = (
        "set default='B'\nmenuentry 'A' {\n linux /a\n initrd /ai\n}\n"
        "source /boot/grub/entries.cfg\n"
    )
    entries = parse_grub(text, "boot/grub/grub.cfg", _reader(files))
    assert [(e.label, e.default) for e in entries] == [("A", False), ("B", True)]


def test_bls_entry() -> None:
    entry = parse_bls(
        "title Arch\nlinux /arch/boot/x86_64/vmlinuz-linux\n"
        "initrd /arch/boot/x86_64/initramfs-linux.img\noptions archisobasedir=arch\n",
        "loader/entries/01-archiso.conf",
    )
    assert entry is not None and entry.kernel == "arch/boot/x86_64/vmlinuz-linux"
    assert entry.args == ("archisobasedir=arch",)


def test_read_boot_config_prefers_syslinux_then_grub() -> None:
    files = {"isolinux/isolinux.cfg": ANACONDA_ISOLINUX, "EFI/BOOT/grub.cfg": CUSTOM_GRUB}
    cfg = read_boot_config(_reader(files))
    assert cfg.files == ("isolinux/isolinux.cfg", "EFI/BOOT/grub.cfg")
    assert cfg.choose("live/vmlinuz") is not None
    chosen = cfg.choose()
    assert chosen is not None and chosen.kernel == "isolinux/vmlinuz"


def test_garbage_configs_give_no_entries() -> None:
    junk = "\x00\x01 {{{ }}} menuentry 'x\nlinux\ninitrd\n}\n}\nlabel\nkernel\nappend\n"
    assert parse_grub(junk, "boot/grub/grub.cfg") == []
    assert parse_syslinux(junk, "isolinux/isolinux.cfg") == []
    assert read_boot_config(lambda _p: junk.encode()).entries == ()
