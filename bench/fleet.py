"""N machines to the Debian installer's "Select a language" prompt: `treeboot fleet` against
N sequential `treeboot install` runs, and the bytes each fetched from the mirror.

    .venv/bin/python bench/fleet.py [--runs 2] [--sizes 1,2,4] [--json]

The mirror is a Debian 12 tree (``treeboot.devtree.build_debian_tree``) served on 127.0.0.1 by
``../shared/tools/shaped_http.py``, whose JSON request log gives the bytes sent. Every guest
runs under TCG with ``--disk none --network none --memory 1024 --vcpus 2`` and
``--wait-for 'Select a language'`` (treeboot stops it at the prompt).

- fleet: ``treeboot fleet plan.toml --forks N``, one local host (``ansible_connection =
  "local"``) with N machines, so the N installs run side by side and share one cache;
- sequential: N ``treeboot install`` runs one after the other, sharing one cache.

Each measurement starts from an empty cache and state directory, so "bytes" is what the N
machines fetched from the mirror together. Runs are interleaved (fleet and sequential
alternate first) so that a change in machine load hits both alike. Prints min and median wall
time per N and the ratio fleet / sequential.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from treeboot.devtree import build_debian_tree  # noqa: E402

SHAPED_HTTP = ROOT.parent / "shared" / "tools" / "shaped_http.py"
TREE_PATH = "dists/bookworm/main/installer-amd64/"
IMAGES = ("/linux", "/initrd.gz")
GUEST = {
    "accel": "tcg",
    "disk": "none",
    "network": "none",
    "memory": 1024,
    "vcpus": 2,
    "wait_for": "Select a language",
    "wait": 900,
}


@contextlib.contextmanager
def mirror(root: Path, log: Path) -> Iterator[str]:
    port_file = log.with_suffix(".port")
    proc = subprocess.Popen(
        [sys.executable, str(SHAPED_HTTP), "--root", str(root), "--port", "0",
         "--port-file", str(port_file), "--log", str(log)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("shaped_http.py did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}/{TREE_PATH}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_bytes(log: Path, start: int) -> tuple[int, int, int]:
    """(total body bytes, kernel+initrd body bytes, requests) logged after byte ``start``."""
    total = images = count = 0
    with log.open() as f:
        f.seek(start)
        for line in f:
            rec = json.loads(line)
            count += 1
            total += rec["bytes"]
            if rec["path"].endswith(IMAGES):
                images += rec["bytes"]
    return total, images, count


def toml_value(value: Any) -> str:
    return str(value) if isinstance(value, int) else json.dumps(value)


class Bench:
    def __init__(self, work: Path, url: str, log: Path) -> None:
        self.work, self.url, self.log = work, url, log
        self.treeboot = [sys.executable, "-m", "treeboot"]

    def _fresh(self, label: str) -> tuple[Path, dict[str, str]]:
        base = self.work / label
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        env = dict(os.environ, TREEBOOT_HOME=str(base / "home"), TREEBOOT_CACHE=str(base / "cache"))
        return base, env

    def fleet(self, n: int) -> dict[str, Any]:
        base, env = self._fresh(f"fleet{n}")
        lines = [
            "[hosts.hv1]",
            'ansible_connection = "local"',
            f'treeboot_home = "{base / "home"}"',
            f'treeboot_cache = "{base / "cache"}"',
            "",
        ]
        for i in range(n):
            lines += ["[[machines]]", f'name = "f{n}-{i}"', 'host = "hv1"']
            lines += [f'location = "{self.url}"']
            lines += [f"{k} = {toml_value(v)}" for k, v in GUEST.items()] + [""]
        (base / "plan.toml").write_text("\n".join(lines))
        argv = [*self.treeboot, "fleet", "plan.toml", "--forks", str(n), "--json"]
        return self._measure(argv, base, env, n)

    def sequential(self, n: int) -> dict[str, Any]:
        base, env = self._fresh(f"seq{n}")
        opts = [x for k, v in GUEST.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        start_log = self.log.stat().st_size
        t0 = time.monotonic()
        for i in range(n):
            argv = [*self.treeboot, "install", self.url, "--name", f"s{n}-{i}", *opts]
            subprocess.run(argv, cwd=base, env=env, check=True, capture_output=True)
        return self._result(time.monotonic() - t0, start_log, n)

    def _measure(self, argv: list[str], base: Path, env: dict[str, str], n: int) -> dict[str, Any]:
        start_log = self.log.stat().st_size
        t0 = time.monotonic()
        proc = subprocess.run(argv, cwd=base, env=env, capture_output=True, text=True)
        elapsed = time.monotonic() - t0
        out = json.loads(proc.stdout)
        outcomes = [m["outcome"] for m in out["machines"]]
        if proc.returncode != 0 or outcomes != ["wait-for-matched"] * n:
            raise RuntimeError(f"fleet of {n} failed: {outcomes} {proc.stderr[-2000:]}")
        return self._result(elapsed, start_log, n)

    def _result(self, elapsed: float, start_log: int, n: int) -> dict[str, Any]:
        time.sleep(0.5)  # the server logs a request after its last byte
        total, images, count = log_bytes(self.log, start_log)
        return {"n": n, "seconds": elapsed, "bytes": total, "image_bytes": images,
                "requests": count}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--sizes", default="1,2,4")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, list[dict[str, Any]]] = {"fleet": [], "sequential": []}
    with tempfile.TemporaryDirectory(prefix="treeboot-bench-fleet-") as tmp:
        work = Path(tmp)
        build_debian_tree(work / "mirror")
        log = work / "requests.jsonl"
        log.touch()
        with mirror(work / "mirror", log) as url:
            bench = Bench(work, url, log)
            for run in range(args.runs):
                for n in sizes:
                    order = ["fleet", "sequential"]
                    if (run + n) % 2:
                        order.reverse()
                    for who in order:
                        r = bench.fleet(n) if who == "fleet" else bench.sequential(n)
                        results[who].append(r)
                        print(f"run {run + 1} N={n} {who:<10} {r['seconds']:7.1f} s "
                              f"{r['image_bytes'] / 1e6:6.1f} MB images, {r['bytes']} B total",
                              file=sys.stderr, flush=True)  # fmt: skip
    summary = summarize(results, sizes)
    if args.json:
        json.dump({"runs": results, "summary": summary}, sys.stdout, indent=2)
        print()
    else:
        print(f"{'N':>2} {'fleet min/med s':>16} {'seq min/med s':>15} {'ratio(med)':>10} "
              f"{'fleet MB':>9} {'seq MB':>7}")  # fmt: skip
        for row in summary:
            print(f"{row['n']:>2} {row['fleet_min']:7.1f}/{row['fleet_median']:<8.1f} "
                  f"{row['seq_min']:6.1f}/{row['seq_median']:<8.1f} {row['ratio_median']:10.2f} "
                  f"{row['fleet_mb']:9.1f} {row['seq_mb']:7.1f}")  # fmt: skip
    return 0


def summarize(results: dict[str, list[dict[str, Any]]], sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        f = [r for r in results["fleet"] if r["n"] == n]
        s = [r for r in results["sequential"] if r["n"] == n]
        fs, ss = [r["seconds"] for r in f], [r["seconds"] for r in s]
        rows.append({
            "n": n,
            "fleet_min": min(fs), "fleet_median": statistics.median(fs),
            "seq_min": min(ss), "seq_median": statistics.median(ss),
            "ratio_median": statistics.median(fs) / statistics.median(ss),
            "fleet_mb": max(r["bytes"] for r in f) / 1e6,
            "seq_mb": max(r["bytes"] for r in s) / 1e6,
        })  # fmt: skip
    return rows


if __name__ == "__main__":
    sys.exit(main())
