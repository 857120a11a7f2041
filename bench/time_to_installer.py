"""Seconds from command start to the Debian installer's "Select a language" prompt.

    .venv/bin/python bench/time_to_installer.py [--runs 3] [--skip-virt-install] [--json]

Three contenders boot the same kernel and initrd (Debian 12 netboot, from a local mirror
tree served on 127.0.0.1) under TCG with 2 vCPUs and 1 GiB:

- treeboot: ``treeboot install URL --accel tcg --disk none --wait-for 'Select a language'``
  (identification, verified fetch from a warm cache, plan, QEMU, QMP watch);
- bare QEMU: the very argv treeboot runs (same guest defaults), started directly, with the
  serial console on a plain file and no QMP monitor: the floor treeboot is measured against;
- virt-install 4.1: ``--connect qemu:///system --virt-type qemu --location URL --graphics
  none --extra-args console=ttyS0 --network none`` (libvirtd/virtlogd are started if they are
  not running, and then stopped again by PID).

The prompt is detected the same way for all three: the serial log file is polled every
20 ms. Runs are interleaved, in a rotating order, so that a change in machine load hits all
three alike. Prints min and median per contender and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from treeboot.devtree import build_debian_tree  # noqa: E402

PROMPT = b"Select a language"
POLL = 0.02
LIMIT = 300.0
VIRSH = ["virsh", "--connect", "qemu:///system"]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(root: Path) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=root))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def wait_for_prompt(log: Path, started: float, proc: subprocess.Popen[bytes] | None) -> float:
    """Seconds from ``started`` until PROMPT is in ``log``; raises if it never comes."""
    offset, tail = 0, b""
    while time.monotonic() - started < LIMIT:
        with contextlib.suppress(FileNotFoundError), log.open("rb") as f:
            f.seek(offset)
            data = f.read()
            offset += len(data)
            tail = (tail + data)[-4096:]
            if PROMPT in tail:
                return time.monotonic() - started
        if proc is not None and proc.poll() is not None and proc.returncode != 0:
            raise RuntimeError(f"{proc.args!r} exited with status {proc.returncode}")
        time.sleep(POLL)
    raise RuntimeError(f"no prompt in {log} within {LIMIT} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- contenders ---------------------------------------------------------------------------


class Bench:
    def __init__(self, work: Path, url: str) -> None:
        self.work = work
        self.url = url
        self.env = dict(
            os.environ,
            TREEBOOT_HOME=str(work / "home"),
            TREEBOOT_CACHE=str(work / "cache"),
            PYTHONPATH=str(ROOT / "src"),
        )
        # Measure treeboot as installed: with its bytecode cached (the warm-up writes it).
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.treeboot = [sys.executable, "-m", "treeboot"]
        self.args = ["--accel", "tcg", "--disk", "none", "--memory", "1024", "--vcpus", "2"]
        self.bare_argv = self._bare_argv()

    def _bare_argv(self) -> list[str]:
        """Warm treeboot's cache and take its exact QEMU argv from --dry-run."""
        out = subprocess.run(
            [*self.treeboot, "install", self.url, "--name", "bench", *self.args,
             "--dry-run", "--json"],
            env=self.env, check=True, capture_output=True,
        ).stdout  # fmt: skip
        argv: list[str] = json.loads(out)["argv"]
        bare: list[str] = []
        skip = 0
        for i, arg in enumerate(argv):
            if skip:
                skip -= 1
                continue
            if arg == "-chardev" and argv[i + 1].startswith("socket,id=qmp"):
                skip = 1
                continue
            if arg == "-mon":
                skip = 1
                continue
            if arg == "-chardev" and argv[i + 1].startswith("socket,id=serial0"):
                bare += ["-chardev", f"file,id=serial0,path={self.work / 'bare.log'}"]
                skip = 1
                continue
            bare.append(arg)
        return bare

    def run_treeboot(self) -> float:
        log = self.work / "home" / "vms" / "bench" / "console.log"
        log.unlink(missing_ok=True)
        started = time.monotonic()
        proc = subprocess.Popen(
            [*self.treeboot, "install", self.url, "--name", "bench", *self.args,
             "--wait-for", PROMPT.decode(), "--wait", str(LIMIT)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            return wait_for_prompt(log, started, proc)
        finally:
            proc.wait(60)

    def run_bare(self) -> float:
        log = self.work / "bare.log"
        log.unlink(missing_ok=True)
        started = time.monotonic()
        proc = subprocess.Popen(self.bare_argv, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            return wait_for_prompt(log, started, proc)
        finally:
            stop(proc)

    def run_virt_install(self, index: int) -> float:
        name = f"treeboot-bench-{os.getpid()}-{index}"
        log = Path(f"/var/log/libvirt/qemu/{name}-serial.log")
        argv = [
            "virt-install", "--connect", "qemu:///system", "--virt-type", "qemu",
            "--name", name, "--memory", "1024", "--vcpus", "2",
            "--location", self.url, "--graphics", "none",
            "--extra-args", "console=ttyS0", "--network", "none", "--disk", "none",
            "--osinfo", "detect=on,require=off",
            "--serial", f"file,path={log}", "--noautoconsole", "--wait", "0",
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return wait_for_prompt(log, started, None)
        finally:
            stop(proc)
            for cmd in (["destroy", name], ["undefine", name]):
                subprocess.run([*VIRSH, *cmd], capture_output=True, check=False)
            log.unlink(missing_ok=True)
            log.with_name(f"{name}.log").unlink(missing_ok=True)  # libvirt's domain log


# -- libvirt daemons ----------------------------------------------------------------------


def _running(pidfile: Path, marker: str) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def libvirt_daemons() -> Iterator[None]:
    """Start virtlogd/libvirtd if they are not running; stop (by PID) only what we started."""
    started: list[Path] = []
    for daemon in ("virtlogd", "libvirtd"):
        pidfile = Path(f"/run/{daemon}.pid")
        if not _running(pidfile, daemon):
            subprocess.run([daemon, "-d"], check=True)
            for _ in range(100):
                if _running(pidfile, daemon):
                    break
                time.sleep(0.1)
            started.append(pidfile)
    try:
        yield
    finally:
        for pidfile in reversed(started):
            with contextlib.suppress(OSError, ValueError):
                _terminate(int(pidfile.read_text().strip()), pidfile.stem)


def _terminate(pid: int, marker: str, grace: float = 120.0) -> None:
    """SIGTERM; libvirtd can take a minute to shut down here, so wait, then SIGKILL."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if marker.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return
        except OSError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


# -- main ---------------------------------------------------------------------------------


def summarize(times: dict[str, list[float]]) -> dict[str, Any]:
    stats: dict[str, dict[str, Any]] = {
        k: {"runs": v, "min": min(v), "median": statistics.median(v)} for k, v in times.items() if v
    }
    ratios: dict[str, float] = {}
    for other in ("bare-qemu", "virt-install"):
        if "treeboot" in stats and other in stats:
            for key in ("min", "median"):
                ratios[f"treeboot/{other} ({key})"] = (
                    stats["treeboot"][key] / stats[other][key]
                )
    return {"seconds": stats, "ratios": ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-virt-install", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"treeboot": [], "bare-qemu": [], "virt-install": []}
    with tempfile.TemporaryDirectory(prefix="treeboot-bench-") as tmp:
        work = Path(tmp)
        tree = build_debian_tree(work / "mirror")
        with serve(work / "mirror") as port, contextlib.ExitStack() as stack:
            url = f"http://127.0.0.1:{port}/{tree.relative_to(work / 'mirror')}/"
            bench = Bench(work, url)
            contenders: list[tuple[str, Callable[[int], float]]] = [
                ("treeboot", lambda i: bench.run_treeboot()),
                ("bare-qemu", lambda i: bench.run_bare()),
            ]
            if not args.skip_virt_install:
                stack.enter_context(libvirt_daemons())
                contenders.append(("virt-install", bench.run_virt_install))
            for i in range(args.runs):
                # Rotate the order each round: no contender always runs first (or after
                # virt-install's libvirt churn).
                k = i % len(contenders)
                for name, run in contenders[k:] + contenders[:k]:
                    seconds = run(i)
                    times[name].append(seconds)
                    print(f"run {i + 1}: {name:<13} {seconds:6.2f} s", file=sys.stderr)
    result = summarize(times)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    for name, s in result["seconds"].items():
        print(f"{name:<13} min {s['min']:6.2f} s   median {s['median']:6.2f} s")
    for name, ratio in result["ratios"].items():
        print(f"{name:<32} {ratio:5.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
