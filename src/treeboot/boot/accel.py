"""Choose the accelerator: KVM only when a tiny canary guest proves that it really works.

Some hosts expose ``/dev/kvm`` but KVM guests hang silently (nested virtualisation that
cannot enter protected mode, for one). Instead of trusting the device node, ``auto`` boots a
canary under KVM for at most a few seconds: a 64 KiB firmware image that goes from real mode
to protected mode to long mode, printing ``R``, ``P``, ``L`` on the serial port at each step,
and then writes ``K`` to ``isa-debug-exit`` so QEMU exits with status ``(0x4B << 1) | 1``.
The verdict is cached for a short time, keyed by the host kernel, the QEMU binary and
``/dev/kvm``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from treeboot.arch import Architecture
from treeboot.boot._qemuproc import popen_tied, stop_process
from treeboot.errors import BootError, UsageError
from treeboot.run import find_binary

KVM_DEVICE = Path("/dev/kvm")
PROBE_TIMEOUT = 3.0
CACHE_TTL = 15 * 60.0

# canary.S, assembled with `as --64` and linked with `ld -Ttext=0 --oformat binary`; it runs
# from the firmware mapping at 0xF0000:
#   .code16: cli; mov $0x3f8,%dx; mov $'R',%al; out %al,%dx; lgdtl %cs:gdt_desc
#            set CR0.PE; ljmpl $0x08,$(0xF0000+pm32)
#   .code32: load data segments; out 'P'; zero 0x1000..0x4000; identity-map 2 MiB with
#            PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 (PS); CR3; CR4.PAE; EFER.LME; CR0.PG;
#            ljmp $0x18,$(0xF0000+lm64)
#   .code64: out 'L' to 0x3f8; mov $'K',%al; out %al,$0xf4; hlt loop
#   gdt: null, code32, data, code64; gdt_desc: .word 31; .long 0xF0000+gdt
_CANARY_CODE = bytes.fromhex(
    "fabaf803b052ee2e660f0116b8000f20c06683c8010f22c066ea20000f00080066b810008ed88ec08ed0"
    "b050eebf0010000031c0b9000c0000f3abc7050010000003200000c7050020000003300000c705003000"
    "0083000000b8001000000f22d80f20e083c8200f22e0b9800000c00f320d000100000f300f20c00d0000"
    "00800f22c0ea8a000f00180066baf803b04ceeb04be6f4f4ebfd0000000000000000ffff0000009acf00"
    "ffff00000092cf00ffff0000009aaf001f0098000f00"
)
_RESET_VECTOR = bytes([0xEA, 0x00, 0x00, 0x00, 0xF0])  # ljmp $0xf000,$0x0000
_CANARY_EXIT_STATUS = (ord("K") << 1) | 1
_CANARY_STAGES = {"": "before real mode", "R": "real mode", "RP": "protected mode"}


class Accel(StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel  # KVM or TCG, never AUTO
    reason: str
    cached: bool = False
    canary_pid: int | None = None  # the canary QEMU, already reaped


def canary_image() -> bytes:
    """The 64 KiB firmware image described in the module docstring."""
    image = bytearray(b"\xf4" * 0x10000)  # hlt everywhere else
    image[: len(_CANARY_CODE)] = _CANARY_CODE
    image[0xFFF0 : 0xFFF0 + len(_RESET_VECTOR)] = _RESET_VECTOR
    return bytes(image)


def canary_argv(qemu: str, accel: Accel, bios: Path, serial: Path) -> list[str]:
    return [
        qemu,
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-machine", "pc",
        "-accel", str(accel),
        "-m", "16",
        "-bios", str(bios),
        "-serial", f"file:{serial}",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]  # fmt: skip


def run_canary(accel: Accel, *, timeout: float = PROBE_TIMEOUT) -> AccelChoice:
    """Boot the canary under ``accel``; never waits longer than ``timeout`` seconds."""
    qemu = find_binary("qemu-system-x86_64")
    with tempfile.TemporaryDirectory(prefix="treeboot-canary-") as tmp:
        bios = Path(tmp, "canary.bin")
        serial = Path(tmp, "serial.out")
        bios.write_bytes(canary_image())
        proc = popen_tied(canary_argv(qemu, accel, bios, serial))
        try:
            status: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            stop_process(proc, grace=1.0)
        out = serial.read_bytes().decode("ascii", errors="replace") if serial.exists() else ""
    if status == _CANARY_EXIT_STATUS and out == "RPL":
        return AccelChoice(Accel(accel), f"{accel} canary guest reached long mode", False, proc.pid)
    stage = _CANARY_STAGES.get(out, f"output {out!r}")
    what = "hung" if status is None else f"exited with status {status}"
    return AccelChoice(
        Accel.TCG, f"{accel} canary guest {what} after {stage}", canary_pid=proc.pid
    )


def choose_accel(
    requested: str | Accel,
    arch: Architecture,
    *,
    use_cache: bool = True,
    timeout: float = PROBE_TIMEOUT,
) -> AccelChoice:
    """Resolve ``auto``/``kvm``/``tcg`` to the accelerator to use for a guest of ``arch``."""
    try:
        wanted = Accel(requested)
    except ValueError as e:
        raise UsageError(f"unknown accelerator {requested!r}", hint="use auto, kvm or tcg") from e
    if wanted is Accel.TCG:
        return AccelChoice(Accel.TCG, "requested")
    host_problem = _kvm_host_problem(arch)
    if wanted is Accel.KVM:
        if host_problem:
            raise BootError(
                f"--accel kvm: {host_problem}",
                hint="use --accel tcg (slower) or --accel auto to fall back by itself",
            )
        return AccelChoice(Accel.KVM, "requested")
    if host_problem:
        return AccelChoice(Accel.TCG, host_problem)
    if Architecture.native() not in (Architecture.X86_64, Architecture.I686):
        return AccelChoice(Accel.KVM, "/dev/kvm is usable (no canary for this host)")
    return _cached_probe(timeout) if use_cache else run_canary(Accel.KVM, timeout=timeout)


def _kvm_host_problem(arch: Architecture) -> str | None:
    native = Architecture.native()
    if not arch.can_use_kvm_on(native):
        return f"{arch} guest on a {native} host needs emulation"
    if not KVM_DEVICE.exists():
        return f"{KVM_DEVICE} does not exist"
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        return f"{KVM_DEVICE} is not readable and writable by this user"
    return None


def _cache_file() -> Path:
    from treeboot.store.cache import default_root

    return default_root() / "accel-probe.json"


def _host_key() -> str:
    qemu = Path(find_binary("qemu-system-x86_64"))
    st = qemu.stat()
    kvm = KVM_DEVICE.stat()
    uname = platform.uname()
    parts = [uname.release, uname.version, str(qemu), str(st.st_size), str(st.st_mtime_ns),
             str(kvm.st_rdev)]  # fmt: skip
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _cached_probe(timeout: float) -> AccelChoice:
    path = _cache_file()
    key = _host_key()
    try:
        entry = json.loads(path.read_text())
        if entry["key"] == key and time.time() - float(entry["time"]) < CACHE_TTL:
            return AccelChoice(Accel(entry["accel"]), str(entry["reason"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    choice = run_canary(Accel.KVM, timeout=timeout)
    entry = {"key": key, "time": time.time(), "accel": str(choice.accel), "reason": choice.reason}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)
    except OSError:
        pass  # the cache is an optimisation only
    return choice
