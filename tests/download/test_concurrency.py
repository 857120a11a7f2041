"""Concurrency at the process level: ``cache prune`` while a fetch runs does not break it, and
8 parallel ``treeboot fetch`` runs of one tree download each artifact once."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _hostile_helpers import (
    INITRD,
    KERNEL,
    assert_clean_cache,
    hostile_server,
    random_tree,
    start_cli,
)
from _hostile_server import HostileServer

pytestmark = pytest.mark.network

KERNEL_SIZE = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def tree_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_tree(tmp_path_factory.mktemp("conc"), KERNEL_SIZE, 256 * 1024)


@pytest.fixture
def server(tree_root: Path) -> Iterator[HostileServer]:
    with hostile_server(tree_root) as srv:
        yield srv


def treeboot(*args: str, cache: Path) -> subprocess.Popen[str]:
    return start_cli(*args, cache=cache)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "prune_args",
    [
        ["cache", "prune", "--json"],
        ["cache", "prune", "--all", "--json"],
    ],
    ids=["prune", "prune-all"],
)
def test_prune_while_fetching(
    server: HostileServer, tree_root: Path, tmp_path: Path, prune_args: list[str]
) -> None:
    cache = tmp_path / "cache"
    server.state.rate = 2 * 1024 * 1024  # the fetch takes a few seconds: prune meets it mid-way
    fetch = treeboot("fetch", server.url("ok", "tree/"), "--json", "--timeout", "20", cache=cache)
    prunes = 0
    try:
        while fetch.poll() is None:
            if server.state.bytes_sent > 256 * 1024:
                prune = treeboot(*prune_args, cache=cache)
                _, err = prune.communicate(timeout=120)
                assert prune.returncode == 0, err
                assert "Traceback" not in err
                prunes += 1
            time.sleep(0.1)
        out, err = fetch.communicate(timeout=120)
    finally:
        if fetch.poll() is None:
            fetch.kill()
            fetch.communicate(timeout=30)
    assert fetch.returncode == 0, err
    assert prunes >= 2, "the fetch ended before prune could run against it"
    result = json.loads(out)
    for role, rel in (("kernel", KERNEL), ("initrd", INITRD)):
        path = Path(result[role])
        assert path.is_file(), f"prune removed the {role} the fetch returned"
        assert sha(path) == sha(tree_root / "tree" / rel)
        assert result["artifacts"][role]["verified"] == "sha256"
    assert_clean_cache(cache, partials_allowed=False)


@pytest.mark.timeout(300)
def test_eight_parallel_fetches_download_once(
    server: HostileServer, tree_root: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    server.state.rate = 4 * 1024 * 1024  # slow enough that the runs overlap
    url = server.url("ok", "tree/")
    procs = [treeboot("fetch", url, "--json", "--timeout", "60", cache=cache) for _ in range(8)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    for rel in (KERNEL, INITRD):
        gets = server.state.requests_for(rel)
        assert len(gets) == 1, f"{rel} was downloaded {len(gets)} times"
    want = {sha(tree_root / "tree" / KERNEL), sha(tree_root / "tree" / INITRD)}
    blobs = {p.name for p in (cache / "blobs" / "sha256").iterdir()}
    assert blobs == want
    assert sum(r["bytes_downloaded"] for r in results) == sum(
        (tree_root / "tree" / rel).stat().st_size for rel in (KERNEL, INITRD)
    )
    assert_clean_cache(cache, partials_allowed=False)
