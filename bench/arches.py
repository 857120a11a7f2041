"""Per architecture: seconds from start to the Debian installer's first prompt under TCG, and
how much of it passes before the kernel's first console line.

    .venv/bin/python bench/arches.py [--runs 3] [--only amd64-bios,arm64,...] [--json]

For each case (amd64 under SeaBIOS and OVMF, i386, arm64, armhf, ppc64el, mips64el) a local
mirror tree is built from Debian's netboot package (treeboot.devtree) and served on
127.0.0.1. Two contenders boot the same kernel and initrd with 1 GiB and treeboot's default
vCPUs (2; 1 on MIPS Malta):

- treeboot: ``treeboot install URL --accel tcg --disk none [--boot B] --wait-for PROMPT``;
- bare QEMU: the very argv treeboot runs (taken from ``--dry-run``), serial on a plain file,
  no QMP: the floor treeboot is measured against.

"Before the kernel" is the time until the first line the kernel prints on the console
(firmware, loading, decompression and early boot until the console is registered); "after"
is the rest, up to the prompt. Runs are interleaved (all cases and both contenders each
round, in a rotating order) so that a change in machine load hits all alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_installer import ROOT, serve, stop

from treeboot.arch import Firmware, firmware_info
from treeboot.devtree import build_debian_tree

PROMPT = re.compile(rb"Select a language")
# The kernel's first console line: its banner, or a printk timestamp (arm prints "Booting
# Linux on physical CPU" first; both carry the timestamp).
KERNEL = re.compile(rb"Linux version |\[ +0\.0\d+\]")
POLL = 0.02
LIMIT = 600.0
CASES = {
    "amd64-bios": ("amd64", "bios"),
    "amd64-uefi": ("amd64", "uefi"),
    "i386": ("i386", None),
    "arm64": ("arm64", None),
    "armhf": ("armhf", None),
    "ppc64el": ("ppc64el", None),
    "mips64el": ("mips64el", None),
}


def watch(log: Path, started: float, proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """(seconds to the kernel's first line, seconds to the prompt) in ``log``."""
    data, first = b"", None
    while time.monotonic() - started < LIMIT:
        with contextlib.suppress(FileNotFoundError):
            data = log.read_bytes()
        now = time.monotonic() - started
        if first is None and KERNEL.search(data):
            first = now
        if PROMPT.search(data):
            return first if first is not None else now, now
        if proc.poll() is not None and proc.returncode != 0:
            raise RuntimeError(f"{proc.args!r} exited with status {proc.returncode}")
        time.sleep(POLL)
    raise RuntimeError(f"no prompt in {log} within {LIMIT} s")


class Case:
    def __init__(self, work: Path, name: str, url: str, boot: str | None) -> None:
        self.work, self.name, self.url = work, name, url
        self.env = {
            "TREEBOOT_HOME": str(work / "home"),
            "TREEBOOT_CACHE": str(work / "cache"),
            "PYTHONPATH": str(ROOT / "src"),
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        }
        self.treeboot = [sys.executable, "-m", "treeboot"]
        self.args = ["--accel", "tcg", "--disk", "none", "--memory", "1024"]  # 2 vCPUs, 1 on Malta
        self.args += ["--boot", boot] if boot else []
        self.vm = f"bench-{name}"
        self.bare_argv = self._bare_argv()

    def _bare_argv(self) -> list[str]:
        out = subprocess.run(
            [*self.treeboot, "install", self.url, "--name", self.vm, *self.args,
             "--dry-run", "--json"],
            env=self.env, check=True, capture_output=True,
        ).stdout  # fmt: skip
        data = json.loads(out)
        argv: list[str] = data["argv"]
        self.vars_template = firmware_info(Firmware(data["plan"]["firmware"])).vars
        self.vars_copy = self.work / f"{self.name}-vars.fd"
        bare, i = [], 0
        while i < len(argv):
            arg, nxt = argv[i], argv[i + 1] if i + 1 < len(argv) else ""
            if (arg == "-chardev" and nxt.startswith("socket,id=qmp")) or arg == "-mon":
                i += 2
                continue
            if arg == "-chardev" and nxt.startswith("socket,id=serial0"):
                bare += ["-chardev", f"file,id=serial0,path={self.work / 'bare.log'}"]
                i += 2
                continue
            if "if=pflash" in nxt and "unit=1" in nxt:  # a fresh variable store each run
                bare += [arg, re.sub(r"file=[^,]+", f"file={self.vars_copy}", nxt)]
                i += 2
                continue
            bare.append(arg)
            i += 1
        return bare

    def run_treeboot(self) -> tuple[float, float]:
        log = self.work / "home" / "vms" / self.vm / "console.log"
        log.unlink(missing_ok=True)
        started = time.monotonic()
        proc = subprocess.Popen(
            [*self.treeboot, "install", self.url, "--name", self.vm, *self.args,
             "--wait-for", PROMPT.pattern.decode(), "--wait", str(LIMIT)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            return watch(log, started, proc)
        finally:
            proc.wait(120)

    def run_bare(self) -> tuple[float, float]:
        log = self.work / "bare.log"
        log.unlink(missing_ok=True)
        if self.vars_template is not None:  # as treeboot does: a fresh copy per install
            self.vars_copy.write_bytes(self.vars_template.read_bytes())
        started = time.monotonic()
        proc = subprocess.Popen(self.bare_argv, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            return watch(log, started, proc)
        finally:
            stop(proc)


def summarize(times: dict[str, dict[str, list[tuple[float, float]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case, by in times.items():
        row: dict[str, Any] = {}
        for who, runs in by.items():
            if not runs:
                continue
            total = [t for _, t in runs]
            before = [k / t for k, t in runs]
            row[who] = {"runs": runs, "min": min(total), "median": statistics.median(total),
                        "before_kernel_share": statistics.median(before)}  # fmt: skip
        if "treeboot" in row and "bare-qemu" in row:
            row["ratio_median"] = row["treeboot"]["median"] / row["bare-qemu"]["median"]
            row["ratio_min"] = row["treeboot"]["min"] / row["bare-qemu"]["min"]
        out[case] = row
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bare-runs", type=int, help="bare QEMU runs (default: --runs)")
    parser.add_argument("--only", help="comma-separated cases: " + ",".join(CASES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CASES)
    times: dict[str, dict[str, list[tuple[float, float]]]] = {
        n: {"treeboot": [], "bare-qemu": []} for n in names
    }
    with tempfile.TemporaryDirectory(prefix="treeboot-bench-arches-") as tmp:
        work = Path(tmp)
        mirror = work / "mirror"
        mirror.mkdir()
        with serve(mirror) as port:
            cases = []
            for name in names:
                debarch, boot = CASES[name]
                tree = build_debian_tree(mirror, debarch)
                url = f"http://127.0.0.1:{port}/{tree.relative_to(mirror)}/"
                cases.append(Case(work, name, url, boot))
            for i in range(args.runs):
                order = cases[i % len(cases) :] + cases[: i % len(cases)]
                for case in order:
                    runs = [("treeboot", case.run_treeboot)]
                    if i < (args.runs if args.bare_runs is None else args.bare_runs):
                        runs.append(("bare-qemu", case.run_bare))
                    for who, run in runs if i % 2 == 0 else runs[::-1]:
                        kernel, total = run()
                        times[case.name][who].append((kernel, total))
                        print(f"run {i + 1}: {case.name:<11} {who:<9} kernel {kernel:6.1f} s"
                              f"  prompt {total:6.1f} s", file=sys.stderr, flush=True)  # fmt: skip
    result = summarize(times)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'case':<11} {'treeboot min/median':>20} {'bare min/median':>17} {'ratio':>6}"
          f" {'before kernel':>14}")  # fmt: skip
    for name, row in result.items():
        t, b = row["treeboot"], row["bare-qemu"]
        print(f"{name:<11} {t['min']:8.1f} /{t['median']:6.1f} s"
              f" {b['min']:7.1f} /{b['median']:6.1f} s {row['ratio_median']:6.2f}"
              f" {t['before_kernel_share']:13.0%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
