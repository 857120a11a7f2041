"""BootPlan, Architecture facts, and the pipeline's pure decisions (disk spec, resources)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from treeboot.arch import Architecture
from treeboot.boot.plan import BootPlan, DiskPlan, NetworkPlan, VMPaths
from treeboot.boot.request import InstallRequest
from treeboot.boot.steps import DiskRequest, resources, split_extra_args
from treeboot.errors import UsageError
from treeboot.model import Identification, Media


def _ident(os_id: str | None, family: str | None) -> Identification:
    return Identification(
        location="http://127.0.0.1:1/", media=Media.TREE, os=os_id, family=family, name=None,
        version=None, arch="x86_64", installer="debian-installer", kernel="linux",
        initrd="initrd.gz",
    )  # fmt: skip


def test_plan_json_round_trip(tmp_path: Path) -> None:
    plan = BootPlan(
        name="demo",
        arch=Architecture.AARCH64,
        accel="tcg",
        memory_mib=2048,
        vcpus=2,
        paths=VMPaths.in_dir(tmp_path),
        kernel=tmp_path / "linux",
        initrd=None,
        cmdline=["console=ttyAMA0", "a=b c"],
        disk=DiskPlan(tmp_path / "d.qcow2", "qcow2", 8.0, create=True),
        network=NetworkPlan("user", ["-netdev", "user,id=net0,restrict=on"]),
        cdrom=tmp_path / "x.iso",
        temp_files=[tmp_path / "initrd.img"],
    )
    data = json.loads(json.dumps(plan.to_json()))
    assert data["arch"] == "aarch64" and data["paths"]["qmp_socket"] == str(tmp_path / "qmp.sock")
    assert BootPlan.from_json(data) == plan


@pytest.mark.parametrize(
    ("name", "arch", "console", "machine", "qemu"),
    [
        ("amd64", Architecture.X86_64, "ttyS0", "q35", "qemu-system-x86_64"),
        ("arm64", Architecture.AARCH64, "ttyAMA0", "virt", "qemu-system-aarch64"),
        ("ppc64el", Architecture.PPC64LE, "hvc0", "pseries", "qemu-system-ppc64"),
        ("s390x", Architecture.S390X, "ttysclp0", "s390-ccw-virtio", "qemu-system-s390x"),
        ("riscv64", Architecture.RISCV64, "ttyS0", "virt", "qemu-system-riscv64"),
        ("i386", Architecture.I686, "ttyS0", "q35", "qemu-system-i386"),
    ],
)
def test_architecture_facts(
    name: str, arch: Architecture, console: str, machine: str, qemu: str
) -> None:
    assert Architecture.from_name(name) is arch
    assert Architecture.from_name(str(arch)) is arch
    assert arch.default_console() == console
    assert arch.machine() == machine
    assert arch.qemu_binary() == qemu
    assert arch.cpu("kvm") == "host"


def test_unknown_architecture() -> None:
    with pytest.raises(UsageError, match="unknown architecture"):
        Architecture.from_name("mips")


def test_every_arch_has_every_fact() -> None:
    for arch in Architecture:
        assert arch.qemu_binary() and arch.machine() and arch.default_console()
        assert arch.kernel_format() and arch.debian_name()
        assert arch.device_bus() in ("pci", "ccw")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, DiskRequest()),
        ("none", DiskRequest(none=True)),
        ("size=8", DiskRequest(size_gib=8.0)),
        ("size=0.5,format=raw", DiskRequest(size_gib=0.5, format="raw")),
        ("path=/tmp/x.img,size=2", DiskRequest(path=Path("/tmp/x.img"), size_gib=2.0)),
        ("/tmp/y.qcow2", DiskRequest(path=Path("/tmp/y.qcow2"))),
    ],
)
def test_disk_spec(spec: str | None, expected: DiskRequest) -> None:
    assert DiskRequest.parse(spec) == expected


@pytest.mark.parametrize("spec", ["size=", "size=-1", "size=big", "bus=virtio", "path=/x,foo=1"])
def test_bad_disk_spec(spec: str) -> None:
    with pytest.raises(UsageError):
        DiskRequest.parse(spec)


def test_resources_from_osinfo_and_family_fallback() -> None:
    req = InstallRequest("http://127.0.0.1:1/", name="r")
    # debian11 is in the database; debian12 is newer than it (osinfo-db 20221203).
    mem11, cpus = resources(req, _ident("debian11", "debian"), Architecture.X86_64)
    mem12, _ = resources(req, _ident("debian12", "debian"), Architecture.X86_64)
    assert mem11 >= 1024 and cpus == 2
    assert mem12 >= 1024
    ubuntu, _ = resources(req, _ident("ubuntu22.04", "ubuntu"), Architecture.X86_64)
    assert ubuntu >= 2048  # osinfo's minimum for Ubuntu 22.04
    unknown, _ = resources(req, _ident(None, None), Architecture.X86_64)
    assert unknown == 1024


def test_resources_request_wins() -> None:
    req = InstallRequest("http://127.0.0.1:1/", name="r", memory_mib=512, vcpus=1)
    assert resources(req, _ident("ubuntu22.04", "ubuntu"), Architecture.X86_64) == (512, 1)


def test_extra_args_are_split_like_a_shell() -> None:
    assert split_extra_args(["a b=1", 'c="d e"']) == ["a", "b=1", "c=d e"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "bad name"},
        {"name": "ok", "network": "bridge=br0"},
        {"name": "ok", "console": "vnc"},
        {"name": "ok", "wait": -1},
        {"name": "ok", "wait_for": "("},
        {"name": "ok", "vcpus": 0},
    ],
)
def test_request_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        InstallRequest("http://127.0.0.1:1/", **kwargs)  # type: ignore[arg-type]
