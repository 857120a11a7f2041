"""Kernel command line: per-installer rules, merging, quoting and the kernel's limits."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from treeboot.detect.iso import udev_label
from treeboot.errors import BootError, MetadataError, UsageError
from treeboot.model import Identification, Media
from treeboot.prepare.cmdline import (
    CmdlineRules,
    build_cmdline,
    check_cmdline,
    cmdline_warnings,
    guest_iso_name,
    init_counts,
    join_cmdline,
    load_rules,
    parse_rules,
    placeholder_values,
    quote_karg,
    select_mode,
)

GUEST = "http://10.0.2.100/"


def ident(installer: str | None, **kw: Any) -> Identification:
    base: dict[str, Any] = dict(
        location="http://127.0.0.1:8000/tree/",
        media=Media.TREE,
        os=None,
        family=None,
        name=None,
        version=None,
        arch="x86_64",
        installer=installer,
        kernel="vmlinuz",
        initrd="initrd.img",
    )
    base.update(kw)
    return Identification(**base)


def iso_ident(installer: str, volid: str = "Fedora-S-dvd-x86_64-37", **kw: Any) -> Identification:
    kw.setdefault("needs", ["cdrom"])
    kw.setdefault("location", "/srv/isos/x.iso")
    return ident(installer, media=Media.ISO, extra={"iso": {"volume_id": volid}}, **kw)


def build(i: Identification, repo: str | None = GUEST, **kw: Any) -> list[str]:
    kw.setdefault("console", "ttyS0")
    return build_cmdline(i, arch=i.arch or "x86_64", repo_url=repo, **kw)


# -- the rules file -------------------------------------------------------------------------


def test_every_rule_loads_and_names_known_installers() -> None:
    rules = load_rules()
    assert isinstance(rules, CmdlineRules)
    pkg = resources.files("treeboot").joinpath("rules")
    named: set[str] = set()
    for other in ("distros.toml", "iso_layouts.toml"):  # the detectors' installer names
        if pkg.joinpath(other).is_file():
            named |= set(tomllib.loads(pkg.joinpath(other).read_text()).get("installers", {}))
    for name in named:
        assert rules.installer(name) is not None, f"no cmdline rule for installer {name!r}"
    for name in ("anaconda", "debian-installer", "linuxrc", "subiquity", "archiso", "alpine"):
        assert rules.installer(name) is not None
    assert rules.installer("mageia") is rules.installer("drakx")
    assert rules.installer("nonesuch") is None and rules.installer(None) is None


@pytest.mark.parametrize(
    "data, message",
    [
        ({"installers": {"x": {"repo": {"args": ["a={nope}"]}}}}, "unknown placeholder"),
        ({"installers": {"x": {"bogus": 1}}}, "unknown keys"),
        ({"installers": {"x": {"repo": {"args": "a=b"}}}}, "list of strings"),
        ({"installers": {"x": {"max_options": -1}}}, "max_options"),
        ({"defaults": {"cmdline_size": 0}}, "cmdline_size"),
        ({"installers": {"x": {"repo": {"requires": ["nope"]}}}}, "requires"),
    ],
)
def test_bad_rules_are_rejected(data: dict[str, Any], message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        parse_rules(data)


# -- per installer --------------------------------------------------------------------------


def test_anaconda_tree_gets_inst_repo_text_and_console() -> None:
    args = build(ident("anaconda", needs=["repo-url"]), "http://10.0.2.100/fedora/41")
    assert args == ["inst.repo=http://10.0.2.100/fedora/41/", "inst.text", "console=ttyS0"]


def test_anaconda_tree_without_url_fails_before_boot() -> None:
    with pytest.raises(BootError, match="needs the tree's URL") as e:
        build(ident("anaconda", needs=["repo-url"]), None)
    assert e.value.hint


def test_anaconda_stage2_only() -> None:
    args = build(ident("anaconda", needs=["repo-url", "stage2"]), GUEST)
    assert args[0] == "inst.stage2=http://10.0.2.100/"


def test_anaconda_iso_attached_keeps_medium_stage2_and_drops_quiet() -> None:
    i = iso_ident("anaconda", boot_args=["inst.stage2=hd:LABEL=Fedora-S-dvd-x86_64-37", "quiet"])
    assert select_mode(i, GUEST) == "cdrom"  # a local ISO that needs its medium is attached
    assert build(i) == ["inst.stage2=hd:LABEL=Fedora-S-dvd-x86_64-37", "inst.text", "console=ttyS0"]


def test_anaconda_iso_attached_without_medium_args_uses_cdlabel() -> None:
    args = build(iso_ident("anaconda", volid="Fedora S dvd"), None)
    assert args[0] == "inst.stage2=hd:CDLABEL=Fedora\\x20S\\x20dvd"


def test_anaconda_iso_served_over_http_replaces_medium_stage2() -> None:
    i = iso_ident("anaconda", boot_args=["inst.stage2=hd:LABEL=X", "rd.live.check", "quiet"])
    args = build(i, medium_attached=False)
    assert args == ["rd.live.check", "inst.repo=http://10.0.2.100/", "inst.text", "console=ttyS0"]


def test_debian_installer_sets_mirror_only_for_a_mirror_url() -> None:
    i = ident("debian-installer", boot_args=["vga=788", "---", "quiet"])
    args = build(i, "http://10.0.2.100/debian/dists/bookworm/main/installer-amd64/",
                 unattended_args=["auto=true", "priority=critical"])  # fmt: skip
    assert args == [
        "mirror/country=manual",
        "mirror/http/hostname=10.0.2.100",
        "mirror/http/directory=/debian",
        "console=ttyS0",
        "auto=true",
        "priority=critical",
        "---",
        "quiet",  # after ---: for the installed system, untouched
    ]
    plain = build(i, "http://10.0.2.100/netboot/")
    assert not any(a.startswith("mirror/") for a in plain)


def test_debian_installer_served_iso_is_its_own_mirror() -> None:
    values = placeholder_values(iso_ident("debian-installer"), "http://10.0.2.100/")
    assert values["mirror_dir"] == "/" and values["mirror_host"] == "10.0.2.100"


def test_linuxrc_install_url() -> None:
    args = build(ident("linuxrc", needs=["repo-url"]), "http://10.0.2.100/leap/15.6")
    assert args[0] == "install=http://10.0.2.100/leap/15.6/"


def test_subiquity_served_iso_gets_casper_url_of_the_image() -> None:
    i = iso_ident("subiquity", location="/srv/isos/ubuntu-24.04-live-server-amd64.iso",
                  boot_args=["boot=casper", "---"])  # fmt: skip
    args = build(i, medium_attached=False)
    assert args == [
        "boot=casper",
        "ip=dhcp",
        "netboot=url",
        "url=http://10.0.2.100/ubuntu-24.04-live-server-amd64.iso",
        "console=ttyS0",
        "---",
    ]
    assert build(i, "http://10.0.2.100/u.iso", medium_attached=False)[3] == (
        "url=http://10.0.2.100/u.iso"
    )
    tree = ident("subiquity", boot_args=["boot=casper"])  # no ISO URL: casper gets nothing
    assert build(tree, GUEST) == ["boot=casper", "console=ttyS0"]


def test_subiquity_attached_medium_adds_boot_casper_once() -> None:
    i = iso_ident("subiquity", boot_args=["boot=casper", "quiet", "splash"])
    assert build(i) == ["boot=casper", "console=ttyS0"]
    assert build(iso_ident("subiquity")) == ["boot=casper", "console=ttyS0"]


def test_archiso_over_http_drops_the_medium_label() -> None:
    i = ident(
        "archiso", needs=["repo-url"], boot_args=["archisobasedir=arch", "archisolabel=ARCH_2024"]
    )
    args = build(i, "http://10.0.2.100/arch")
    assert args == [
        "archisobasedir=arch",
        "ip=dhcp",
        "archiso_http_srv=http://10.0.2.100/arch/",
        "console=ttyS0",
    ]


def test_archiso_attached_uses_the_volume_label() -> None:
    args = build(iso_ident("archiso", volid="ARCH_202410"), None)
    assert args == ["archisobasedir=arch", "archisolabel=ARCH_202410", "console=ttyS0"]


def test_alpine_repo_and_modloop_follow_the_kernel_flavour() -> None:
    i = ident("alpine", needs=["repo-url"], kernel="boot/vmlinuz-virt",
              boot_args=["modules=loop,squashfs,sd-mod,usb-storage", "quiet"])  # fmt: skip
    assert build(i, GUEST, console="ttyS0") == [
        "modules=loop,squashfs,sd-mod,usb-storage",
        "ip=dhcp",
        "alpine_repo=http://10.0.2.100/apks",
        "modloop=http://10.0.2.100/boot/modloop-virt",
        "console=ttyS0",
    ]
    no_flavour = build(ident("alpine", needs=["repo-url"], kernel="boot/vmlinuz"), GUEST)
    assert not any(a.startswith("modloop=") for a in no_flavour)


def test_drakx_automatic() -> None:
    args = build(ident("drakx", needs=["repo-url"]), "http://10.0.2.100/mageia/distrib/9/x86_64/")
    assert args[0] == (
        "automatic=method:http,network:dhcp,server:10.0.2.100,directory:/mageia/distrib/9/x86_64"
    )


def test_agama_live_root_from_the_served_iso() -> None:
    i = iso_ident("agama", location="/isos/agama.x86_64.iso", boot_args=["root=live:CDLABEL=A"])
    args = build(i, medium_attached=False)
    assert args[0] == "root=live:http://10.0.2.100/agama.x86_64.iso"
    assert "root=live:CDLABEL=A" not in args


def test_unknown_installer_needs_extra_args_for_a_url() -> None:
    with pytest.raises(BootError, match="does not know how to tell"):
        build(ident("mystery"), GUEST)
    assert build(ident("mystery"), GUEST, extra_args=["repo=x"]) == ["console=ttyS0", "repo=x"]
    assert build(ident(None), None) == ["console=ttyS0"]


# -- console, merging, extra args -----------------------------------------------------------


def test_console_auto_none_and_user_choice() -> None:
    i = ident("debian-installer", arch="aarch64")
    assert build(i, None, console="auto") == ["console=ttyAMA0"]
    assert build(ident("anaconda", needs=[]), None, console=None) == []  # no inst.text either
    assert build(i, None, extra_args=["console=hvc0"]) == ["console=hvc0"]


def test_later_groups_win_but_repeatable_keys_accumulate() -> None:
    i = ident("anaconda", needs=["repo-url"], boot_args=["console=tty0", "inst.ks=cdrom:/ks.cfg"])
    args = build(
        i,
        unattended_args=["inst.ks=file:/ks.cfg"],
        extra_args=["inst.repo=http://10.0.2.100/other/", "inst.addrepo=a,http://x/"],
    )
    assert args == [
        "console=tty0",
        "inst.text",
        "console=ttyS0",
        "inst.ks=file:/ks.cfg",
        "inst.repo=http://10.0.2.100/other/",
        "inst.addrepo=a,http://x/",
    ]


def test_unusable_arguments_are_refused() -> None:
    with pytest.raises(UsageError, match="cannot be passed") as e:
        build(ident("anaconda", needs=[]), None, extra_args=['a="b"'])
    assert "double quotes" in (e.value.hint or "")
    with pytest.raises(UsageError):
        build(ident("anaconda", needs=[], boot_args=["a\nb"]), None)


# -- quoting --------------------------------------------------------------------------------


def test_quote_karg() -> None:
    assert quote_karg("inst.repo=http://x/") == "inst.repo=http://x/"
    assert quote_karg("label=a b") == 'label="a b"'
    assert quote_karg("a b") == '"a b"'
    assert join_cmdline(["console=ttyS0", "x=1 2", ""]) == 'console=ttyS0 x="1 2"'
    with pytest.raises(UsageError):
        quote_karg('x="y"')


def kernel_split(cmdline: str) -> list[str]:
    """Split like the kernel's lib/cmdline.c next_arg(), returning "param=value" strings."""
    out = []
    i = 0
    while i < len(cmdline):
        while i < len(cmdline) and cmdline[i] == " ":
            i += 1
        if i >= len(cmdline):
            break
        in_quote = False
        j = i
        while j < len(cmdline) and (in_quote or cmdline[j] != " "):
            if cmdline[j] == '"':
                in_quote = not in_quote
            j += 1
        out.append(cmdline[i:j].replace('"', ""))
        i = j
    return out


@given(st.lists(st.text(st.sampled_from("ab=. /:-x"), min_size=1, max_size=12)))
def test_join_then_kernel_split_round_trips(args: list[str]) -> None:
    assert kernel_split(join_cmdline(args)) == args


# -- limits ---------------------------------------------------------------------------------


def test_cmdline_size_limit_is_the_header_value_without_nul() -> None:
    check_cmdline(["x=" + "a" * 2045], installer=None, cmdline_size=2047)  # 2047 bytes: fits
    with pytest.raises(BootError, match=r"2048 bytes.*at most 2047") as e:
        check_cmdline(["x=" + "a" * 2046], installer=None, cmdline_size=2047)
    assert e.value.hint
    with pytest.raises(BootError, match="at most 255"):
        check_cmdline(["x=" + "a" * 300], installer=None, cmdline_size=255)
    with pytest.raises(BootError):  # no header: the x86 default
        check_cmdline(["x=" + "a" * 2100], installer=None, cmdline_size=None)


def test_init_counts_follow_the_kernel() -> None:
    args = ["console=ttyS0", "inst.repo=x", "quiet", "auto=true", "auto=false", "priority=low",
            "single", "--", "a=b", "c"]  # fmt: skip
    assert init_counts(args, load_rules().kernel_params) == (2, 3)


def test_kernel_panics_past_31_init_environment_variables() -> None:
    check_cmdline([f"k{i}=1" for i in range(31)], installer=None, cmdline_size=None)
    with pytest.raises(BootError, match=r"32 environment variables.*panics past 31"):
        check_cmdline([f"k{i}=1" for i in range(32)], installer=None, cmdline_size=None)
    with pytest.raises(BootError, match="33 arguments"):
        check_cmdline([f"w{i}" for i in range(33)], installer=None, cmdline_size=None)
    # module parameters ("a.b=") never reach init
    check_cmdline([f"m.k{i}=1" for i in range(60)], installer="anaconda", cmdline_size=None)


def test_debian_installer_counts_every_option_as_its_manual_says() -> None:
    args = [f"m.k{i}=1" for i in range(25)] + [f"k{i}=v" for i in range(8)]  # 33 with "="
    check_cmdline(args, installer="anaconda", cmdline_size=None)
    with pytest.raises(BootError, match=r"33 environment options.*maximum of 32") as e:
        check_cmdline(args, installer="debian-installer", cmdline_size=None)
    assert "initrd" in (e.value.hint or "")
    check_cmdline(args[:32], installer="debian-installer", cmdline_size=None)


def test_debian_installer_warns_about_values_with_spaces(caplog: pytest.LogCaptureFixture) -> None:
    args = ["passwd/user-fullname=Jane Doe", "auto=true"]
    assert cmdline_warnings(args, installer="anaconda") == []
    (warning,) = cmdline_warnings(args, installer="debian-installer")
    assert "Jane Doe" in warning
    check_cmdline(args, installer="debian-installer", cmdline_size=None)
    assert "spaces" in caplog.text


# -- helpers --------------------------------------------------------------------------------


def test_udev_label_and_guest_iso_name() -> None:
    assert udev_label("CentOS 7 x86_64") == "CentOS\\x207\\x20x86_64"
    assert udev_label("Fedora-S-dvd-x86_64-37") == "Fedora-S-dvd-x86_64-37"
    assert guest_iso_name("/srv/My Image.iso") == "My_Image.iso"
    assert guest_iso_name("file:///srv/a%20b.img") == "a_b.img.iso"
    assert guest_iso_name("http://h/x/ubuntu.ISO") == "ubuntu.ISO"
