"""The content-addressed cache: blobs, index, locks, holds, prune, `treeboot cache`, and the
identification cache (treeboot.detect.identcache)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from _net_helpers import Handler, Route, serve_http
from treeboot.cli.main import main
from treeboot.devtree import build_treeinfo_tree
from treeboot.locate.base import TreeLocation
from treeboot.model import Identification, Verified
from treeboot.store.cache import Cache, IndexEntry, PartialMeta, default_root, source_key

DAY = 86400.0


def add_blob(
    cache: Cache, data: bytes, *, path: str = "images/vmlinuz", age_days: float = 0
) -> str:
    """Put ``data`` in the cache the way fetch does (a .part committed, then indexed)."""
    cache.ensure()
    sha = hashlib.sha256(data).hexdigest()
    key = source_key("http://mirror/tree/", path)
    part, _ = cache.partial(key)
    part.write_bytes(data)
    blob = cache.commit(part, sha)
    cache.record(IndexEntry("http://mirror/tree/", path, len(data), '"etag"', sha, "sha256"))
    if age_days:
        old = time.time() - age_days * DAY
        os.utime(blob, (old, old))
    return sha


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    c = Cache(tmp_path / "cache")
    c.ensure()
    return c


def test_default_root_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TREEBOOT_CACHE", str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("TREEBOOT_CACHE")
    assert default_root().name == "treeboot"


def test_blobs_are_read_only_and_found_by_hash(cache: Cache) -> None:
    sha = add_blob(cache, b"kernel bytes")
    blob = cache.find_blob(sha)
    assert blob is not None and blob.read_bytes() == b"kernel bytes"
    assert blob.stat().st_mode & 0o222 == 0
    entry = cache.lookup("http://mirror/tree/", "images/vmlinuz")
    assert entry is not None and entry.sha256 == sha and entry.validator == '"etag"'
    assert cache.lookup("http://other/", "images/vmlinuz") is None


def test_lock_is_exclusive_across_processes(cache: Cache) -> None:
    code = (
        "import sys; from pathlib import Path; from treeboot.store.cache import Cache\n"
        "with Cache(Path(sys.argv[1])).lock('k', blocking=False) as got: print(got)"
    )
    with cache.lock("k") as got:
        assert got
        held = subprocess.run([sys.executable, "-c", code, str(cache.root)],
                              capture_output=True, text=True, check=True)
        with cache.lock("k", blocking=False) as again:  # flock: per open file, not per process
            assert not again
    free = subprocess.run([sys.executable, "-c", code, str(cache.root)],
                          capture_output=True, text=True, check=True)
    assert (held.stdout, free.stdout) == ("False\n", "True\n")


def test_partial_metadata_round_trip(cache: Cache) -> None:
    key = source_key("http://mirror/tree/", "big")
    part, meta = cache.partial(key)
    part.write_bytes(b"12345")
    cache.save_partial(key, PartialMeta("http://mirror/tree/", "big", '"v1"', 10))
    got = cache.load_partial(key, "http://mirror/tree/", "big")
    assert got == PartialMeta("http://mirror/tree/", "big", '"v1"', 10)
    assert cache.load_partial(key, "http://mirror/tree/", "other") is None
    cache.discard_partial(key)
    assert not part.exists() and not meta.exists()


def test_prune_older_than(cache: Cache) -> None:
    old = add_blob(cache, b"old kernel", path="old", age_days=40)
    new = add_blob(cache, b"new kernel", path="new")
    report = cache.prune(older_than_days=30)
    assert f"blobs/sha256/{old}" in report.removed and report.freed_bytes >= len(b"old kernel")
    assert cache.find_blob(new) is not None and cache.find_blob(old) is None
    assert [e.path for e in cache.entries()] == ["new"]


def test_prune_default_removes_only_orphans(cache: Cache) -> None:
    kept = add_blob(cache, b"indexed")
    orphan = hashlib.sha256(b"orphan").hexdigest()
    (cache.blobs / orphan).write_bytes(b"orphan")
    (cache.tmp / "stray").write_bytes(b"x")
    resumable = source_key("u", "big")
    cache.partial(resumable)[0].write_bytes(b"partial")
    cache.save_partial(resumable, PartialMeta("u", "big", '"v"', 100))
    report = cache.prune()
    assert sorted(report.removed) == [f"blobs/sha256/{orphan}", "tmp/stray"]
    assert cache.find_blob(kept) is not None
    assert all(p.exists() for p in cache.partial(resumable))


def test_prune_all_spares_downloads_in_progress(cache: Cache) -> None:
    add_blob(cache, b"some kernel")
    busy, idle = source_key("u", "busy"), source_key("u", "idle")
    for key in (busy, idle):
        cache.partial(key)[0].write_bytes(b"partial")
        cache.save_partial(key, PartialMeta("u", key, '"v"', 100))
    with cache.lock(busy):
        report = cache.prune(everything=True)
    assert report.busy == [f"tmp/{busy}.part"]
    assert cache.partial(busy)[0].exists() and cache.partial(busy)[1].exists()
    assert not cache.partial(idle)[0].exists()
    assert list(cache.blobs.iterdir()) == [] and cache.entries() == []


def test_cache_cli(cache: Cache, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("TREEBOOT_CACHE", str(cache.root))
    sha = add_blob(cache, b"a kernel", age_days=10)
    assert main(["cache", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["root"] == str(cache.root) and listed["bytes"] == len(b"a kernel")
    (entry,) = listed["entries"]
    assert entry["sha256"] == sha and entry["verified"] == "sha256" and entry["blob"]
    assert main(["cache", "list"]) == 0
    assert "http://mirror/tree/images/vmlinuz" in capsys.readouterr().out
    assert main(["cache", "prune", "--older-than", "30", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == []
    assert main(["cache", "prune", "--all"]) == 0
    assert "removed 2 files" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["cache", "prune", "--all", "--older-than", "3"])
    assert usage.value.code == 2
    assert main(["cache", "prune", "--older-than", "-1"]) == 2


def test_prune_leaves_held_blobs_alone(cache: Cache) -> None:
    sha = add_blob(cache, b"kernel a fetch is returning", age_days=40)
    with cache.holding() as holds:
        holds.hold(sha)
        held = subprocess.run(  # another process: flock holds are per open file
            [sys.executable, "-c", PRUNE_ALL, str(cache.root)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert json.loads(held.stdout)["busy"] == [f"blobs/sha256/{sha}"]
        assert cache.find_blob(sha) is not None
    report = cache.prune(everything=True)
    assert f"blobs/sha256/{sha}" in report.removed and cache.find_blob(sha) is None


PRUNE_ALL = (
    "import json, sys; from dataclasses import asdict; from pathlib import Path\n"
    "from treeboot.store.cache import Cache\n"
    "print(json.dumps(asdict(Cache(Path(sys.argv[1])).prune(everything=True))))"
)


def test_prune_keeps_blobs_used_within_the_grace_period(cache: Cache) -> None:
    fresh = add_blob(cache, b"just fetched", path="fresh")
    old = add_blob(cache, b"long unused", path="old", age_days=2)
    report = cache.prune(everything=True, grace=60)
    assert report.recent == [f"blobs/sha256/{fresh}"]
    assert cache.find_blob(fresh) is not None and cache.find_blob(old) is None
    assert [e.path for e in cache.entries()] == ["fresh"]
    index = f"index/{source_key('http://mirror/tree/', 'fresh')}.json"
    assert cache.prune(everything=True).removed == [f"blobs/sha256/{fresh}", index]


def test_prune_cli_grace(cache: Cache, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("TREEBOOT_CACHE", str(cache.root))
    add_blob(cache, b"fresh kernel")
    assert main(["cache", "prune", "--all"]) == 0
    assert "kept 1 files used in the last 60 s" in capsys.readouterr().out
    assert main(["cache", "prune", "--all", "--grace", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recent"] == []
    assert list(cache.blobs.iterdir()) == []
    assert main(["cache", "prune", "--grace", "-1"]) == 2


def test_prune_all_removes_identifications(cache: Cache) -> None:
    cache.ident.mkdir()
    (cache.ident / "a.json").write_text("{}")
    assert cache.prune().removed == []
    assert cache.prune(everything=True).removed == ["ident/a.json"]


# -- the identification cache (identify/identcache.py) ----------------------------------------


def conditional(fspath: Path) -> Route:
    """Serve a file like nginx: 304 Not Modified when If-None-Match has its ETag."""

    def route(h: Handler) -> None:
        st = fspath.stat()
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        if h.headers.get("If-None-Match") == etag:
            h.send_simple(304, headers={"ETag": etag})
        else:
            h.send_file(fspath)

    return route


def rewrite_tree(tree: Path, kernel_size: int) -> None:
    """A new build in place: another kernel, its checksum in the same-sized .treeinfo."""
    info = tree / ".treeinfo"
    old = info.read_text()
    kernel = build_treeinfo_tree(tree.parent / "next", kernel_size=kernel_size, initrd_size=1000)
    shutil.copyfile(kernel / "images/pxeboot/vmlinuz", tree / "images/pxeboot/vmlinuz")
    sums = dict(re.findall(r"^(images/\S+) = (sha256:\w+)$", old, re.M))
    new_sum = hashlib.sha256((tree / "images/pxeboot/vmlinuz").read_bytes()).hexdigest()
    info.write_text(old.replace(sums["images/pxeboot/vmlinuz"], f"sha256:{new_sum}"))
    assert len(info.read_text()) == len(old)


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    return build_treeinfo_tree(tmp_path / "www" / "tree", kernel_size=4096, initrd_size=8192)


@pytest.mark.parametrize("etags", [True, False], ids=["304", "no-304"])
def test_warm_fetch_revalidates_in_one_round(small_tree: Path, cache: Cache, etags: bool) -> None:
    from treeboot.download.fetch import fetch

    with serve_http(small_tree.parent) as srv:
        if etags:
            srv.route("/tree/.treeinfo", conditional(small_tree / ".treeinfo"))
        first = fetch(srv.url + "tree/", cache=cache, progress=False)
        assert "identcache" not in first.identification.extra
        srv.clear()
        second = fetch(srv.url + "tree/", cache=cache, progress=False)
        log = [(r.method, r.path, r.status) for r in srv.log]
    assert second.identification.extra["identcache"] == "revalidated"
    assert replace(second.identification, extra={}) == replace(first.identification, extra={})
    assert second.from_cache and second.bytes_downloaded == 0
    assert log == [("GET", "/tree/.treeinfo", 304 if etags else 200)]


def test_changed_treeinfo_is_noticed(small_tree: Path, cache: Cache) -> None:
    from treeboot.download.fetch import fetch

    with serve_http(small_tree.parent) as srv:
        srv.route("/tree/.treeinfo", conditional(small_tree / ".treeinfo"))
        first = fetch(srv.url + "tree/", cache=cache, progress=False)
        rewrite_tree(small_tree, kernel_size=5000)
        second = fetch(srv.url + "tree/", cache=cache, progress=False)
        third = fetch(srv.url + "tree/", cache=cache, progress=False)
    assert "identcache" not in second.identification.extra
    assert second.kernel.sha256 != first.kernel.sha256 and not second.kernel.from_cache
    kernel = (small_tree / "images/pxeboot/vmlinuz").read_bytes()
    assert second.kernel.sha256 == hashlib.sha256(kernel).hexdigest()
    assert third.identification.extra["identcache"] == "revalidated" and third.from_cache


def test_local_tree_is_compared_by_content(small_tree: Path, cache: Cache) -> None:
    from treeboot.detect.identcache import identify_cached
    from treeboot.locate.open import open_location

    def identify() -> Identification:
        with open_location(str(small_tree)) as loc:
            return identify_cached(loc, cache)

    first = identify()
    assert "identcache" not in first.extra
    assert identify().extra["identcache"] == "revalidated"
    info = small_tree / ".treeinfo"
    st = info.stat()
    rewrite_tree(small_tree, kernel_size=6000)
    os.utime(info, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    third = identify()
    assert "identcache" not in third.extra and third.checksums != first.checksums


def test_the_code_that_identifies_is_part_of_the_host_state() -> None:
    """A new treeboot (another detection, trust or locate module, or rule) re-identifies."""
    import treeboot
    from treeboot.detect.identcache import local_state

    state = local_state()
    package = Path(treeboot.__file__).parent
    for stage in ("detect", "trust", "locate"):
        assert state[str(package / stage)] is not None, stage
        assert state[str(package / stage / "__init__.py")] is not None, stage
    assert state[str(package / "rules" / "distros.toml")] is not None
    assert all(value is not None for key, value in state.items() if key.startswith(str(package)))


def test_identification_cache_entry(small_tree: Path, cache: Cache, tmp_path: Path) -> None:
    from treeboot.detect.identcache import load_entry, make_entry, revalidate
    from treeboot.locate.open import open_location

    keyring = tmp_path / "ring.gpg"
    keyring.write_bytes(b"key")
    with open_location(str(small_tree)) as loc:
        assert isinstance(loc, TreeLocation)
        from treeboot.detect.identify import identify_location

        seen: dict[str, bytes | None] = {}
        ident = identify_location(loc, seen=seen)
        release = loc.url.rsplit("/", 2)[0] + "/Release"  # the directory above the tree
        seen[release] = b"Origin: Debian\nValid-Until: Sat, 01 Jan 2100 00:00:00 UTC\n"
        (small_tree.parent / "Release").write_bytes(seen[release] or b"")
        entry = make_entry(loc, ident, seen, keyring)
        assert entry is not None and entry.expires == 4102444800.0
        assert {f.url for f in entry.files} == {loc.url + ".treeinfo", release}
        assert revalidate(loc, entry) == entry
        assert revalidate(loc, entry, now=entry.expires + 1) is None  # Valid-Until passed
        keyring.write_bytes(b"another key")
        assert revalidate(loc, entry) is None  # the keyring changed
        (cache.ident / "x.json").parent.mkdir(parents=True)
        (cache.ident / "x.json").write_text("{not json")
        assert load_entry(cache.ident / "x.json") is None
        unsigned = {k: v for k, v in seen.items() if k != release}
        signed = replace(ident, extra={**ident.extra, "signature": {"release": release}})
        assert make_entry(loc, signed, unsigned) is None  # its Release was read out of sight


def test_signed_chain_is_revalidated(tmp_path: Path, cache: Cache) -> None:
    from _signature_helpers import make_debian_tree, make_key, release_text
    from treeboot.detect.identcache import SIGNED_MAX_AGE, load_entry
    from treeboot.download.fetch import fetch
    from treeboot.errors import SignatureError

    (tmp_path / "key").mkdir()
    key = make_key(tmp_path / "key")
    tree = make_debian_tree(tmp_path / "www", key)
    with serve_http(tree.root) as srv, contextlib.closing(key):
        url = srv.url + tree.location.relative_to(tree.root).as_posix() + "/"
        first = fetch(url, cache=cache, progress=False, keyring=key.keyring)
        assert first.verified == Verified.SIGNED_CHAIN
        srv.clear()
        second = fetch(url, cache=cache, progress=False, keyring=key.keyring)
        paths = sorted(r.path.rsplit("/", 1)[-1] for r in srv.log)
        assert second.identification.extra["identcache"] == "revalidated"
        assert second.verified == Verified.SIGNED_CHAIN
        assert paths == ["InRelease", "MANIFEST", "Release", "SHA256SUMS"]
        (entry_path,) = cache.ident.glob("*.json")
        entry = load_entry(entry_path)
        assert entry and entry.expires and entry.expires <= time.time() + SIGNED_MAX_AGE
        listed = {"main/installer-amd64/current/images/SHA256SUMS": tree.sums.read_bytes()}
        expired = release_text(listed, extra="Valid-Until: Sat, 01 Jan 2000 00:00:00 UTC")
        (tree.dists / "InRelease").write_bytes(key.clearsign(expired))
        with pytest.raises(SignatureError, match="expired"):
            fetch(url, cache=cache, progress=False, keyring=key.keyring)
