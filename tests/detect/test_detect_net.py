"""Identification over a slow loopback HTTP link: at most two sequential rounds of requests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from _detect_helpers import fixture, serve_batched, write_tree
from _net_helpers import serve_http
from treeboot.detect.identify import identify
from treeboot.detect.rules import load_rules
from treeboot.devtree import DI_IMAGES, build_debian_tree, build_treeinfo_tree
from treeboot.errors import DetectionError

pytestmark = pytest.mark.network

ROUND1 = len(load_rules().probe_reads) + len(load_rules().probe_exists) + 1  # + the canary


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


# A tree below dists/<suite>/ also asks for the suite's InRelease, Release and Release.gpg,
# in the first round (for the signed chain).
RELEASE = 3


@pytest.mark.parametrize(
    ("build", "os_id", "followups", "release"),
    [(_debian, "debian12", 2, RELEASE), (_fedora, "fedora39", 0, 0), (_suse, "opensuse13.2", 0, 0),
     (_alpine, "alpinelinux3.19", 9, 0)],
    ids=["debian", "fedora", "suse", "alpine"],
)
def test_known_layouts_take_at_most_two_rounds(
    tmp_path: Path,
    build: object,
    os_id: str,
    followups: int,
    release: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Round 1 (every probe) and round 2 (the follow-ups) each arrive as one batch.

    The server answers nothing of a round until all of its requests are in: a client that
    probed one file after another would stall on the first request instead.
    """
    monkeypatch.setattr("treeboot.detect._layouts.platform.machine", lambda: "x86_64")
    assert callable(build)
    rel = build(tmp_path)
    sizes = [ROUND1 + release, followups] if followups else [ROUND1 + release]
    with serve_batched(tmp_path, sizes) as srv:
        ident = identify(srv.url + rel)
        batches, late = srv.batches(), srv.timed_out()
    assert ident.os == os_id
    assert late == [], "requests that had to wait for an earlier answer"
    assert [len(b) for b in batches] == sizes
    assert len(batches) == ident.extra["rounds"] <= 2
    paths = [p for b in batches for p in b]
    assert len(paths) == len(set(paths)), "a file was requested twice"
    rules = load_rules()
    assert {p[len("/" + rel) :] for p in batches[0] if p.startswith("/" + rel)} == {
        *rules.probe_reads, *rules.probe_exists, rules.probe_canary
    }
    assert identify(str(tmp_path / rel)).kernel == ident.kernel  # same answer as locally


def test_probe_results_are_reused_not_refetched(tmp_path: Path) -> None:
    """Layouts that look at the same file (content, VERSION...) share one request."""
    shutil.copytree(fixture("mageia/8"), tmp_path / "mageia")
    with serve_http(tmp_path) as srv:
        ident = identify(srv.url + "mageia/")
        gets = srv.requests(path="/mageia/VERSION")
    assert ident.os == "mageia8" and len(gets) == 1


def test_the_batching_server_counts_a_serial_client_correctly(tmp_path: Path) -> None:
    """The measuring tool itself: three reads one after another are three rounds."""
    from treeboot.locate.open import open_location

    write_tree(tmp_path, {"a": "1", "b": "2"})
    with serve_batched(tmp_path, [3, 3], timeout=0.2) as srv, open_location(srv.url) as loc:
        for p in ("a", "b", "c"):
            loc.read(p)
        loc.read_many(["d", "e", "f"])
        assert srv.timed_out() == ["/a", "/b"]  # "c" completed the batch they were waiting for
        assert [len(b) for b in srv.batches()] == [3, 3]


SOFT_404 = b"<html><body><h1>Welcome!</h1>Nothing here.</body></html>\n"


def test_soft_404_server_still_identifies_real_metadata(tmp_path: Path) -> None:
    shutil.copytree(fixture("fedora/30"), tmp_path / "f30")
    with serve_batched(tmp_path, soft_404=SOFT_404) as srv:
        ident = identify(srv.url + "f30/")
    assert (ident.os, ident.kernel) == ("fedora30", "images/pxeboot/vmlinuz")


@pytest.mark.parametrize("files", [{}, {"arch/boot/x86_64/vmlinuz-linux": b"k"}],
                         ids=["empty", "marker-only"])
def test_soft_404_server_is_not_every_layout_at_once(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    """Existence checks prove nothing when every path answers 200: no false positive."""
    write_tree(tmp_path / "t", files)
    with serve_batched(tmp_path, soft_404=SOFT_404) as srv, pytest.raises(DetectionError):
        identify(srv.url + "t/")
