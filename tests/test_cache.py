"""The content-addressed cache: blobs, index, locks, prune, and `treeboot cache`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from treeboot.cache import Cache, IndexEntry, PartialMeta, default_root, source_key
from treeboot.cli import main

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
        "import sys; from pathlib import Path; from treeboot.cache import Cache\n"
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
