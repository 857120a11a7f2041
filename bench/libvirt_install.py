"""``treeboot install --connect`` against virt-install, on the same private libvirtd.

    .venv/bin/python bench/libvirt_install.py [--runs 3] [--upload-runs 15] [--chunks 1,4,8]
                                              [--upload-only] [--json]              (as root)

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
2. Upload: the 41 MB Debian initrd into a volume. Both sides do the same thing: the volume
   is created beforehand (not timed) and the timed part is everything from having no
   connection to the bytes being in the volume:
   - treeboot's API path: open a connection, look the volume up, ``Hypervisor.upload_into``
     (``vol.upload`` on a stream, one ``send`` per chunk read from the file; libvirt cuts a
     send into its own stream packets), close; once per chunk size in ``--chunks`` (MiB);
   - ``virsh vol-upload`` of the same file into such a volume (its process start included:
     it is what the command costs).
   For the streaming alone, the API's stream part is also timed on its own
   (``stream-api-*``), and ``virsh vol-info`` on such a volume (start, connect, lookup, no
   bytes) estimates virsh's fixed cost: its stream part is vol-upload minus vol-info.
   The default pool of the daemon (treeboot-boot) holds the volumes.

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
from treeboot.boot.backends.libvirt import Hypervisor, Volume  # noqa: E402
from treeboot.devtree import build_debian_tree  # noqa: E402

INITRD = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/initrd.gz")
GUEST = ["--memory", "1024", "--vcpus", "2"]


class Bench:
    def __init__(self, work: Path, url: str, daemon: Libvirtd) -> None:
        self.work, self.url, self.daemon = work, url, daemon
        self.pool = self.prepare_pool()
        self.streaming: dict[str, list[float]] = {}  # the stream part of each API upload
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

    def prepare_pool(self) -> str:
        """The pool both uploads use (treeboot defines treeboot-boot on a bare daemon)."""
        hv = Hypervisor(self.daemon.uri)
        try:
            return str(hv.find_pool(None).name())
        finally:
            hv.close()

    def _volume(self, name: str) -> None:
        hv = Hypervisor(self.daemon.uri)
        try:
            pool = hv.conn.storagePoolLookupByName(self.pool)
            hv.create_volume(pool, name, INITRD.stat().st_size, replace=True)
        finally:
            hv.close()

    def upload_api(self, chunk_mib: int) -> Callable[[int], float]:
        def run(index: int) -> float:
            name = f"bench-api-{chunk_mib}m-{index}"
            self._volume(name)
            try:
                started = time.monotonic()
                hv = Hypervisor(self.daemon.uri)
                try:
                    handle = hv.conn.storagePoolLookupByName(self.pool).storageVolLookupByName(name)
                    vol = Volume(self.pool, name, handle.path(), handle)
                    streaming = time.monotonic()
                    hv.upload_into(vol, INITRD, chunk=chunk_mib << 20)
                    self.streaming.setdefault(f"stream-api-{chunk_mib}M", []).append(
                        time.monotonic() - streaming)  # fmt: skip
                finally:
                    hv.close()
                return time.monotonic() - started
            finally:
                self.daemon.virsh("vol-delete", "--pool", self.pool, name, check=False)

        return run

    def virsh_no_upload(self, index: int) -> float:
        """virsh's fixed cost (start, connect, look the volume up) without a byte sent."""
        name = f"bench-info-{index}"
        self._volume(name)
        try:
            started = time.monotonic()
            self.daemon.virsh("vol-info", "--pool", self.pool, name)
            return time.monotonic() - started
        finally:
            self.daemon.virsh("vol-delete", "--pool", self.pool, name, check=False)

    def upload_virsh(self, index: int) -> float:
        name = f"bench-virsh-{index}"
        self._volume(name)
        try:
            started = time.monotonic()
            self.daemon.virsh("vol-upload", "--pool", self.pool, name, str(INITRD))
            return time.monotonic() - started
        finally:
            self.daemon.virsh("vol-delete", "--pool", self.pool, name, check=False)


def interleave(contenders: list[tuple[str, Callable[[int], float]]], runs: int,
               times: dict[str, list[float]]) -> None:  # fmt: skip
    for i in range(runs):
        k = i % len(contenders)
        for name, run in contenders[k:] + contenders[:k]:
            seconds = run(i)
            times.setdefault(name, []).append(seconds)
            print(f"run {i + 1}: {name:<17} {seconds:7.3f} s", file=sys.stderr)


def summarize(times: dict[str, list[float]]) -> dict[str, Any]:
    stats = {k: {"runs": v, "min": min(v), "median": statistics.median(v)}
             for k, v in times.items() if v}  # fmt: skip
    ratios = {}
    pairs = [("treeboot", "virt-install")]
    pairs += [(k, "virsh-vol-upload") for k in stats if k.startswith("upload-api")]
    for ours, theirs in pairs:
        if ours in stats and theirs in stats:
            for key in ("min", "median"):
                ratios[f"{ours}/{theirs} ({key})"] = stats[ours][key] / stats[theirs][key]
    # The streaming alone: the API's stream part against virsh's upload minus its fixed cost.
    if "virsh-vol-upload" in stats and "virsh-vol-info" in stats:
        virsh_stream = (stats["virsh-vol-upload"]["median"]
                        - stats["virsh-vol-info"]["median"])  # fmt: skip
        for k in (k for k in stats if k.startswith("stream-api")):
            ratios[f"{k}/virsh stream estimate (median)"] = stats[k]["median"] / virsh_stream
    return {"seconds": stats, "ratios": ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--upload-runs", type=int, default=15)
    parser.add_argument("--chunks", default="1,4,8",
                        help="API upload chunk sizes to measure, in MiB (comma-separated)")
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
            uploads = [(f"upload-api-{mib}M", bench.upload_api(mib))
                       for mib in (int(c) for c in args.chunks.split(","))]  # fmt: skip
            uploads.append(("virsh-vol-upload", bench.upload_virsh))
            uploads.append(("virsh-vol-info", bench.virsh_no_upload))
            interleave(uploads, args.upload_runs, times)
            times.update(bench.streaming)
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
        print(f"{name:<46} {ratio:5.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
