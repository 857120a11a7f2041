"""Benchmark: identify + fetch of install trees, treeboot vs virt-install vs curl.

Trees (built in a temp dir): a Debian mirror tree from the real debian-installer netboot
package (treeboot.devtree.build_debian_tree, 49 MB of kernel+initrd) and a Fedora-like
.treeinfo tree with fake 4+16 MiB kernel/initrd. Each is served by
../shared/tools/shaped_http.py on 127.0.0.1 with --latency-ms L and --conn-latency-ms L
(one round trip per request and one per new connection) for L in 0, 50, 200 ms.

Per tree and latency (median of --runs runs; wall time, and the CPU time of the command):

  treeboot cold   `python -m treeboot fetch URL --json -q` with an empty cache: identify + fetch
  treeboot warm   the same command again: must transfer zero image bytes; the identification
                  is revalidated (identify/identcache.py: one concurrent round of conditional GETs
                  of the files it came from) -- "warm reqs" counts those requests
  treeboot xfer   in-process fetch() of an already identified tree, empty cache: transfer only
                  (hashing and fsync included; curl does neither)
  virt-install    `virt-install --connect test:///default --location URL --osinfo
                  detect=on,require=off --disk none --print-xml`: virt-install detects the
                  tree and downloads kernel+initrd to build the XML (then deletes them),
                  without defining or booting anything
  curl            `curl -o K URL/kernel -o I URL/initrd`: the two files, nothing else

Usage: .venv/bin/python bench/identify_fetch.py [--runs 3] [--latencies 0,50,200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from treeboot.detect.identify import identify
from treeboot.devtree import build_debian_tree, build_treeinfo_tree
from treeboot.download.fetch import fetch
from treeboot.store.cache import Cache

SHAPED = Path(__file__).resolve().parents[2] / "shared" / "tools" / "shaped_http.py"
VIRT_INSTALL = [
    "virt-install", "--connect", "test:///default", "--name", "bench", "--memory", "512",
    "--osinfo", "detect=on,require=off", "--disk", "none", "--print-xml",
]


@dataclass
class Server:
    url: str
    log: Path

    def image_bytes(self) -> int:
        """Body bytes of every kernel/initrd GET logged so far."""
        total = 0
        for line in self.log.read_text().splitlines():
            rec = json.loads(line)
            image = any(k in rec["path"] for k in ("linux", "initrd", "vmlinuz"))
            if rec["method"] == "GET" and image:
                total += rec["bytes"]
        return total

    def requests(self) -> int:
        return len(self.log.read_text().splitlines())


@contextmanager
def shaped(root: Path, latency_ms: int, work: Path) -> Iterator[Server]:
    port_file, log = work / f"port-{latency_ms}", work / f"log-{latency_ms}.jsonl"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(SHAPED), "--root", str(root), "--port-file", str(port_file),
         "--log", str(log), "--latency-ms", str(latency_ms), "--conn-latency-ms", str(latency_ms)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # tracebacks of clients that hang up (virt-install's)
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("shaped_http.py did not start")
            time.sleep(0.02)
        yield Server(f"http://127.0.0.1:{port_file.read_text().strip()}/", log)
    finally:
        proc.terminate()
        proc.wait(10)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall time, and CPU time (user+sys) of the child processes fn ran."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def run(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def bench_tree(name: str, rel: str, srv: Server, work: Path, runs: int) -> dict[str, float]:
    url = srv.url + rel
    ident = identify(url)
    k, i = url + (ident.kernel or ""), url + (ident.initrd or "")
    times: dict[str, list[tuple[float, float]]] = {
        "cold": [], "warm": [], "xfer": [], "virt": [], "curl": []
    }
    warm_bytes = warm_requests = 0
    # One cache dir for the CLI runs: its osinfo index is built once (a one-time cost per
    # host); "cold" empties the download cache (blobs, index, partials) before each run.
    cache = Cache(work / f"cache-{name}")
    env = {**os.environ, "TREEBOOT_CACHE": str(cache.root)}
    cli = [sys.executable, "-m", "treeboot", "-q", "fetch", url, "--json"]
    run(cli, env)
    for n in range(runs):
        cache.prune(everything=True)
        times["cold"].append(timed(lambda: run(cli, env)))
        before, requests = srv.image_bytes(), srv.requests()
        times["warm"].append(timed(lambda: run(cli, env)))
        warm_bytes += srv.image_bytes() - before
        warm_requests = srv.requests() - requests
        xcache = Cache(work / f"xcache-{name}-{n}")
        times["xfer"].append(timed(lambda: fetch(ident, cache=xcache, progress=False)))  # noqa: B023
        shutil.rmtree(xcache.root, ignore_errors=True)
        times["virt"].append(timed(lambda: run([*VIRT_INSTALL, "--location", url])))
        out = work / "curl"
        curl_argv = ["curl", "-sSf", "-o", str(out / "k"), k, "-o", str(out / "i"), i]
        times["curl"].append(timed(lambda: run(curl_argv)))  # noqa: B023
    result: dict[str, float] = {"warm_image_bytes": warm_bytes, "warm_requests": warm_requests}
    for key, samples in times.items():
        result[key] = statistics.median(w for w, _ in samples)
        result[key + "_cpu"] = statistics.median(c for _, c in samples)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latencies", default="0,50,200")
    args = ap.parse_args()
    for tool in ("virt-install", "curl"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (apt-get install virtinst curl)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="treeboot-bench-") as tmp:
        work = Path(tmp)
        (work / "curl").mkdir()
        root = work / "mirror"
        debian = build_debian_tree(root / "debian").relative_to(root).as_posix() + "/"
        fedora = build_treeinfo_tree(root / "fedora").relative_to(root).as_posix() + "/"
        print(
            f"{'tree':7} {'lat':>5} | {'treeboot':>8} {'warm':>6} {'xfer':>6} {'virt-inst':>9}"
            f" {'curl':>6} | {'tb/virt':>7} {'xfer/curl':>9} | {'tb cpu':>6} {'virt cpu':>8}"
            f" | {'warm image bytes':>16} {'warm reqs':>9}"
        )
        for latency in (int(x) for x in args.latencies.split(",")):
            with shaped(root, latency, work) as srv:
                for name, rel in (("debian", debian), ("fedora", fedora)):
                    r = bench_tree(name, rel, srv, work, args.runs)
                    print(
                        f"{name:7} {latency:>3}ms | {r['cold']:>7.2f}s {r['warm']:>5.2f}s"
                        f" {r['xfer']:>5.2f}s {r['virt']:>8.2f}s {r['curl']:>5.2f}s"
                        f" | {r['cold'] / r['virt']:>6.2f}x {r['xfer'] / r['curl']:>8.2f}x"
                        f" | {r['cold_cpu']:>5.2f}s {r['virt_cpu']:>7.2f}s"
                        f" | {int(r['warm_image_bytes']):>16} {int(r['warm_requests']):>9}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
