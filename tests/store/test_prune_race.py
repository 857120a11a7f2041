"""``cache prune`` while fetches commit and discard partial files under it (issue 10, case 13):
files that vanish between the listing and the stat are skipped, never a crash."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from treeboot.store.cache import Cache

ROUNDS = 300  # prunes while the other thread churns; before the fix a few dozen crashed


def churn(tmp: Path, stop: threading.Event) -> None:
    """What concurrent fetches do in tmp/: write a partial and its sidecar, then commit
    (rename away) or discard them; write an index through a dot-file renamed into place."""
    n = 0
    while not stop.is_set():
        n += 1
        part, meta, dot = tmp / f"k{n % 7}.part", tmp / f"k{n % 7}.json", tmp / f".i{n % 5}.tmp"
        try:  # prune may remove any of them first
            for p in (part, meta, dot):
                p.write_bytes(b"x")
            os.replace(part, tmp / "committed")
        except FileNotFoundError:
            pass
        for p in (part, meta, dot):
            p.unlink(missing_ok=True)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_prune_survives_partials_renamed_under_it(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    cache.ensure()
    stop = threading.Event()
    worker = threading.Thread(target=churn, args=(cache.tmp, stop), daemon=True)
    worker.start()
    try:
        for _ in range(ROUNDS):
            cache.prune(older_than_days=0)
            cache.prune(everything=True)
    finally:
        stop.set()
        worker.join(timeout=10)
