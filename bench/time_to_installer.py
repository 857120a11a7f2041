"""Seconds from command start to the Debian installer's "Select a language" prompt.

    .venv/bin/python bench/time_to_installer.py [--runs 3] [--arch amd64|arm64]
        [--skip-virt-install] [--rows SUBSTR,...] [--json]

Every row boots the same Debian 12 netboot kernel and initrd (a local mirror tree served on
127.0.0.1) under TCG with 2 vCPUs and 1 GiB, interleaved in one run, in a new seeded random
order each round, after 2 s of quiet:

- treeboot (``--boot-form`` auto, fast, classic): ``treeboot install URL --accel tcg --disk
  none --wait-for 'Select a language'`` from a warm cache (derived forms included);
- bare rows: treeboot's own classic argv started directly (serial on a plain file, no QMP),
  with the kernel/initrd swapped for the derived forms (vmlinux entered through PVH on x86,
  the initrd inflated) and, one at a time, without each guest default treeboot adds
  (``-cpu``, virtio-rng, pvpanic, the network), and with treeboot's serial socket chardev or
  its QMP monitor added (what treeboot's plumbing costs); arm64 adds CPU-model rows;
- virt-install 4.1 (amd64): ``--virt-type qemu --location URL --transient``, against a
  libvirtd of its own started in a private mount namespace where /dev/kvm is masked.

Also printed: the cold derivation cost (wall and CPU seconds, extra cache bytes), each bare
row's QEMU peak RSS, and for treeboot rows the split of their time into treeboot's own
start-up (to QEMU's start, read from /proc) and the boot after it. The prompt is detected the
same way for every row: the serial log is polled every 20 ms. Prints min and median per row
and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import shutil
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
FAST_ROW = "bare fast (vmlinux/Image + raw initrd)"  # the bare argv of the fast form
POLL = 0.02
SETTLE = 2.0  # seconds of quiet before each boot
LIMIT = float(os.environ.get("BENCH_LIMIT", "300"))
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


def wait_for_prompt(
    log: Path,
    started: float,
    proc: subprocess.Popen[bytes] | None,
    each_poll: Callable[[], None] = lambda: None,
) -> float:
    """Seconds from ``started`` until PROMPT is in ``log``; raises if it never comes."""
    offset, tail = 0, b""
    while time.monotonic() - started < LIMIT:
        each_poll()
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
    last = tail[-1500:].decode(errors="replace")
    raise RuntimeError(f"no prompt in {log} within {LIMIT} s; the log ends with:\n{last}")


class _QemuOf:
    """treeboot's QEMU, found through its pidfile: when it started (seconds after
    ``started``, from /proc: 10 ms resolution), so that treeboot's time splits into its own
    start-up and the guest's boot."""

    def __init__(self, pidfile: Path, started: float) -> None:
        self.pidfile = pidfile
        self.started = started
        self.pid: int | None = None
        self.offset = 0.0

    def poll(self) -> None:
        if self.pid is not None:
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(self.pidfile.read_text())
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # CLOCK_BOOTTIME ticks
            now_boot, now = time.clock_gettime(time.CLOCK_BOOTTIME), time.monotonic()
            self.offset = since_boot - (now_boot - now) - self.started
            self.pid = pid


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- contenders ---------------------------------------------------------------------------


def _drop(argv: list[str], pred: Callable[[str, str], bool]) -> list[str]:
    """``argv`` without the option/value pairs for which ``pred(option, value)`` holds."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i].startswith("-") and i + 1 < len(argv) and pred(argv[i], argv[i + 1]):
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _swap(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(option) + 1] = value
    return out


class Bench:
    def __init__(self, work: Path, url: str, arch: str) -> None:
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
        self.args = ["--accel", "tcg", "--disk", "none", "--memory", "1024", "--vcpus", "2",
                     "--arch", arch]  # fmt: skip
        self.classic = self._bare_argv()
        self.forms, self.derive_cost = self._derive()
        # The derivation leaves ~200 MB of dirty pages; their writeback slowed the first boot
        # after it by 2-3 s, whichever row it was. Flush them before any boot is timed.
        os.sync()
        time.sleep(SETTLE)
        self.peaks: dict[str, list[int]] = {}
        self.cpu: dict[str, list[float]] = {}  # QEMU's CPU seconds at the prompt: less noisy
        self.qemu_start: dict[str, list[float]] = {}  # treeboot rows: seconds to QEMU's start

    def _bare_argv(self) -> list[str]:
        """Warm treeboot's cache and take its exact classic QEMU argv from --dry-run."""
        out = subprocess.run(
            [*self.treeboot, "install", self.url, "--name", "bench", *self.args,
             "--boot-form", "classic", "--dry-run", "--json"],
            env=self.env, check=True, capture_output=True,
        ).stdout  # fmt: skip
        argv: list[str] = json.loads(out)["argv"]
        argv = _drop(argv, lambda o, v: o == "-mon" or v.startswith("socket,id=qmp"))
        _make_nvram(argv)
        log = self.work / "bare.log"
        return [a if not a.startswith("socket,id=serial0") else f"file,id=serial0,path={log}"
                for a in argv]  # fmt: skip

    def _derive(self) -> tuple[dict[str, Path], dict[str, Any]]:
        """Derive the fast forms cold, in this process, timing them (the cold-run overhead)."""
        from treeboot.prepare.bootform import BootForm, choose_form, firmware_kind, prepare_forms
        from treeboot.store.cache import Cache
        from treeboot.store.derived import DerivedStore

        kernel = Path(self.classic[self.classic.index("-kernel") + 1])
        initrd = Path(self.classic[self.classic.index("-initrd") + 1])
        arch = "x86_64" if "x86_64" in self.classic[0] else "aarch64"
        choice = choose_form(arch, firmware_kind(arch, None), "tcg", BootForm.FAST)
        self.auto_form = str(choose_form(arch, firmware_kind(arch, None), "tcg", "auto").form)
        store = DerivedStore(Cache(self.work / "cache"))
        started, cpu = time.monotonic(), time.process_time()
        prepared = prepare_forms(choice, kernel, initrd, kernel_sha256=kernel.name,
                                 initrd_sha256=initrd.name, store=store)  # fmt: skip
        cost = {
            "wall_seconds": round(time.monotonic() - started, 3),
            "cpu_seconds": round(time.process_time() - cpu, 3),
            "extra_cache_bytes": store.usage(),
            "derived": {k: e.__dict__ for k, e in prepared.derived.items()},
        }
        return {"kernel": prepared.kernel, "initrd": prepared.initrd}, cost

    def variant(self, kernel: str = "classic", initrd: str = "classic",
                drop: tuple[str, ...] = (), cpu: str | None = None) -> list[str]:  # fmt: skip
        argv = list(self.classic)
        if kernel == "fast":
            argv = _swap(argv, "-kernel", str(self.forms["kernel"]))
        if initrd == "fast":
            argv = _swap(argv, "-initrd", str(self.forms["initrd"]))
        if cpu is not None:
            argv = _swap(argv, "-cpu", cpu)
        for what in drop:
            argv = _drop(argv, _DROPS[what])
        return argv

    def run_treeboot(self, row: str, form: str) -> float:
        vm = self.work / "home" / "vms" / "bench"
        log = vm / "console.log"
        log.unlink(missing_ok=True)
        (vm / "qemu.pid").unlink(missing_ok=True)
        started = time.monotonic()
        proc = subprocess.Popen(
            [*self.treeboot, "install", self.url, "--name", "bench", *self.args,
             "--boot-form", form, "--wait-for", PROMPT.decode(), "--wait", str(LIMIT)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        qemu = _QemuOf(vm / "qemu.pid", started)
        try:
            return wait_for_prompt(log, started, proc, qemu.poll)
        finally:
            if qemu.pid is not None:
                self.cpu.setdefault(row, []).append(_cpu_seconds(qemu.pid))
                self.qemu_start.setdefault(row, []).append(qemu.offset)
            proc.wait(60)

    def run_bare(self, row: str, argv: list[str]) -> float:
        log = self.work / "bare.log"
        log.unlink(missing_ok=True)
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return wait_for_prompt(log, started, proc)
        finally:
            self.peaks.setdefault(row, []).append(_peak_rss(proc.pid))
            self.cpu.setdefault(row, []).append(_cpu_seconds(proc.pid))
            stop(proc)

    def run_virt_install(self, index: int, libvirt: list[str]) -> float:
        name = f"treeboot-bench-{os.getpid()}-{index}"
        log = Path(f"/var/log/libvirt/qemu/{name}-serial.log")
        argv = [
            *libvirt, "virt-install", "--connect", "qemu:///system", "--virt-type", "qemu",
            "--name", name, "--memory", "1024", "--vcpus", "2", "--transient",
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
            virsh = [*libvirt, "virsh", "--connect", "qemu:///system"]
            subprocess.run([*virsh, "destroy", name], capture_output=True, check=False)
            log.unlink(missing_ok=True)
            log.with_name(f"{name}.log").unlink(missing_ok=True)  # libvirt's domain log


def _make_nvram(argv: list[str]) -> None:
    """A dry run names the VM's UEFI variable store but does not create it: copy the firmware's
    template (AAVMF_CODE.fd -> AAVMF_VARS.fd) there, for the bare rows (arm64)."""
    for arg in argv:
        opts = dict(o.split("=", 1) for o in arg.split(",") if "=" in o)
        if opts.get("if") == "pflash" and opts.get("unit") == "1":
            vars_file = Path(opts["file"])
            codes = [a for a in argv if "if=pflash" in a and "unit=0" in a]
            code = dict(o.split("=", 1) for o in codes[0].split(",") if "=" in o)["file"]
            if not vars_file.exists():
                vars_file.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(code.replace("CODE", "VARS"), vars_file)


# What each guest default is, as (option, value) predicates, to measure it by its absence.
_DROPS: dict[str, Callable[[str, str], bool]] = {
    "cpu": lambda o, v: o == "-cpu",
    "rng": lambda o, v: o == "-device" and v.startswith("virtio-rng"),
    "pvpanic": lambda o, v: o == "-device" and v.startswith("pvpanic"),
    "net": lambda o, v: o == "-netdev" or (o == "-device" and v.startswith("virtio-net")),
}


def _peak_rss(pid: int) -> int:
    """QEMU's peak resident memory (VmHWM, bytes): guest RAM touched plus QEMU itself."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (on a loaded machine, far steadier
    than wall-clock time: it counts the work, not the wait for a core)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rows(bench: Bench, arch: str) -> dict[str, Callable[[int], float]]:
    """Every contender of the table, by name (bench.variant builds the bare argvs)."""
    v = bench.variant
    bare: dict[str, list[str]] = {
        "bare classic": v(),
        "bare raw-initrd": v(initrd="fast"),
        FAST_ROW: v(kernel="fast", initrd="fast"),
        "bare fast, no -cpu (QEMU default model)": v("fast", "fast", drop=("cpu",)),
        "bare fast, no virtio-rng": v("fast", "fast", drop=("rng",)),
        "bare fast, no pvpanic": v("fast", "fast", drop=("pvpanic",)),
        "bare fast, no network": v("fast", "fast", drop=("net",)),
    }
    if arch == "amd64":
        bare["bare vmlinux + initrd.gz"] = v(kernel="fast")
        # treeboot's x86 default before rules/cpu_models.toml: what the cheaper model saves
        bare["bare fast, -cpu max"] = v("fast", "fast", cpu="max")
    else:
        bare["bare classic, -cpu cortex-a57"] = v(cpu="cortex-a57")
        bare["bare classic, -cpu max,pauth-impdef=on"] = v(cpu="max,pauth-impdef=on")
        bare["bare fast, -cpu max,pauth-impdef=on"] = v("fast", "fast", cpu="max,pauth-impdef=on")
    # What treeboot's own plumbing adds to the same guest: its serial chardev (a socket with a
    # logfile, which treeboot reads only with --console attach) and its QMP monitor.
    fast = v("fast", "fast")
    log = bench.work / "bare.log"
    at = next(i for i, a in enumerate(fast) if a.startswith("file,id=serial0"))
    sock = f"socket,id=serial0,path={bench.work}/c.sock,server=on,wait=off,logfile={log}"
    bare["bare fast + treeboot's serial socket"] = [*fast[:at], sock, *fast[at + 1 :]]
    bare["bare fast + treeboot's QMP monitor"] = [
        *fast, "-chardev", f"socket,id=qmp,path={bench.work}/q.sock,server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
    ]  # fmt: skip
    out: dict[str, Callable[[int], float]] = {
        "treeboot": lambda i: bench.run_treeboot("treeboot", "auto"),
        "treeboot --boot-form classic": lambda i: bench.run_treeboot(
            "treeboot --boot-form classic", "classic"
        ),
    }
    if arch != "amd64":  # on amd64, auto is fast already
        out["treeboot --boot-form fast"] = lambda i: bench.run_treeboot(
            "treeboot --boot-form fast", "fast"
        )
    for name, argv in bare.items():
        out[name] = functools.partial(lambda n, a, i: bench.run_bare(n, a), name, argv)
    return out


# -- libvirt daemons ----------------------------------------------------------------------


@contextlib.contextmanager
def private_libvirt(work: Path) -> Iterator[list[str]]:
    """virtlogd + libvirtd of our own in a private mount namespace, where /dev/kvm is masked
    (so libvirt uses TCG, like treeboot) and /run/libvirt is a fresh tmpfs (so its sockets do
    not meet another libvirtd on this machine). Yields the prefix that runs a command in that
    namespace; stops both daemons and the namespace holder by PID afterwards."""
    pids = {d: work / f"{d}.pid" for d in ("virtlogd", "libvirtd")}
    script = (
        "set -e; mkdir -p /run/libvirt; mount -t tmpfs tmpfs /run/libvirt;"
        # A mode-000 character device, not /dev/null: with /dev/null over /dev/kvm libvirt 9.0
        # throws its capabilities cache away and re-probes QEMU on every define (20 s and
        # more), which would be charged to virt-install (tests/_libvirt_helpers.py does this).
        f" mknod -m 000 {work}/kvm-masked c 1 3; mount --bind {work}/kvm-masked /dev/kvm;"
        f" virtlogd -d -p {pids['virtlogd']}; libvirtd -d -p {pids['libvirtd']};"
        " echo ready; exec sleep 86400"
    )
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script], stdout=subprocess.PIPE)  # fmt: skip
    prefix = ["nsenter", f"--mount=/proc/{holder.pid}/ns/mnt", "--"]
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != b"ready":
            raise RuntimeError("could not start libvirtd in a private mount namespace")
        for _ in range(300):  # libvirtd answers once its socket is up
            ok = subprocess.run([*prefix, "virsh", "--connect", "qemu:///system", "version"],
                                capture_output=True, check=False).returncode == 0  # fmt: skip
            if ok:
                break
            time.sleep(0.2)
        yield prefix
    finally:
        for daemon in ("libvirtd", "virtlogd"):
            with contextlib.suppress(OSError, ValueError):
                _terminate(int(pids[daemon].read_text().strip()), daemon)
        holder.terminate()
        holder.wait()


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


def summarize(
    times: dict[str, list[float]],
    peaks: dict[str, list[int]],
    qemu_start: dict[str, list[float]],
    auto_form: str,
) -> dict[str, Any]:
    """Min and median per row, and the ratios: treeboot (its default form: ``auto_form``)
    against the bare row of the same form and against virt-install, each form's treeboot row
    against its bare row, and each bare variant against bare fast."""
    stats: dict[str, dict[str, Any]] = {
        k: {"runs": [round(x, 2) for x in v], "min": min(v), "median": statistics.median(v),
            "peak_rss_mib": max(peaks.get(k, [0])) >> 20}
        for k, v in times.items() if v
    }  # fmt: skip
    for k, starts in qemu_start.items():  # treeboot's own start-up, and the boot after it
        if k in stats and len(starts) == len(times[k]):
            guest = [t - q for t, q in zip(times[k], starts, strict=True)]
            stats[k]["to_qemu_start"] = {"min": min(starts), "median": statistics.median(starts)}
            stats[k]["after_qemu_start"] = {"min": min(guest), "median": statistics.median(guest)}
    ratios: dict[str, float] = {}
    same_form = FAST_ROW if auto_form == "fast" else "bare classic"
    pairs = [("treeboot", "virt-install"), ("treeboot", same_form),
             ("treeboot --boot-form classic", "bare classic"),
             ("treeboot --boot-form fast", FAST_ROW), (FAST_ROW, "bare classic")]  # fmt: skip
    pairs += [(k, FAST_ROW) for k in stats if "bare fast," in k or "bare fast +" in k]
    for a, b in pairs:
        if a in stats and b in stats:
            for key in ("min", "median"):
                ratios[f"{a} / {b} ({key})"] = stats[a][key] / stats[b][key]
                if "after_qemu_start" in stats[a]:  # the guest's part alone
                    guest = stats[a]["after_qemu_start"][key]
                    ratios[f"{a} from QEMU start / {b} ({key})"] = guest / stats[b][key]
    return {"seconds": stats, "ratios": ratios}


def _wanted(name: str, rows: str, contenders: list[tuple[str, Any]]) -> bool:
    """--rows: each comma-separated item is a row's whole name, or else a substring of some."""
    names = {n for n, _ in contenders}
    return any(w == name if w in names else w in name for w in rows.split(","))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--arch", default="amd64", choices=["amd64", "arm64"])
    parser.add_argument("--skip-virt-install", action="store_true")
    parser.add_argument("--rows", help="comma-separated row names or substrings: only those rows")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--limit", type=float, default=LIMIT, help="seconds per boot")
    args = parser.parse_args()
    globals()["LIMIT"] = args.limit  # a loaded machine needs more time per boot
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="treeboot-bench-") as tmp:
        work = Path(tmp)
        tree = build_debian_tree(work / "mirror", args.arch)
        with serve(work / "mirror") as port, contextlib.ExitStack() as stack:
            url = f"http://127.0.0.1:{port}/{tree.relative_to(work / 'mirror')}/"
            bench = Bench(work, url, args.arch)
            print(f"cold derivation: {json.dumps(bench.derive_cost)}", file=sys.stderr)
            contenders = list(rows(bench, args.arch).items())
            if not args.skip_virt_install and args.arch == "amd64":
                prefix = stack.enter_context(private_libvirt(work))
                contenders.append(("virt-install", lambda i: bench.run_virt_install(i, prefix)))
            if args.rows:
                contenders = [(n, r) for n, r in contenders if _wanted(n, args.rows, contenders)]
            for i in range(args.runs):
                # A new order each round (seeded: runs are repeatable), so that no contender
                # always follows the same one: rotating a fixed order kept treeboot right after
                # virt-install, whose libvirtd was still tearing its domain down. And a pause
                # before each boot, so that each one starts on a settled machine.
                for name, run in random.Random(i).sample(contenders, len(contenders)):
                    time.sleep(SETTLE)
                    seconds = run(i)
                    times.setdefault(name, []).append(seconds)
                    cpu = bench.cpu.get(name, [0.0])[-1]
                    start = bench.qemu_start.get(name, [0.0])[-1]
                    print(f"run {i + 1}: {name:<45} {seconds:6.2f} s   qemu cpu {cpu:6.2f} s"
                          f"   qemu start {start:5.2f} s", file=sys.stderr)  # fmt: skip
        result = summarize(times, bench.peaks, bench.qemu_start, bench.auto_form)
        result["cold_derivation"] = bench.derive_cost
        result["qemu_cpu_seconds"] = bench.cpu
        result["arch"] = args.arch
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    for name, s in result["seconds"].items():
        print(f"{name:<45} min {s['min']:6.2f} s   median {s['median']:6.2f} s"
              f"   peak RSS {s['peak_rss_mib']} MiB")  # fmt: skip
        if "to_qemu_start" in s:
            q, g = s["to_qemu_start"], s["after_qemu_start"]
            print(f"  {'of which to QEMU start':<43} min {q['min']:6.2f} s   median"
                  f" {q['median']:6.2f} s\n  {'and from QEMU start':<43} min {g['min']:6.2f} s"
                  f"   median {g['median']:6.2f} s")  # fmt: skip
    for name, ratio in result["ratios"].items():
        print(f"{name:<80} {ratio:5.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
