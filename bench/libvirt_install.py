"""``treeboot install --connect`` against virt-install, on the same private libvirtd.

    .venv/bin/python bench/libvirt_install.py [--runs 3] [--upload-runs 5] [--json]    (as root)

1. Time to installer: seconds from command start to the Debian 12 netboot installer's
   "Select a language", for
   - treeboot: ``treeboot install URL --connect URI --accel tcg --network none --disk none
     --memory 1024 --vcpus 2 --wait-for 'Select a language'`` (warm cache; the kernel and
     initrd are uploaded into volumes on every run);
   - virt-install 4.1: ``--connect URI --virt-type qemu --location URL --memory 1024 --vcpus 2
     --graphics none --network none --disk none --serial file`` (it downloads kernel and
     initrd itself on every run).
   Both guests: q35, 2 vCPUs, no video, TCG. The prompt is found by polling each one's serial
   log every 20 ms (treeboot's local console log, fed by the console stream; virt-install's
   serial file).
2. Upload: the 41 MB Debian initrd into a volume, through the API as treeboot does it
   (``Hypervisor.upload``: create the volume, stream in 1 MiB sends) against
   ``virsh vol-upload`` of the same file into a volume created beforehand (not timed).

Runs are interleaved with a rotating order; min and median per contender and the ratios are
printed. The libvirtd is the tests' private one (tests/_libvirt_helpers.py): its own mount and
network namespace, /dev/kvm masked, stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import time_to_installer  # noqa: E402
from time_to_installer import PROMPT, serve, stop, wait_for_prompt  # noqa: E402

from _libvirt_helpers import Libvirtd, private_libvirtd  # noqa: E402
from treeboot.boot.backends.libvirt import Hypervisor  # noqa: E402
from treeboot.devtree import build_debian_tree  # noqa: E402

INITRD = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/initrd.gz")
GUEST = ["--memory", "1024", "--vcpus", "2"]


class Bench:
    def __init__(self, work: Path, url: str, daemon: Libvirtd) -> None:
        self.work, self.url, self.daemon = work, url, daemon
        self.env = dict(os.environ, TREEBOOT_HOME=str(work / "home"),
                        TREEBOOT_CACHE=str(work / "cache"),
                        PYTHONPATH=str(ROOT / "src"))  # fmt: skip
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.treeboot = [sys.executable, "-m", "treeboot"]
        # Warm the cache (and the bytecode), as time_to_installer.py does.
        subprocess.run([*self.treeboot, "fetch", url], env=self.env, check=True,
                       capture_output=True)  # fmt: skip

    def run_treeboot(self, index: int) -> float:
        name = f"tb-bench-{os.getpid()}-{index}"
        log = self.work / "home" / "vms" / name / "console.log"
        started = time.monotonic()
        proc = subprocess.Popen(
            [*self.treeboot, "install", self.url, "--name", name, "--connect", self.daemon.uri,
             "--accel", "tcg", "--network", "none", "--disk", "none", *GUEST,
             "--wait-for", PROMPT.decode(), "--wait", str(time_to_installer.LIMIT)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            return wait_for_prompt(log, started, proc)
        finally:
            proc.wait(120)

    def run_virt_install(self, index: int) -> float:
        name = f"vi-bench-{os.getpid()}-{index}"
        log_name = f"{name}-serial.log"
        log = self.daemon.root / "log" / "qemu" / log_name  # /var/log/libvirt in its namespace
        argv = [
            "virt-install", "--connect", self.daemon.uri, "--virt-type", "qemu",
            "--name", name, *GUEST, "--location", self.url, "--graphics", "none",
            "--extra-args", "console=ttyS0", "--network", "none", "--disk", "none",
            "--osinfo", "detect=on,require=off",
            "--serial", f"pty,log.file=/var/log/libvirt/qemu/{log_name}",  # as treeboot's
            "--noautoconsole", "--wait", "0",
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return self._wait_domain_prompt(log, started, name)
        finally:
            stop(proc)
            for cmd in (["destroy", name], ["undefine", name]):
                self.daemon.virsh(*cmd, check=False)
            log.unlink(missing_ok=True)

    def _wait_domain_prompt(self, log: Path, started: float, name: str) -> float:
        """As wait_for_prompt, but a domain that failed to start ends the wait at once."""
        deadline = started + time_to_installer.LIMIT
        next_check = started + 30  # by then virt-install has defined and started it
        offset, tail = 0, b""
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError), log.open("rb") as f:
                f.seek(offset)
                data = f.read()
                offset, tail = offset + len(data), (tail + data)[-4096:]
                if PROMPT in tail:
                    return time.monotonic() - started
            if time.monotonic() > next_check:
                state = self.daemon.virsh("domstate", name, check=False).stdout.strip()
                if state != "running":  # "" when virt-install removed the failed domain
                    raise RuntimeError(f"virt-install's domain {name} is {state!r}")
                next_check = time.monotonic() + 2
            time.sleep(0.02)
        raise RuntimeError(f"no prompt in {log} within {time_to_installer.LIMIT} s")

    def upload_api(self, index: int) -> float:
        hv = Hypervisor(self.daemon.uri)
        try:
            pool = hv.find_pool(None)
            started = time.monotonic()
            vol = hv.upload(pool, INITRD, f"bench-api-{index}")
            seconds = time.monotonic() - started
            hv.delete_volume(vol)
            return seconds
        finally:
            hv.close()

    def upload_virsh(self, index: int) -> float:
        name = f"bench-virsh-{index}"
        pool = "treeboot-boot"
        self.daemon.virsh("vol-create-as", pool, name, str(INITRD.stat().st_size),
                          "--format", "raw")  # fmt: skip
        try:
            started = time.monotonic()
            self.daemon.virsh("vol-upload", "--pool", pool, name, str(INITRD))
            return time.monotonic() - started
        finally:
            self.daemon.virsh("vol-delete", "--pool", pool, name, check=False)


def interleave(contenders: list[tuple[str, Callable[[int], float]]], runs: int,
               times: dict[str, list[float]]) -> None:  # fmt: skip
    for i in range(runs):
        k = i % len(contenders)
        for name, run in contenders[k:] + contenders[:k]:
            seconds = run(i)
            times.setdefault(name, []).append(seconds)
            print(f"run {i + 1}: {name:<14} {seconds:7.3f} s", file=sys.stderr)


def summarize(times: dict[str, list[float]]) -> dict[str, Any]:
    stats = {k: {"runs": v, "min": min(v), "median": statistics.median(v)}
             for k, v in times.items() if v}  # fmt: skip
    ratios = {}
    for ours, theirs in (("treeboot", "virt-install"), ("upload-api", "virsh-vol-upload")):
        if ours in stats and theirs in stats:
            for key in ("min", "median"):
                ratios[f"{ours}/{theirs} ({key})"] = stats[ours][key] / stats[theirs][key]
    return {"seconds": stats, "ratios": ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--upload-runs", type=int, default=5)
    parser.add_argument("--upload-only", action="store_true", help="skip time to installer")
    parser.add_argument("--limit", type=float, default=600.0,
                        help="seconds to wait for the prompt (a loaded machine is slow)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    time_to_installer.LIMIT = args.limit  # wait_for_prompt reads it
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tb-lvb-", dir="/tmp") as tmp:
        work = Path(tmp)
        tree = build_debian_tree(work / "mirror")
        with contextlib.ExitStack() as stack:
            daemon = stack.enter_context(private_libvirtd(work / "lv", share_boot_dir=True))
            port = stack.enter_context(serve(work / "mirror"))
            url = f"http://127.0.0.1:{port}/{tree.relative_to(work / 'mirror')}/"
            bench = Bench(work, url, daemon)
            bench.upload_api(-1)  # defines the treeboot-boot pool both uploads use
            interleave([("upload-api", bench.upload_api),
                        ("virsh-vol-upload", bench.upload_virsh)], args.upload_runs, times)
            if not args.upload_only:
                interleave([("treeboot", bench.run_treeboot),
                            ("virt-install", bench.run_virt_install)], args.runs, times)
    result = summarize(times)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    for name, s in result["seconds"].items():
        print(f"{name:<17} min {s['min']:7.3f} s   median {s['median']:7.3f} s")
    for name, ratio in result["ratios"].items():
        print(f"{name:<40} {ratio:5.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
