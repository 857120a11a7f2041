"""``treeboot install`` without booting: --dry-run (golden argv), errors before QEMU starts,
disk handling, list/console/stop on VMs that are not running."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest

import treeboot
from _net_helpers import serve_http
from _paths import GOLDEN
from _vm_helpers import (
    DI_ARM64_KERNEL,
    DI_KERNEL,
    TREE_PATH,
    debian_tree,
    run_treeboot,
    state_dir,
    tree_url,
)
from treeboot.cli.main import main
from treeboot.devtree import build_debian_tree

__all__ = ["debian_tree", "tree_url"]  # the fixtures, imported for pytest
needs_di = pytest.mark.skipif(not DI_KERNEL.is_file(), reason="needs debian-installer netboot")


def _normalize(argv: list[str], url: str) -> list[str]:
    home = os.environ["TREEBOOT_HOME"]
    cache = os.environ["TREEBOOT_CACHE"]
    port = url.split(":")[2].split("/")[0]
    # @TREEBOOT@ is where treeboot keeps its guestfwd relay (treeboot/boot/ since the stages).
    pkg = str(Path(treeboot.__file__).parent / "boot")
    out = []
    for arg in argv:
        arg = arg.replace(sys.executable, "@PYTHON@").replace(pkg, "@TREEBOOT@")
        arg = arg.replace(home, "@HOME@").replace(cache, "@CACHE@")
        arg = re.sub(r"\b[0-9a-f]{64}\b", "@SHA256@", arg)  # blobs: depend on the d-i build
        out.append(arg.replace(f" {port}", " @PORT@").replace(f":{port}/", ":@PORT@/"))
    return out


@needs_di
def test_dry_run_prints_the_exact_command_and_starts_nothing(
    tree_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A cache of its own: a dry run derives no boot form but shows one already derived, so in
    # the suite's shared cache the argv would depend on which tests ran before.
    monkeypatch.setenv("TREEBOOT_CACHE", str(tmp_path / "cache"))
    rc = main(["install", tree_url, "--name", "dry", "--accel", "tcg", "--disk", "size=4",
               "--dry-run", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["dry_run"] is True
    assert out["identification"]["os"] == "debian12"
    argv = _normalize(out["argv"], tree_url)
    golden = GOLDEN / "dry-run-debian12.argv"
    if os.environ.get("TREEBOOT_UPDATE_GOLDEN"):
        golden.write_text("\n".join(argv) + "\n")
    assert argv == golden.read_text().splitlines()
    assert not state_dir("dry").exists()  # nothing created: no disk, no state


@pytest.mark.skipif(not DI_ARM64_KERNEL.is_file(), reason="needs debian-installer arm64")
def test_dry_run_arm64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = build_debian_tree(tmp_path, "arm64")
    with serve_http(tmp_path) as srv:
        url = srv.url + "dists/bookworm/main/installer-arm64/"
        rc = main(["install", url, "--name", "dry-arm", "--accel", "auto", "--disk", "size=8",
                   "--dry-run", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and tree.is_dir()
    assert out["accel"]["accel"] == "tcg"  # an arm64 guest on this x86 host: emulation
    argv = _normalize(out["argv"], url)
    golden = GOLDEN / "dry-run-debian12-arm64.argv"
    if os.environ.get("TREEBOOT_UPDATE_GOLDEN"):
        golden.write_text("\n".join(argv) + "\n")
    assert argv == golden.read_text().splitlines()


@needs_di
def test_dry_run_human_output(tree_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["install", tree_url, "--name", "dryh", "--accel", "tcg", "--disk", "none",
               "--dry-run"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "Debian 12" in out and "QEMU command:" in out and "-kernel" in out
    assert "disk:      none" in out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_di
def test_unreachable_location_fails_before_qemu_starts(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/{TREE_PATH}"
    proc = run_treeboot("install", url, "--name", "unreach", "--accel", "tcg", "--disk", "none",
                        "--kernel", str(DI_KERNEL), "--initrd", str(DI_KERNEL))  # fmt: skip
    assert proc.returncode == 4, proc.stderr  # LocationError
    assert f"127.0.0.1:{url.split(':')[2].split('/')[0]}" in proc.stderr
    assert "hint:" in proc.stderr
    assert not (state_dir("unreach") / "qemu.pid").exists()
    assert not (state_dir("unreach") / "qemu.log").exists()


@needs_di
def test_unreachable_location_without_overrides(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/{TREE_PATH}"
    proc = run_treeboot("install", url, "--name", "unreach2", "--accel", "tcg")
    assert proc.returncode == 4, proc.stderr
    assert "treeboot: error:" in proc.stderr
    assert not (state_dir("unreach2") / "qemu.log").exists()


@needs_di
def test_existing_disk_is_never_overwritten_without_force(
    tree_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / "keep.qcow2"
    disk.write_bytes(b"precious")
    rc = main(["install", tree_url, "--name", "keep", "--accel", "tcg",
               "--disk", f"path={disk},size=2", "--dry-run"])  # fmt: skip
    assert rc == 2
    assert "would be overwritten" in capsys.readouterr().err
    assert disk.read_bytes() == b"precious"
    # Without size= the image is used as it is.
    rc = main(["install", tree_url, "--name", "keep", "--accel", "tcg",
               "--disk", f"path={disk}", "--dry-run", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["plan"]["disk"]["create"] is False
    assert out["plan"]["disk"]["format"] == "raw"


@needs_di
def test_initrd_inject_and_extra_args_in_plan(
    tree_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = tmp_path / "preseed.cfg"
    extra.write_text("d-i debian-installer/locale string en_US\n")
    rc = main(["install", tree_url, "--name", "inj", "--accel", "tcg", "--disk", "none",
               "--initrd-inject", str(extra), "--extra-args", "foo=1 'bar=a b'",
               "--dry-run", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    plan = out["plan"]
    assert plan["initrd"] == str(state_dir("inj") / "initrd.img")
    assert plan["temp_files"] == [plan["initrd"]]
    assert {"foo=1", "bar=a b"} <= set(plan["cmdline"])
    assert not Path(plan["initrd"]).exists()  # dry run: not written


def test_list_console_stop_on_unknown_vm(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stop", "no-such-vm"]) == 2
    assert "no VM named" in capsys.readouterr().err
    assert main(["console", "no-such-vm"]) == 2
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert all(vm["name"] != "no-such-vm" for vm in listed)


@needs_di
def test_unattended_is_injected_and_secrets_stay_out_of_the_plan(
    tree_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = tmp_path / "pw"
    password.write_text("s3cret-Passw0rd\n")
    rc = main(["install", tree_url, "--name", "unatt", "--accel", "tcg", "--disk", "none",
               "--unattended", f"admin-user=alice,user-password-file={password}",
               "--dry-run", "--json"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0
    plan = json.loads(text)["plan"]
    assert {"auto=true", "priority=critical"} <= set(plan["cmdline"])
    assert plan["initrd"] == str(state_dir("unatt") / "initrd.img")
    assert "s3cret" not in text


@needs_di
def test_unattended_file_is_validated_and_injected(
    tree_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "my-preseed.cfg"
    preseed.write_text(
        "d-i debian-installer/locale string en_US.UTF-8\n"
        "d-i keyboard-configuration/xkb-keymap select us\n"
        "d-i passwd/root-password password hunter2-secret\n"
        "d-i passwd/root-password-again password hunter2-secret\n"
    )
    rc = main(["install", tree_url, "--name", "ufile", "--accel", "tcg", "--disk", "none",
               "--unattended-file", str(preseed), "--dry-run", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    plan = json.loads(captured.out)["plan"]
    assert "auto=true" in plan["cmdline"]
    assert plan["initrd"] == str(state_dir("ufile") / "initrd.img")
    assert "hunter2" not in captured.out
