"""Remote ISO: identify + fetch kernel/initrd over HTTP Range vs downloading the whole image.

    .venv/bin/python bench/iso_remote.py                 # 4 GiB image, 50 ms per request
    .venv/bin/python bench/iso_remote.py --size-gib 8 --latency-ms 50 --keep

Builds a multi-GB ISO with xorriso: a large sparse file (a stand-in for a DVD's packages) plus
the real Debian 12 netboot kernel/initrd, .disk/info, sha256sum.txt and boot configs, laid out
like a Debian DVD. xorriso's output is piped through ``cp --sparse=always`` so the image takes
about 50 MB of disk whatever its size. The image is served by ../shared/tools/shaped_http.py
(latency per request, JSON request log) on 127.0.0.1, then measured:

1. ``treeboot fetch URL --json`` in a fresh cache (identification + kernel + initrd);
2. ``curl -o /dev/null URL`` (the whole image).

Prints wall time, bytes served (from the server's log) and requests for both, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SERVER = SHARED / "tools" / "shaped_http.py"
sys.path.insert(0, str(ROOT / "tests"))

from _iso_helpers import debian_netinst_files, graft_points  # noqa: E402


def build_sparse_iso(workdir: Path, size_gib: float) -> Path:
    """A Debian-DVD-like image with a ``size_gib`` sparse payload, written sparsely."""
    staging = workdir / "staging"
    grafts = graft_points(debian_netinst_files(), staging)
    big = workdir / "pool.bin"
    with big.open("wb") as f:
        f.truncate(int(size_gib * (1 << 30)))
    grafts.append(f"/pool/main/packages.bin={big}")
    out = workdir / "www" / "debian-12.4.0-amd64-DVD-1.iso"
    out.parent.mkdir(parents=True, exist_ok=True)
    xorriso = [
        "xorriso", "-as", "mkisofs", "-quiet", "-iso-level", "3", "-o", "-",
        "-V", "Debian 12.4.0 amd64 1", "-J", "-joliet-long", "-R", "-graft-points",
        "-b", "isolinux/isolinux.bin", "-no-emul-boot", "-boot-load-size", "4",
        *grafts,
    ]  # fmt: skip
    errors = workdir / "xorriso.log"
    with (
        errors.open("wb") as err,
        subprocess.Popen(xorriso, stdout=subprocess.PIPE, stderr=err) as mk,
    ):
        try:
            subprocess.run(
                ["cp", "--sparse=always", "/dev/stdin", str(out)], stdin=mk.stdout, check=True
            )
        finally:
            if mk.stdout:
                mk.stdout.close()
            mk.wait()
    if mk.returncode:
        raise SystemExit(f"xorriso failed ({mk.returncode}): {errors.read_text()}")
    big.unlink()
    shutil.rmtree(staging)
    return out


def start_server(root: Path, log: Path, latency_ms: int) -> tuple[subprocess.Popen[bytes], int]:
    port_file = log.with_suffix(".port")
    argv = [
        sys.executable,
        str(SERVER),
        "--root",
        str(root),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--log",
        str(log),
        "--latency-ms",
        str(latency_ms),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    for _ in range(100):
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text())
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("shaped_http.py did not start")


def served(log: Path, since: int) -> tuple[int, int, list[int]]:
    """(bytes, requests, connections) logged after line ``since``.

    The server logs a request after its last byte, which the client may have seen first.
    """
    for _ in range(100):
        if log_lines(log) > since:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    lines = log.read_text().splitlines()[since:] if log.exists() else []
    recs = [json.loads(line) for line in lines]
    return sum(r["bytes"] for r in recs), len(recs), sorted({r["conn"] for r in recs})


def log_lines(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def run_treeboot(url: str, cache: Path) -> tuple[float, dict[str, object]]:
    env = {**os.environ, "TREEBOOT_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src")}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "treeboot", "-q", "fetch", url, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    elapsed = time.monotonic() - t0
    if proc.returncode:
        raise SystemExit(f"treeboot fetch failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed, json.loads(proc.stdout)


def run_curl(url: str) -> float:
    t0 = time.monotonic()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", url], check=True)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=4.0, help="sparse payload size (GiB)")
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--workdir", type=Path, help="default: a temporary directory")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    opts = ap.parse_args()
    for tool in ("xorriso", "curl", "cp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required (apt-get install {tool})")
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="treeboot-isobench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        t0 = time.monotonic()
        iso = build_sparse_iso(workdir, opts.size_gib)
        size = iso.stat().st_size
        disk = iso.stat().st_blocks * 512
        print(
            f"image: {iso.name}: {size / 2**30:.2f} GiB, {disk / 2**20:.0f} MiB on disk, "
            f"built in {time.monotonic() - t0:.1f} s"
        )
        log = workdir / "requests.jsonl"
        server, port = start_server(iso.parent, log, opts.latency_ms)
        url = f"http://127.0.0.1:{port}/{iso.name}"

        mark = log_lines(log)
        tb_time, result = run_treeboot(url, workdir / "cache")
        tb_bytes, tb_reqs, tb_conns = served(log, mark)
        payload = int(str(result["bytes_downloaded"]))

        mark = log_lines(log)
        curl_time = run_curl(url)
        curl_bytes, curl_reqs, _ = served(log, mark)

        print(f"latency per request: {opts.latency_ms} ms")
        print(
            f"treeboot identify+fetch: {tb_time:7.2f} s  {tb_bytes:>14,} bytes  "
            f"{tb_reqs} requests on {len(tb_conns)} connection(s)  verified={result['verified']}"
        )
        print(
            f"  kernel+initrd: {payload:,} bytes; overhead (descriptors, directories, "
            f"metadata): {tb_bytes - payload:,} bytes = {tb_bytes / payload:.4f}x kernel+initrd"
        )
        print(
            f"curl whole image:        {curl_time:7.2f} s  {curl_bytes:>14,} bytes  "
            f"{curl_reqs} request(s)"
        )
        print(
            f"ratio treeboot/curl: time {tb_time / curl_time:.4f}, "
            f"bytes {tb_bytes / curl_bytes:.5f} "
            f"(curl/treeboot: {curl_bytes / tb_bytes:.1f}x bytes, {curl_time / tb_time:.1f}x time)"
        )
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if opts.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
