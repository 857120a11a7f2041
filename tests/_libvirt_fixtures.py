"""Fixtures of the libvirt tests (``tests/boot/test_install_libvirt*.py``): one private
libvirtd for the session, its isolated network, and the ``clean`` check that a test left
nothing behind. A plugin of tests/conftest.py, so that every module shares the one daemon."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from _libvirt_helpers import (
    NET,
    Libvirtd,
    isolated_network,
    leftover_objects,
    private_libvirtd,
    remove_domain,
)

# treeboot defines this pool itself when the connection offers none (and keeps it).
_TREEBOOT_POOL = "treeboot-boot"


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Libvirtd]:
    root = Path(f"/tmp/tb-lv-{os.getpid()}")  # short: the daemon's socket path is limited
    try:
        with private_libvirtd(root) as daemon:
            yield daemon
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="session")
def network(libvirtd: Libvirtd) -> Iterator[str]:
    with isolated_network(libvirtd, NET) as address:
        yield address


@pytest.fixture
def clean(libvirtd: Libvirtd) -> Iterator[list[str]]:
    """Domain names a test creates; removed at the end, then nothing may be left over: no
    domain, no uploaded volume, no pool or network the test added (disk volumes are deleted)."""
    names: list[str] = []
    before = leftover_objects(libvirtd)
    yield names
    for name in names:
        remove_domain(libvirtd, name)
    left = leftover_objects(libvirtd)
    assert left["domains"] == [], left
    disks = [v for v in left["volumes"] if not v.endswith((".qcow2", ".img"))]
    assert disks == [], f"uploaded volumes were not deleted: {disks}"
    _delete_disk_volumes(libvirtd)
    new_pools = set(left["pools"]) - set(before["pools"]) - {_TREEBOOT_POOL}
    assert not new_pools, f"pools left behind: {sorted(new_pools)}"
    new_networks = set(left["networks"]) - set(before["networks"])
    assert not new_networks, f"networks left behind: {sorted(new_networks)}"


def _delete_disk_volumes(daemon: Libvirtd) -> None:
    import libvirt

    conn = libvirt.open(daemon.uri)
    try:
        for pool in conn.listAllStoragePools():
            if pool.isActive():
                for vol in pool.listAllVolumes():
                    vol.delete(0)
    finally:
        conn.close()
