"""The pure parts of ``treeboot pxe``: iPXE/GRUB/pxelinux/dnsmasq renderers against golden
files, the kernel cmdline quoting of each loader, per-MAC settings and the boot-once edits of
unattended files.

Regenerate after an intended change: TREEBOOT_UPDATE_GOLDEN=1 pytest tests/boot/test_pxe_render.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from _paths import GOLDEN
from treeboot.boot.backends.pxe import callback, grub, ipxe, pxelinux
from treeboot.boot.backends.pxe.dnsmasq import DnsmasqConfig, UefiLoader, render_dnsmasq_conf
from treeboot.boot.backends.pxe.entry import BootEntry, LocalBoot
from treeboot.boot.backends.pxe.machines import Loader, load_machines, parse_machine
from treeboot.errors import UsageError

BASE = "http://10.0.0.5:8067/"
# A value with a space: the case loaders quote differently (cobbler#1777).
CMDLINE = ("console=ttyS0", "priority=critical", "preseed/late_command=echo a b", "quiet")
ENTRY = BootEntry(
    "Debian 12 (bookworm)", f"{BASE}e0/linux", f"{BASE}e0/initrd/52:54:00:12:34:56", CMDLINE
)
TFTP_ENTRY = BootEntry("Debian 12 (bookworm)", "/treeboot/linux", "/treeboot/initrd", CMDLINE)
LOCAL = LocalBoot("install done")
GOLDEN_PXE = GOLDEN / "pxe"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN_PXE / name
    if os.environ.get("TREEBOOT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize(
    ("name", "render"),
    [
        ("boot.ipxe", lambda: ipxe.render_ipxe_script(ENTRY)),
        ("local.ipxe", lambda: ipxe.render_ipxe_script(LOCAL)),
        ("chain.ipxe", lambda: ipxe.render_ipxe_chain(BASE)),
        ("menu.ipxe", lambda: ipxe.render_ipxe_menu([ENTRY, ENTRY])),
        ("install.grub.cfg", lambda: grub.render_grub_cfg(TFTP_ENTRY)),
        ("local.grub.cfg", lambda: grub.render_grub_cfg(LOCAL)),
        ("stub.grub.cfg", lambda: grub.render_grub_stub()),
        ("install.pxelinux.cfg", lambda: pxelinux.render_pxelinux_cfg(ENTRY)),
        ("local.pxelinux.cfg", lambda: pxelinux.render_pxelinux_cfg(LOCAL)),
    ],
)
def test_loader_configs_match_golden_files(name: str, render: object) -> None:
    assert callable(render)
    check_golden(name, render())


def test_each_loader_quotes_a_value_with_a_space_its_own_way() -> None:
    arg = ["preseed/late_command=echo a b"]
    # iPXE splits at spaces and re-joins with one: the kernel's own quotes pass through.
    assert ipxe.quote_ipxe_cmdline(arg) == 'preseed/late_command="echo a b"'
    # GRUB re-adds double quotes around a word with a space: give it the bare word.
    assert grub.quote_grub_cmdline(arg) == "'preseed/late_command=echo a b'"
    # pxelinux hands APPEND to the kernel as written.
    assert 'APPEND initrd=x preseed/late_command="echo a b"' in pxelinux.render_pxelinux_cfg(
        BootEntry("x", "k", "x", tuple(arg))
    )


@pytest.mark.parametrize("bad", ["a=${net0/mac}", "a=x  y", 'a="b"', "a=\tb"])
def test_arguments_a_loader_cannot_pass_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        ipxe.quote_ipxe_cmdline([bad])
    if "${" not in bad and "  " not in bad:
        with pytest.raises(UsageError):
            grub.quote_grub_cmdline([bad])


def test_grub_keeps_dollar_and_quotes_literal() -> None:
    assert grub.quote_grub_word("a=$x'y") == "'a=$x'\\''y'"


def _conf(**kw: object) -> DnsmasqConfig:
    args: dict[str, object] = {
        "interface": "eth1", "subnet": "10.0.0.0", "tftp_root": "/srv/tftp",
        "http_base": BASE, "server_ip": "10.0.0.5",
    } | kw  # fmt: skip
    return DnsmasqConfig(**args)  # type: ignore[arg-type]


def test_dnsmasq_config_matches_golden_file() -> None:
    conf = _conf(secure_boot_macs=["52:54:00:12:34:56"], uefi_loader=UefiLoader.IPXE)
    check_golden("dnsmasq.conf", render_dnsmasq_conf(conf))


@pytest.mark.skipif(not Path("/usr/sbin/dnsmasq").exists(), reason="needs dnsmasq-base")
def test_dnsmasq_accepts_the_generated_config(tmp_path: Path) -> None:
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(render_dnsmasq_conf(_conf(tftp_root=str(tftp), pid_file=str(tmp_path / "p"))))
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    proc = subprocess.run([dnsmasq, "--test", f"--conf-file={conf}"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "syntax check OK" in proc.stderr


@pytest.mark.parametrize("bad", ["eth1\nenable-ra", "eth1,x", ""])
def test_dnsmasq_config_refuses_injected_lines(bad: str) -> None:
    with pytest.raises(UsageError):
        render_dnsmasq_conf(_conf(interface=bad))


def test_machine_options_and_toml_file(tmp_path: Path) -> None:
    m = parse_machine("52-54-00-AB-CD-EF,loader=shim,max-boots=2,hostname=web1,profile=minimal")
    assert m.mac == "52:54:00:ab:cd:ef"
    assert (m.loader, m.max_boots) == (Loader.SHIM, 2)
    assert dict(m.unattended) == {"hostname": "web1", "profile": "minimal"}
    path = tmp_path / "machines.toml"
    path.write_text(
        '[machines."52:54:00:12:34:56"]\nloader = "ipxe"\nextra-args = "quiet"\n'
        'unattended = { hostname = "db1" }\n'
    )
    (f,) = load_machines(path)
    assert (f.mac, f.extra_args, dict(f.unattended)) == ("52:54:00:12:34:56", "quiet",
                                                          {"hostname": "db1"})  # fmt: skip


@pytest.mark.parametrize("spec", ["52:54:00", "52:54:00:12:34:56,loader=grub", "zz:54:00:12:34:56"])
def test_bad_machine_options_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_machine(spec)


URL = "http://10.0.0.5:8067/done/52:54:00:12:34:56"


def test_preseed_callback_extends_an_existing_late_command() -> None:
    text = "d-i foo string x\nd-i preseed/late_command string in-target true\n"
    out = callback.add_callback("preseed.cfg", text, URL)
    assert out is not None
    assert f"late_command string in-target true; wget -q -O /dev/null {URL}" in out
    assert out.count("late_command") == 1
    added = callback.add_callback("preseed.cfg", "d-i foo string x\n", URL)
    assert added is not None and added.endswith("|| true\n")


def test_kickstart_autoyast_autoinstall_callbacks() -> None:
    ks = callback.add_callback("ks.cfg", "text\nreboot\n", URL)
    assert ks is not None and "%post --nochroot\nwget" in ks and ks.endswith("%end\n")
    ay = callback.add_callback("autoinst.xml", "<profile>\n</profile>\n", URL)
    assert ay is not None and "<init-scripts" in ay and URL in ay
    ai = callback.add_callback("user-data", "#cloud-config\nautoinstall:\n  version: 1\n", URL)
    assert ai is not None and "  late-commands:\n    - " in ai and "  version: 1" in ai
    assert callback.add_callback("other.txt", "x", URL) is None
