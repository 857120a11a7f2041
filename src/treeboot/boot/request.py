"""What an install was asked for: the options of ``treeboot install``, checked on creation.

It sits below both the orchestrator (:mod:`~treeboot.boot.install`) and its steps
(:mod:`~treeboot.boot.steps`), which read it and never import each other's upward.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from treeboot.boot.plan import ConsoleMode
from treeboot.boot.vm import check_name
from treeboot.errors import UsageError


@dataclass(frozen=True)
class NetworkRequest:
    """virt-install's ``--network``: ``user``, ``none``, ``network=NAME``, ``bridge=BR``;
    ``default`` (or no option) is the backend's default."""

    kind: str  # "default" | "user" | "none" | "network" | "bridge"
    source: str | None = None

    @classmethod
    def parse(cls, spec: str | None) -> NetworkRequest:
        if spec is None or spec == "default":
            return cls("default")
        if spec in ("user", "none"):
            return cls(spec)
        first = spec.split(",")[0]
        key, sep, value = first.partition("=")
        if sep and key in ("network", "bridge") and value:
            return cls(key, value)
        raise UsageError(
            f"--network {spec}: unsupported",
            hint="use --network user|none, or with --connect network=NAME|bridge=BR",
        )


@dataclass(frozen=True)
class InstallRequest:
    """What ``treeboot install`` was asked for; option names follow virt-install."""

    location: str
    name: str
    memory_mib: int | None = None
    vcpus: int | None = None
    cpu: str | None = None  # --cpu MODEL (None: the cheapest model for the release)
    disk: str | None = None  # --disk spec: "size=GiB", "path=FILE[,size=GiB]", "none"
    arch: str | None = None
    accel: str = "auto"
    extra_args: Sequence[str] = ()
    network: str | None = None  # None: "user" on QEMU, libvirt's "default" network on libvirt
    console: str = "log"
    console_log: Path | None = None
    wait: float | None = None
    wait_for: str | None = None
    no_reboot: bool = False
    initrd_inject: Sequence[Path] = ()
    unattended: str | None = None  # --unattended key=value,...
    unattended_file: Path | None = None
    trace_boot: bool = False
    boot_form: str = "auto"  # auto | classic | fast (treeboot.prepare.bootform.BootForm)
    kernel: str | None = None
    initrd: str | None = None
    insecure: bool = False
    require_signature: bool = False
    keyring: Path | None = None  # archive keyring for the signed chain (default: the distro's)
    force: bool = False
    progress: bool | None = None  # download bars: None = when stderr is a terminal (-q: False)
    boot: str | None = None  # --boot bios|uefi|direct (None: the arch's default firmware)
    connect: str | None = None  # libvirt URI (virt-install's --connect); None: treeboot's QEMU
    pool: str | None = None  # libvirt storage pool for the disk and uploads (None: ask)

    def __post_init__(self) -> None:
        check_name(self.name)
        net = NetworkRequest.parse(self.network)
        if self.connect is None and net.kind not in ("default", "user", "none"):
            raise UsageError(
                f"--network {self.network}: libvirt networks and bridges need --connect URI",
                hint="use --network user (restricted user-mode networking) or --network none",
            )
        if self.connect is None and self.pool is not None:
            raise UsageError("--pool is a libvirt storage pool: it needs --connect URI")
        try:
            ConsoleMode(self.console)
        except ValueError as e:
            raise UsageError(f"--console {self.console}: use log, attach or none") from e
        if self.boot_form not in ("auto", "classic", "fast"):
            raise UsageError(f"--boot-form {self.boot_form}: use auto, classic or fast")
        if self.boot is not None and self.boot not in ("bios", "uefi", "direct"):
            raise UsageError(f"--boot {self.boot}: use bios, uefi or direct")
        if self.wait is not None and self.wait < 0:
            raise UsageError("--wait must be 0 or more seconds (omit it to wait until the end)")
        if self.wait == 0 and self.wait_for is not None:
            raise UsageError(
                "--wait 0 runs the VM in the background, so nothing watches for --wait-for",
                hint="give --wait SECONDS (or omit --wait) to watch for the pattern",
            )
        if self.memory_mib is not None and self.memory_mib < 64:
            raise UsageError(f"--memory {self.memory_mib}: give MiB, at least 64")
        if self.vcpus is not None and self.vcpus < 1:
            raise UsageError(f"--vcpus {self.vcpus}: give at least 1")
        if self.wait_for is not None:
            try:
                re.compile(self.wait_for)
            except re.error as e:
                raise UsageError(f"--wait-for {self.wait_for!r}: {e}") from e
