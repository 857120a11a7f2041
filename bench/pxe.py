"""``treeboot pxe`` against its peers, on a LAN built in network namespaces (needs root).

    .venv/bin/python bench/pxe.py [--runs 3] [--skip-boot] [--json]

1. Seconds to the Debian installer's "Select a language" prompt for the same tree (Debian 12
   netboot, a local mirror built by treeboot.devtree), under TCG, q35, 2 vCPUs, 1 GiB:
   - pxe: SeaBIOS + the NIC's iPXE ROM, proxy-DHCP from treeboot's dnsmasq next to the LAN's
     own DHCP server, iPXE script + kernel + initrd over treeboot's HTTP; timed from QEMU's
     start (``treeboot pxe`` is already running, as it is on a real network);
   - direct: ``treeboot install DIR --accel tcg --disk none --network none --wait-for ...``
     (direct kernel boot), timed from the command's start.
2. The 40 MB initrd fetched across the bridge by curl, from treeboot's HTTP and from
   dnsmasq's TFTP server (a second dnsmasq, TFTP only, serving the same file) with
   ``--tftp-blksize`` 1468 (the largest block in a 1500-byte MTU, what iPXE asks for) and 512
   (the RFC 1350 default, what many PXE ROMs use).

Runs are interleaved so that a change in machine load hits every contender alike. Prints min
and median per contender and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the LAN builder the tests use

from _pxe_helpers import (  # noqa: E402
    HTTP_PORT,
    PXE_IP,
    ROUTER_IP,
    Lan,
    kill_pid,
    lan_network,
    qemu_pxe_argv,
    sh,
    wait_for_text,
)
from treeboot.devtree import build_debian_tree  # noqa: E402

PROMPT = "Select a language"
TREE = "dists/bookworm/main/installer-amd64/"
INITRD = "current/images/netboot/debian-installer/amd64/initrd.gz"
MAC = "52:54:00:77:00:99"


def treeboot(*args: str) -> list[str]:
    return [sys.executable, "-m", "treeboot", *args]


def time_pxe(lan: Lan, n: int) -> float:
    console = lan.workdir / f"pxe{n}.console"
    argv = qemu_pxe_argv(lan.tap(), MAC, console, smp=2)
    t0 = time.monotonic()
    qemu = lan.start(lan.lan, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_text(console, PROMPT, 900, [qemu])
        return time.monotonic() - t0
    finally:
        kill_pid(qemu)


def time_direct(tree: Path, n: int) -> float:
    t0 = time.monotonic()
    subprocess.run(
        treeboot("install", str(tree), "--name", f"benchpxe{os.getpid()}-{n}", "--accel", "tcg",
                 "--disk", "none", "--network", "none", "--wait-for", PROMPT, "--wait", "900"),
        check=True, capture_output=True,
    )  # fmt: skip
    return time.monotonic() - t0


def time_curl(lan: Lan, ns: str, url: str, *opts: str) -> float:
    t0 = time.monotonic()
    sh("curl", "-fsS", "-o", "/dev/null", *opts, url, ns=ns)
    return time.monotonic() - t0


def summary(times: dict[str, list[float]], peer: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, ts in times.items():
        out[name] = {"runs": [round(t, 2) for t in ts], "min": round(min(ts), 2),
                     "median": round(statistics.median(ts), 2)}  # fmt: skip
    for name in times:
        if name != peer:
            out[name]["ratio_min"] = round(out[name]["min"] / out[peer]["min"], 2)
            out[name]["ratio_median"] = round(out[name]["median"] / out[peer]["median"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-boot", action="store_true", help="only the HTTP/TFTP transfer")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pxe-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        build_debian_tree(work / "mirror")
        tree = work / "mirror" / TREE
        tftp = work / "tftp"
        tftp.mkdir(mode=0o755)
        (tftp / "initrd.gz").write_bytes((tree / INITRD).read_bytes())
        (tftp / "initrd.gz").chmod(0o644)
        with lan_network(work) as lan:
            log = (work / "pxe.log").open("wb")
            pxe = lan.start(lan.pxe, treeboot("pxe", str(tree), "--interface", "p0",
                                              "--max-boots", "1000", "--state-dir",
                                              str(work / "state")),
                            stdout=log, stderr=log)  # fmt: skip
            wait_for_text(work / "pxe.log", "serving on", 300, [pxe])
            tftp_only = ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--port=0",
                         "--interface=r0", "--bind-interfaces", "--enable-tftp",
                         f"--tftp-root={tftp}"]  # fmt: skip
            lan.start(lan.router, tftp_only)
            time.sleep(1)
            http_url = f"http://{PXE_IP}:{HTTP_PORT}/e0/initrd/{MAC}"
            tftp_url = f"tftp://{ROUTER_IP}/initrd.gz"
            transfer: dict[str, list[float]] = {"http": [], "tftp-1468": [], "tftp-512": []}
            for _ in range(args.runs):
                transfer["http"].append(time_curl(lan, lan.router, http_url))
                transfer["tftp-1468"].append(
                    time_curl(lan, lan.pxe, tftp_url, "--tftp-blksize", "1468")
                )
                transfer["tftp-512"].append(
                    time_curl(lan, lan.pxe, tftp_url, "--tftp-blksize", "512")
                )
            result = {"initrd_transfer": summary(transfer, "http")}
            if not args.skip_boot:
                boot: dict[str, list[float]] = {"direct": [], "pxe": []}
                for n in range(args.runs):
                    order = ("pxe", "direct") if n % 2 else ("direct", "pxe")
                    for name in order:
                        boot[name].append(time_pxe(lan, n) if name == "pxe"
                                          else time_direct(tree, n))  # fmt: skip
                result["time_to_installer"] = summary(boot, "direct")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for section, rows in result.items():
            print(section)
            for name, r in rows.items():
                ratio = f"  ratio {r['ratio_min']}x (min) {r['ratio_median']}x (median)" if (
                    "ratio_min" in r) else "  (reference)"  # fmt: skip
                print(f"  {name:10} min {r['min']:7.2f} s  median {r['median']:7.2f} s{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
