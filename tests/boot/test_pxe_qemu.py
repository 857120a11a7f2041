"""``treeboot pxe`` on a LAN the test builds (see tests/_pxe_helpers.py): the network's own
dnsmasq hands out addresses, treeboot's dnsmasq answers PXE only (proxy-DHCP), and QEMU
clients on taps boot Debian 12's real installer from SeaBIOS+iPXE ROM, OVMF's own PXE, and
OVMF with Secure Boot enforced through the tree's shim and GRUB. Also: boot once, TFTP with a
real client (curl), writes refused, and nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _pxe_helpers import (
    HTTP_PORT,
    OVMF_DIR,
    PXE_IP,
    Lan,
    kill_pid,
    lan_network,
    needs_root_net,
    qemu_pxe_argv,
    sh,
    wait_for_text,
)
from _vm_helpers import DI, FIRSTBOOT_MARKER, TREE_PATH, debian_tree, firstboot_disk, needs_qemu

__all__ = ["debian_tree"]
pytestmark = [pytest.mark.slow, needs_root_net]
PROMPT = "Select a language"
INSTALLER_WAIT = 900.0  # TCG on a shared 2-core machine; OVMF is slower still
IPXE_DIR = Path("/usr/lib/ipxe")


class PxeRun:
    def __init__(self, lan: Lan, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.lan, self.proc, self.log = lan, proc, log

    def dnsmasq_pid(self) -> int:
        for line in self.log.read_text().splitlines():
            if "dnsmasq[" in line and "started" in line:
                return int(line.split("dnsmasq[", 1)[1].split("]", 1)[0])
        raise AssertionError("no dnsmasq start line in the log")


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    with lan_network(tmp_path) as network:
        yield network


def start_pxe(lan: Lan, tree: Path, *args: str) -> PxeRun:
    log = lan.workdir / "pxe.log"
    out = log.open("wb")
    argv = [sys.executable, "-m", "treeboot", "pxe", str(tree / TREE_PATH), "--interface", "p0",
            "--state-dir", str(lan.workdir / "state"), *args]  # fmt: skip
    proc = lan.start(lan.pxe, argv, stdout=out, stderr=out, env=dict(os.environ))
    wait_for_text(log, "serving on", 300, [proc])
    return PxeRun(lan, proc, log)


def boot_client(lan: Lan, mac: str, name: str, firmware: str = "bios",
                disk: Path | None = None) -> tuple[subprocess.Popen[bytes], Path]:  # fmt: skip
    console = lan.workdir / f"{name}.console"
    vars_file = None
    if firmware != "bios":
        vars_file = lan.workdir / f"{name}.vars.fd"
        src = "OVMF_VARS_4M.ms.fd" if firmware == "secboot" else "OVMF_VARS_4M.fd"
        vars_file.write_bytes((OVMF_DIR / src).read_bytes())
    argv = qemu_pxe_argv(lan.tap(), mac, console, firmware=firmware, vars_file=vars_file,
                         disk=disk)  # fmt: skip
    return lan.start(lan.lan, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), console


def access_lines(run: PxeRun) -> list[str]:
    return [ln for ln in run.log.read_text().splitlines() if ln.startswith("10.77.0.")]


@needs_qemu
@pytest.mark.qemu
@pytest.mark.timeout(2400)  # TCG boots on a shared machine; the waits below bound each step
def test_bios_ipxe_rom_boots_the_installer_then_boot_once_gives_the_local_disk(
    lan: Lan, debian_tree: Path
) -> None:
    mac = "52:54:00:77:00:10"
    run = start_pxe(lan, debian_tree)
    qemu, console = boot_client(lan, mac, "first")
    wait_for_text(console, PROMPT, INSTALLER_WAIT, [qemu, run.proc])
    kill_pid(qemu)
    lines = access_lines(run)
    assert any(f"GET /e0/linux 200 {(DI / 'linux').stat().st_size}" in ln for ln in lines)
    # The iPXE ROM was sent straight to HTTP: no TFTP, no second iPXE (no loop).
    assert "dnsmasq-tftp" not in run.log.read_text().split("TFTP root is", 1)[1]
    # The install calls back (as the generated preseed's late_command does) ...
    done = sh("curl", "-fsS", f"http://{PXE_IP}:{HTTP_PORT}/done/{mac}", ns=lan.router)
    assert "done" in done.stdout
    # ... and the next network boot of that MAC leaves iPXE for the disk.
    disk = firstboot_disk(lan.workdir / "disk.img")
    qemu, console = boot_client(lan, mac, "second", disk=disk)
    wait_for_text(console, FIRSTBOOT_MARKER, 600, [run.proc])
    kill_pid(qemu)
    status = subprocess.run(
        [sys.executable, "-m", "treeboot", "pxe", "--status", "--state-dir",
         str(lan.workdir / "state")], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"{mac}  done" in status


@needs_qemu
@pytest.mark.qemu
@pytest.mark.timeout(2400)  # TCG boots on a shared machine; the waits below bound each step
def test_ovmf_pxe_boots_the_installer_through_snponly(lan: Lan, debian_tree: Path) -> None:
    run = start_pxe(lan, debian_tree)
    qemu, console = boot_client(lan, "52:54:00:77:00:11", "uefi", firmware="uefi")
    wait_for_text(console, PROMPT, INSTALLER_WAIT, [qemu, run.proc])
    log = run.log.read_text()
    assert "sent /" in log and "snponly.efi" in log  # OVMF's PXE took iPXE over TFTP
    assert any("GET /e0/initrd/" in ln and " 200 " in ln for ln in access_lines(run))


@needs_qemu
@pytest.mark.qemu
@pytest.mark.timeout(2400)  # TCG boots on a shared machine; the waits below bound each step
def test_secure_boot_uses_the_trees_shim_and_grub(tmp_path: Path, debian_tree: Path) -> None:
    # GRUB 2.06 (Debian 12's signed grubx64.efi) ignores proxy-DHCP answers and loads its
    # config from the DHCP ACK's next-server: the LAN's DHCP server must name treeboot's host
    # there (a router's "TFTP server" setting). It still hands out no boot file.
    with lan_network(tmp_path, [f"--dhcp-boot=,,{PXE_IP}"]) as lan:
        mac = "52:54:00:77:00:12"
        run = start_pxe(lan, debian_tree, "--machine", f"{mac},loader=shim")
        qemu, console = boot_client(lan, mac, "secboot", firmware="secboot")
        wait_for_text(console, PROMPT, INSTALLER_WAIT, [qemu, run.proc])
        log = run.log.read_text()
        assert "bootnetx64.efi" in log and "grubx64.efi" in log
        assert f"treeboot/{mac}.cfg" in log and "treeboot/linux" in log  # over TFTP
        assert "Secure boot enabled" in console.read_text()  # the kernel saw it enforced


def test_tftp_serves_only_the_boot_programs_and_refuses_writes(lan: Lan, debian_tree: Path) -> None:
    run = start_pxe(lan, debian_tree)
    got = lan.workdir / "got.kpxe"
    sh("curl", "-fsS", "-o", str(got), f"tftp://{PXE_IP}/undionly.kpxe", ns=lan.router)
    assert got.read_bytes() == (IPXE_DIR / "undionly.kpxe").read_bytes()
    for path in ("linux", "../../../etc/passwd", "debian-installer/amd64/linux"):
        r = sh("curl", "-fsS", "-o", "/dev/null", f"tftp://{PXE_IP}/{path}", ns=lan.router,
               check=False)  # fmt: skip
        assert r.returncode != 0, path
    up = sh("curl", "-sS", "-T", str(got), f"tftp://{PXE_IP}/uploaded", ns=lan.router,
            check=False)  # fmt: skip
    assert up.returncode != 0
    assert not any(p.name == "uploaded" for p in Path("/tmp").glob("treeboot-pxe-*/tftp/*"))
    # Ctrl-C stops treeboot, its dnsmasq (by PID) and removes its files.
    pid = run.dnsmasq_pid()
    tftp_root = run.log.read_text().split("TFTP root is ", 1)[1].split()[0]
    run.proc.send_signal(2)
    assert run.proc.wait(60) == 0
    assert not Path(f"/proc/{pid}").exists()
    assert not Path(tftp_root).exists()


def test_dnsmasq_conf_mode_writes_a_checked_config_and_starts_no_dhcp(
    lan: Lan, debian_tree: Path
) -> None:
    conf = lan.workdir / "pxe.conf"
    run = start_pxe(lan, debian_tree, "--dnsmasq-conf", str(conf))
    text = conf.read_text()
    assert "dhcp-range=10.77.0.0,proxy" in text and "interface=p0" in text
    assert "dnsmasq[" not in run.log.read_text()
    assert (lan.workdir / "pxe.conf.tftp" / "undionly.kpxe").is_file()  # its TFTP root
    dnsmasq = "/usr/sbin/dnsmasq"
    assert subprocess.run([dnsmasq, "--test", f"--conf-file={conf}"], check=False).returncode == 0
    run.proc.send_signal(2)
    assert run.proc.wait(60) == 0


def test_secure_boot_grub_files_on_tftp_switch_to_local_boot_after_the_callback(
    lan: Lan, debian_tree: Path
) -> None:
    mac = "52:54:00:77:00:13"
    run = start_pxe(lan, debian_tree, "--machine", f"{mac},loader=shim")
    cfg_url = f"tftp://{PXE_IP}/debian-installer/amd64/grub/treeboot/{mac}.cfg"
    stub = sh("curl", "-fsS", f"tftp://{PXE_IP}/debian-installer/amd64/grub/grub.cfg",
              ns=lan.router).stdout  # fmt: skip
    assert "configfile $prefix/treeboot/${net_default_mac}.cfg" in stub
    cfg = sh("curl", "-fsS", cfg_url, ns=lan.router).stdout
    assert "linux /treeboot/linux console=ttyS0" in cfg and "initrd /treeboot/initrd" in cfg
    sh("curl", "-fsS", f"http://{PXE_IP}:{HTTP_PORT}/done/{mac}", ns=lan.router)
    assert sh("curl", "-fsS", cfg_url, ns=lan.router).stdout.endswith("exit\n")
    run.proc.send_signal(2)
    assert run.proc.wait(60) == 0


def test_secure_boot_refuses_secrets_it_would_serve_over_tftp(lan: Lan, debian_tree: Path) -> None:
    pw = lan.workdir / "pw"
    pw.write_text("s3cret-password\n")
    mac = "52:54:00:77:00:14"
    proc = subprocess.run(
        ["ip", "netns", "exec", lan.pxe, sys.executable, "-m", "treeboot", "pxe",
         str(debian_tree / TREE_PATH), "--interface", "p0", "--state-dir", str(lan.workdir),
         "--unattended", f"profile=minimal,admin-password-file={pw}",
         "--machine", f"{mac},loader=shim"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "carries secrets" in proc.stderr and "hint: use ssh-key=" in proc.stderr
    assert not list(Path("/tmp").glob("treeboot-pxe-*/tftp/treeboot/initrd-52-54-00-77-00-14"))
