"""The derived-artifact store: keyed by the source's sha256, derived once, failures remembered."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from treeboot.errors import KernelImageError
from treeboot.store.cache import Cache
from treeboot.store.derived import DerivedStore

SRC = "ab" * 32


def test_a_product_is_derived_once_and_records_its_source(tmp_path: Path) -> None:
    store = DerivedStore(Cache(tmp_path))
    calls: list[int] = []

    def produce(out: BinaryIO) -> str:
        calls.append(1)
        out.write(b"raw bytes" * 1000)
        return "made"

    first = store.make("initrd-raw", SRC, produce, KernelImageError)
    again = store.make("initrd-raw", SRC, produce, KernelImageError)
    assert calls == [1]  # the warm run derives nothing
    assert first == again
    product = store.path("initrd-raw", SRC)
    assert product.read_bytes() == b"raw bytes" * 1000
    assert first.sha256 == hashlib.sha256(product.read_bytes()).hexdigest()
    side = json.loads(product.with_suffix(".json").read_text())
    assert side["source_sha256"] == SRC and side["size"] == 9000
    assert not os.access(product, os.W_OK) or os.geteuid() == 0
    assert product.stat().st_mode & 0o777 == 0o444
    assert store.usage() == 9000


def test_a_failure_is_remembered_and_nothing_is_left_behind(tmp_path: Path) -> None:
    store = DerivedStore(Cache(tmp_path))
    calls: list[int] = []

    def produce(out: BinaryIO) -> str:
        calls.append(1)
        out.write(b"partial")
        raise KernelImageError("no PVH entry note\nsecond line")

    entry = store.make("vmlinux-pvh", SRC, produce, KernelImageError)
    assert entry.error == "no PVH entry note" and entry.sha256 is None
    assert store.make("vmlinux-pvh", SRC, produce, KernelImageError).error == entry.error
    assert calls == [1]
    assert not store.path("vmlinux-pvh", SRC).exists()
    assert [p.name for p in store.path("vmlinux-pvh", SRC).parent.iterdir()
            if p.name.endswith(".tmp")] == []  # fmt: skip


def test_a_product_cut_short_is_derived_again(tmp_path: Path) -> None:
    store = DerivedStore(Cache(tmp_path))
    store.make("initrd-raw", SRC, lambda out: str(out.write(b"x" * 100)), KernelImageError)
    product = store.path("initrd-raw", SRC)
    product.chmod(0o644)
    product.write_bytes(b"x" * 10)  # as after a crash before the data reached the disk
    assert store.find("initrd-raw", SRC) is None
    entry = store.make("initrd-raw", SRC, lambda out: str(out.write(b"y" * 100)), KernelImageError)
    assert entry.size == 100 and product.read_bytes() == b"y" * 100


def test_unexpected_errors_propagate(tmp_path: Path) -> None:
    store = DerivedStore(Cache(tmp_path))

    def produce(out: BinaryIO) -> str:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        store.make("initrd-raw", SRC, produce, KernelImageError)
    assert store.find("initrd-raw", SRC) is None


def test_concurrent_makers_derive_once(tmp_path: Path) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def produce(out: BinaryIO) -> str:
        calls.append(1)
        gate.wait(5)
        out.write(b"z" * 10)
        return ""

    results = []
    threads = [threading.Thread(target=lambda: results.append(
        DerivedStore(Cache(tmp_path)).make("initrd-raw", SRC, produce, KernelImageError)))
        for _ in range(3)]  # fmt: skip
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert calls == [1] and len({r.sha256 for r in results}) == 1


def test_prune_all_removes_derived_forms(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    store = DerivedStore(cache)
    store.make("initrd-raw", SRC, lambda out: str(out.write(b"x" * 100)), KernelImageError)
    report = cache.prune(older_than_days=1)
    assert store.find("initrd-raw", SRC) is not None and not report.removed
    report = cache.prune(everything=True)
    assert f"derived/initrd-raw/{SRC}" in report.removed
    assert store.find("initrd-raw", SRC) is None and store.usage() == 0
