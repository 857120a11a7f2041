"""`treeboot fleet` with real Ansible: check mode, one download per host, --prefetch, and real
Debian 12 installers on two local hosts and one host reached over SSH (an sshd of the test's).

The mirror is a tree built by :func:`treeboot.devtree.build_debian_tree`, served on
127.0.0.1; every guest has ``--network none`` (the installer's first prompt needs none).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from _fleet_helpers import (
    ansible,
    local_host,
    machine,
    needs_ansible,
    needs_sshd,
    sshd,
    treeboot,
)
from _net_helpers import LoopbackHTTP, serve_http
from _vm_helpers import TREE_PATH, debian_tree, needs_qemu, reap_pids

__all__ = ["debian_tree"]  # the module-scoped fixture

pytestmark = [needs_ansible, pytest.mark.network]
IMAGES = ("/linux", "/initrd.gz")


@pytest.fixture
def mirror(debian_tree: Path) -> Iterator[LoopbackHTTP]:
    with serve_http(debian_tree) as srv:
        yield srv


def image_gets(srv: LoopbackHTTP) -> list[int]:
    """Bytes of each kernel/initrd body the mirror sent (HEADs and 304s send none)."""
    return [r.bytes for r in srv.log if r.path.endswith(IMAGES) and r.bytes > 0]


def vm_dirs(base: Path) -> list[Path]:
    return sorted(base.glob("*/home/vms/*"))


def reap(base: Path) -> None:
    """Kill (by PID, after a cmdline check) every QEMU or watcher the hosts' state names."""
    pids: list[int] = []
    for state in vm_dirs(base):
        try:
            st = json.loads((state / "status.json").read_text())
        except (OSError, ValueError):
            continue
        pids += [st[k] for k in ("qemu_pid", "watcher_pid") if isinstance(st.get(k), int)]
    reap_pids(pids)


def test_check_mode_starts_nothing_and_fetches_once_per_host(
    tmp_path: Path, mirror: LoopbackHTTP
) -> None:
    url = mirror.url + TREE_PATH
    plan = local_host("hv1", tmp_path) + local_host("hv2", tmp_path)
    plan += machine("web1", "hv1", url) + machine("web2", "hv1", url) + machine("web3", "hv2", url)
    (tmp_path / "plan.toml").write_text(plan)
    result = treeboot("fleet", "plan.toml", "--check", "--forks", "3", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    machines = json.loads(result.stdout)["machines"]
    assert [(m["machine"], m["host"], m["outcome"], m["os"]) for m in machines] == [
        ("web1", "hv1", "planned", "debian12"),
        ("web2", "hv1", "planned", "debian12"),
        ("web3", "hv2", "planned", "debian12"),
    ]
    assert vm_dirs(tmp_path) == []  # no state, no disk, no QEMU
    # Three machines, two hosts: each host's cache fetched the kernel and initrd once.
    gets = image_gets(mirror)
    assert len(gets) == 4, [(r.method, r.path, r.bytes) for r in mirror.log]
    # --limit passes through: only web3 runs.
    mirror.clear()
    result = treeboot("fleet", "plan.toml", "--check", "--limit", "web3", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [m["machine"] for m in json.loads(result.stdout)["machines"]] == ["web3"]
    assert image_gets(mirror) == []  # hv2's cache has them


def test_prefetch_fills_each_host_cache_from_the_controller(
    tmp_path: Path, mirror: LoopbackHTTP
) -> None:
    url = mirror.url + TREE_PATH
    plan = local_host("hv1", tmp_path) + local_host("hv2", tmp_path)
    plan += machine("web1", "hv1", url) + machine("web2", "hv2", url)
    (tmp_path / "plan.toml").write_text(plan)
    emitted = treeboot("fleet", "plan.toml", "--prefetch", "--emit", "out", cwd=tmp_path)
    assert emitted.returncode == 0, emitted.stderr
    assert len(image_gets(mirror)) == 2  # the controller's one download
    mirror.clear()
    check = ansible("ansible-playbook", "--check", "playbook.yml", cwd=tmp_path / "out")
    assert check.returncode == 0, check.stdout + check.stderr
    for host in ("hv1", "hv2"):
        assert list((tmp_path / host / "cache" / "blobs" / "sha256").iterdir())
    assert image_gets(mirror) == []  # the hosts found both files in their pushed caches
    assert vm_dirs(tmp_path) == []


def _recap(stdout: str) -> dict[str, dict[str, int]]:
    recap = {}
    for m in re.finditer(r"^(\S+)\s+:\s+(.*)$", stdout.split("PLAY RECAP")[-1], re.M):
        recap[m[1]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[2])}
    return recap


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.timeout(3000)
@needs_qemu
@needs_sshd
def test_playbook_installs_on_local_and_ssh_hosts_then_is_idempotent(
    tmp_path: Path, mirror: LoopbackHTTP
) -> None:
    url = mirror.url + TREE_PATH
    try:
        with sshd(tmp_path / "ssh") as ssh:
            plan = local_host("hv1", tmp_path) + local_host("hv2", tmp_path)
            plan += ssh.host_vars("hv3", tmp_path)
            plan += machine("web1", "hv1", url) + machine("web2", "hv2", url)
            plan += machine("web3", "hv3", url)
            (tmp_path / "plan.toml").write_text(plan)
            emitted = treeboot("fleet", "plan.toml", "--emit", "out", cwd=tmp_path)
            assert emitted.returncode == 0, emitted.stderr
            out = tmp_path / "out"
            first = ansible("ansible-playbook", "playbook.yml", "--forks", "3", cwd=out)
            assert first.returncode == 0, first.stdout + first.stderr
            recap = _recap(first.stdout)
            assert {h: (r["changed"], r["failed"]) for h, r in recap.items()} == {
                "web1": (1, 0),
                "web2": (1, 0),
                "web3": (1, 0),
            }
            for host, vm in (("hv1", "web1"), ("hv2", "web2"), ("hv3", "web3")):
                state = tmp_path / host / "home" / "vms" / vm
                status = json.loads((state / "status.json").read_text())
                assert status["outcome"] == "wait-for-matched"
                assert "Select a language" in (state / "console.log").read_text(errors="replace")
            # The same playbook again: every install has finished, nothing changes.
            second = ansible("ansible-playbook", "playbook.yml", cwd=out)
            assert second.returncode == 0, second.stdout + second.stderr
            assert {h: r["changed"] for h, r in _recap(second.stdout).items()} == {
                "web1": 0,
                "web2": 0,
                "web3": 0,
            }
            summary = treeboot("fleet", "plan.toml", cwd=tmp_path)
            assert summary.returncode == 0, summary.stderr
            rows = [line.split() for line in summary.stdout.splitlines()]
            assert rows[0] == ["MACHINE", "HOST", "OS", "STATUS", "OUTCOME", "TIME"]
            assert [r[:5] for r in rows[1:]] == [
                ["web1", "hv1", "debian12", "ok", "wait-for-matched"],
                ["web2", "hv2", "debian12", "ok", "wait-for-matched"],
                ["web3", "hv3", "debian12", "ok", "wait-for-matched"],
            ]
    finally:
        reap(tmp_path)
