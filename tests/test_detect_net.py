"""Identification over a slow loopback HTTP link: at most two sequential rounds of requests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests._detect_helpers import fixture, sequential_rounds, write_tree
from tests._net_helpers import serve_http
from treeboot._rules import load_rules
from treeboot.detect import identify
from treeboot.devtree import DI_IMAGES, build_debian_tree, build_treeinfo_tree

pytestmark = pytest.mark.network

LATENCY = 0.2  # seconds added to every request: a far-away mirror


def _debian(root: Path) -> str:
    if not (DI_IMAGES / "amd64").is_dir():
        pytest.skip("debian-installer-12-netboot-amd64 is not installed")
    return build_debian_tree(root).relative_to(root).as_posix() + "/"


def _fedora(root: Path) -> str:
    build_treeinfo_tree(root / "fedora", kernel_size=4096, initrd_size=4096)
    return "fedora/"


def _suse(root: Path) -> str:
    shutil.copytree(fixture("opensuse/13.2"), root / "suse")
    return "suse/"


def _alpine(root: Path) -> str:
    write_tree(root / "alpine", {".alpine-release": "3.19.1\n", "boot/vmlinuz-lts": b"k",
                                 "boot/initramfs-lts": b"i", "apks/x86_64/APKINDEX.tar.gz": b""})
    return "alpine/"


@pytest.mark.parametrize(
    ("build", "os_id", "rounds"),
    [(_debian, "debian12", 2), (_fedora, "fedora39", 1), (_suse, "opensuse13.2", 1),
     (_alpine, "alpinelinux3.19", 2)],
    ids=["debian", "fedora", "suse", "alpine"],
)
def test_known_layouts_take_at_most_two_rounds(
    tmp_path: Path, build: object, os_id: str, rounds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("treeboot._detect_layouts.platform.machine", lambda: "x86_64")
    assert callable(build)
    rel = build(tmp_path)
    with serve_http(tmp_path, latency=LATENCY) as srv:
        ident = identify(srv.url + rel)
        log = srv.log
    assert ident.os == os_id
    assert sequential_rounds(log) == rounds == ident.extra["rounds"]
    paths = [r.path for r in log]
    assert len(paths) == len(set(paths)), "a file was requested twice"
    # round 1 is every probe of the rule table, sent together: all overlap the first answer
    first_answer = min(r.t1 for r in log)
    round1 = {r.path[len("/" + rel) :] for r in log if r.t0 < first_answer}
    rules = load_rules()
    assert set(rules.probe_reads) | set(rules.probe_exists) <= round1
    assert identify(str(tmp_path / rel)).kernel == ident.kernel  # same answer as locally


def test_probe_results_are_reused_not_refetched(tmp_path: Path) -> None:
    """Layouts that look at the same file (content, VERSION...) share one request."""
    shutil.copytree(fixture("mageia/8"), tmp_path / "mageia")
    with serve_http(tmp_path) as srv:
        ident = identify(srv.url + "mageia/")
        gets = srv.requests(path="/mageia/VERSION")
    assert ident.os == "mageia8" and len(gets) == 1
