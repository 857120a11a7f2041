"""The install pipeline: identify -> fetch -> prepare -> plan -> run.

    result = install(InstallRequest("http://127.0.0.1:8000/dists/bookworm/main/installer-amd64/",
                                    name="demo", disk="none", wait_for="Select a language"))
    result.exit_code, result.run.outcome, result.argv

Everything up to the plan is decided before QEMU starts, so every error about the location,
the artifacts, the command line or the disk comes before anything runs. ``dry_run`` stops
after the plan: nothing is created or started (the accelerator probe aside).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from treeboot.arch import Architecture, firmware_info
from treeboot.boot import steps as prep
from treeboot.boot.accel import AccelChoice, choose_accel
from treeboot.boot.backends.qemu import render_qemu_argv
from treeboot.boot.plan import BootPlan, ConsoleMode, NetworkPlan, Phase, VMPaths
from treeboot.boot.request import InstallRequest
from treeboot.boot.vm import (
    redact,
    save_plan,
    start_background_watcher,
    vm_paths,
    vm_status,
    write_status,
)
from treeboot.boot.watch import (
    Outcome,
    PhaseResult,
    RunResult,
    WatchOptions,
    run_vm,
    save_watch_options,
)
from treeboot.errors import BootError, UsageError
from treeboot.model import FetchResult, Identification
from treeboot.notices import notice
from treeboot.prepare.bootform import PreparedForms
from treeboot.prepare.cpumodel import choose_cpu

log = logging.getLogger("treeboot.install")

@dataclass
class InstallResult:
    plan: BootPlan
    argv: list[str]
    identification: Identification
    accel: AccelChoice
    dry_run: bool
    fetch: FetchResult | None = None
    run: RunResult | None = None
    trace_report: str | None = None
    secrets: list[str] = field(default_factory=list)
    boot_form: PreparedForms | None = None
    xml: str | None = None  # the install phase's libvirt domain XML (--connect)

    @property
    def exit_code(self) -> int:
        return 0 if self.run is None else self.run.exit_code

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.plan.name,
            "dry_run": self.dry_run,
            "identification": self.identification.to_json(),
            "accel": {"accel": str(self.accel.accel), "reason": self.accel.reason},
            "plan": self.plan.to_json(),
            "argv": self.argv,
            "command": shlex.join(self.argv),
        }
        if self.xml is not None:
            d["domain_xml"] = self.xml
        if self.fetch is not None:
            d["fetch"] = self.fetch.to_json()
        if self.boot_form is not None:
            d["boot_form"] = self.boot_form.to_json()
        if self.run is not None:
            d["result"] = self.run.to_json()
        if self.trace_report is not None:
            d["trace_report"] = self.trace_report
        text = redact(json.dumps(d), self.secrets)
        loaded: dict[str, Any] = json.loads(text)
        return loaded


def install(
    request: InstallRequest | str,
    *,
    dry_run: bool = False,
    out: IO[bytes] | None = None,
    **options: Any,
) -> InstallResult:
    """Run the whole pipeline; ``out`` receives the live console with ``console="attach"``.

    ``install("http://host/tree/", name="vm1", disk="size=10")`` is short for
    ``install(InstallRequest("http://host/tree/", name="vm1", disk="size=10"))``.
    """
    if isinstance(request, str):
        request = InstallRequest(request, **options)
    elif options:
        raise UsageError("pass options in the InstallRequest, or a location and keywords")
    paths = vm_paths(request.name, console_log=request.console_log)
    if not dry_run:
        _refuse_running(request.name, paths)
    if request.connect is not None:
        return _install_libvirt(request, dry_run=dry_run, out=out)
    ident, fetched, kernel, initrd = prep.identify_and_fetch(request)
    arch = prep.guest_arch(request, ident)
    if not dry_run:  # explain (a dry run) reports a foreign kernel as a warning instead
        prep.check_kernel_arch(kernel, arch)
    accel = choose_accel(request.accel, arch)
    if accel.accel != request.accel and request.accel == "auto":
        notice(f"using {accel.accel}: {accel.reason}")
    with contextlib.ExitStack() as stack:
        network, repo_url = prep.guest_network(request, ident, stack, dry_run=dry_run)
        if not dry_run:
            prep.check_guest_reachable(request, ident, network)
        payload = prep.unattended_payload(request, ident)
        cdrom = prep.install_medium(ident)
        cmdline = prep.kernel_cmdline(
            request, ident, arch, repo_url, payload, kernel,
            medium_attached=cdrom is not None, accel=accel.accel,
        )  # fmt: skip
        plan = _plan(request, ident, arch, accel, paths, kernel, initrd, cmdline, network)
        plan = _with_firmware(replace(plan, cdrom=cdrom), request, dry_run=dry_run)
        forms = prep.boot_form(request, plan, fetched, kernel, initrd, dry_run=dry_run)
        plan = replace(plan, kernel=forms.kernel, boot_form=_form_label(forms))
        initrd = forms.initrd
        try:
            plan = _prepare_files(plan, request, ident, payload, initrd, dry_run=dry_run)
            argv = render_qemu_argv(plan, Phase.INSTALL)
            result = InstallResult(
                plan, argv, ident, accel, dry_run, fetched, secrets=payload.secrets,
                boot_form=forms,
            )
            if dry_run:
                return result
            prediction = prep.predict_boot(plan)
        except BaseException:
            _remove(plan.temp_files)
            raise
        result.run = _run(plan, request, out, payload.secrets)
    if request.trace_boot:
        result.trace_report = prep.trace_report(plan, prediction)
    return result


def _with_firmware(plan: BootPlan, request: InstallRequest, *, dry_run: bool) -> BootPlan:
    """The firmware (and its NVRAM copy); without one that boots a disk, stop after phase 1."""
    firmware, nvram = prep.boot_firmware(request, plan.arch, plan.paths, dry_run=dry_run)
    plan = replace(plan, firmware=firmware, nvram=nvram)
    if not firmware_info(firmware).boots_disk and not plan.no_reboot:
        if not prep.DiskRequest.parse(request.disk).none:
            notice(f"{plan.arch} has no firmware that boots a disk: stopping after the installer")
        plan = replace(plan, no_reboot=True)
    return plan


def _install_libvirt(
    request: InstallRequest, *, dry_run: bool, out: IO[bytes] | None
) -> InstallResult:
    """The same pipeline with a libvirt hypervisor in the middle (see ``libvirt_run``)."""
    from treeboot.boot import libvirt_run
    from treeboot.boot.backends.libvirt_xml import render_domain_xml

    libvirt_run.check_request(request)
    paths = vm_paths(request.name, console_log=request.console_log)
    with contextlib.ExitStack() as stack:
        hv = stack.enter_context(libvirt_run.connect(request.connect or ""))
        ident, fetched, kernel, initrd = prep.identify_and_fetch(request)
        arch = prep.guest_arch(request, ident)
        accel = libvirt_run.choose_accel(hv, request, arch)
        network, repo_url = libvirt_run.guest_network(hv, request, ident, stack, dry_run=dry_run)
        if not dry_run:
            prep.check_guest_reachable(request, ident, network)
        payload = prep.unattended_payload(request, ident)
        cdrom = prep.install_medium(ident)
        cmdline = prep.kernel_cmdline(
            request, ident, arch, repo_url, payload, kernel,
            medium_attached=cdrom is not None, accel=accel.accel,
        )  # fmt: skip
        plan = _plan(request, ident, arch, accel, paths, kernel, initrd, cmdline, network)
        plan = replace(plan, cdrom=cdrom)
        try:
            initrd, temp_files = prep.inject(request, payload, initrd, paths, dry_run=dry_run)
            plan = replace(plan, initrd=initrd, temp_files=temp_files)
            seed = prep.seed_volume(payload, paths, dry_run=dry_run)
            if seed is not None:
                plan = replace(plan, seed_iso=seed, temp_files=[*plan.temp_files, seed])
            disk, _ = libvirt_run.disk_plan(hv, request, ident, arch, dry_run=dry_run)
            plan = replace(plan, disk=disk)
            xml = render_domain_xml(plan, Phase.INSTALL)
            result = InstallResult(
                plan, [], ident, accel, dry_run, fetched, secrets=payload.secrets, xml=xml
            )
            if dry_run:
                return result
            prep.predict_boot(plan)  # refuses an initrd that cannot fit, before uploading
            _start_state(plan, request, payload.secrets, connect=request.connect,
                         pool=request.pool)  # fmt: skip
            result.run = libvirt_run.run(hv, plan, request, out)
        finally:
            _remove(plan.temp_files)
    return result


def _start_state(
    plan: BootPlan,
    request: InstallRequest,
    secrets: list[str],
    *,
    connect: str | None = None,
    pool: str | None = None,
) -> None:
    paths = plan.paths
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    paths.console_log.parent.mkdir(parents=True, exist_ok=True)
    paths.console_log.write_bytes(b"")  # a new install starts a new log
    opts = WatchOptions(ConsoleMode(request.console), request.wait, request.wait_for)
    save_plan(plan, secrets)
    save_watch_options(paths.state_dir, opts)
    write_status(
        paths, state="starting", phase=str(Phase.INSTALL), watcher_pid=os.getpid(),
        connect=connect, pool=pool, outcome=None,
    )  # fmt: skip


def _prepare_files(
    plan: BootPlan,
    request: InstallRequest,
    ident: Identification,
    payload: prep.Payload,
    initrd: Path,
    *,
    dry_run: bool,
) -> BootPlan:
    """Write what the boot needs (injected initrd, seed volume, disk), unless ``dry_run``."""
    paths = plan.paths
    initrd, temp_files = prep.inject(request, payload, initrd, paths, dry_run=dry_run)
    plan = replace(plan, initrd=initrd, temp_files=temp_files)
    seed = prep.seed_volume(payload, paths, dry_run=dry_run)
    if seed is not None:
        plan = replace(plan, seed_iso=seed, temp_files=[*plan.temp_files, seed])
    disk = prep.disk_plan(request, ident, plan.arch, paths, dry_run=dry_run)
    return replace(plan, disk=disk)


def _form_label(forms: PreparedForms) -> str:
    c = forms.choice
    used = [f"{role} {forms.derived[role].kind}" for role in ("kernel", "initrd")
            if role in forms.derived and forms.derived[role].error is None]  # fmt: skip
    if forms.fallbacks:
        used.append("original for " + "; ".join(forms.fallbacks))
    return f"{c.form}: " + (", ".join(used) if used else "original kernel and initrd")


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _refuse_running(name: str, paths: VMPaths) -> None:
    if paths.state_dir.is_dir() and vm_status(name).state == "running":
        raise BootError(
            f"VM {name!r} is already running",
            hint=f"stop it with `treeboot stop {name}` or pick another --name",
        )


def _plan(
    request: InstallRequest,
    ident: Identification,
    arch: Architecture,
    accel: AccelChoice,
    paths: VMPaths,
    kernel: Path,
    initrd: Path,
    cmdline: list[str],
    network: NetworkPlan,
) -> BootPlan:
    memory, vcpus = prep.resources(request, ident, arch)
    cpu = choose_cpu(arch, str(accel.accel), ident.os, request.cpu)
    if request.trace_boot:
        paths = replace(paths, trace_file=paths.state_dir / "fw_cfg.trace")
    return BootPlan(
        name=request.name,
        arch=arch,
        accel=str(accel.accel),
        memory_mib=memory,
        vcpus=vcpus,
        cpu=cpu.model,
        cpu_reason=cpu.reason,
        paths=paths,
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        disk=None,
        network=network,
        no_reboot=request.no_reboot,
        trace_boot=request.trace_boot,
        location=ident.location,
        os=ident.os,
        installer=ident.installer,
    )


def _run(
    plan: BootPlan, request: InstallRequest, out: IO[bytes] | None, secrets: list[str]
) -> RunResult:
    paths = plan.paths
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    paths.console_log.parent.mkdir(parents=True, exist_ok=True)
    paths.console_log.write_bytes(b"")  # a new install starts a new log
    if paths.trace_file is not None:
        paths.trace_file.unlink(missing_ok=True)
    opts = WatchOptions(ConsoleMode(request.console), request.wait, request.wait_for)
    save_plan(plan, secrets)
    save_watch_options(paths.state_dir, opts)
    write_status(paths, state="starting", phase=str(Phase.INSTALL), watcher_pid=os.getpid())
    if request.wait == 0:
        start_background_watcher(paths.state_dir, phase=str(Phase.INSTALL))
        phase = PhaseResult(Phase.INSTALL, Outcome.BACKGROUND, "started", [])
        return RunResult(Outcome.BACKGROUND, [phase])
    return run_vm(plan, opts, out=out)


def describe(result: InstallResult) -> str:
    """The human-readable plan (``--dry-run``)."""
    p = result.plan
    ident = result.identification
    lines = [
        f"name:      {p.name}",
        f"location:  {ident.location}",
        f"os:        {ident.name or ident.os or 'unknown'} ({ident.installer or 'installer?'})",
        f"arch:      {p.arch}   accel: {p.accel} ({result.accel.reason})",
        f"machine:   {p.machine or p.arch.machine()}, {p.vcpus} vCPUs, {p.memory_mib} MiB",
        f"cpu:       {p.cpu or p.arch.cpu(p.accel) or 'QEMU default'} ({p.cpu_reason})",
        f"boot form: {p.boot_form} ({result.boot_form.choice.reason if result.boot_form else ''})",
        f"hand-off:  {result.boot_form.choice.handoff if result.boot_form else ''}",
        f"kernel:    {p.kernel}",
        f"initrd:    {p.initrd}",
        f"cmdline:   {' '.join(p.cmdline)}",
        f"disk:      {_describe_disk(p)}",
        f"network:   {p.network.mode}",
        f"console:   {p.paths.console_log}",
        f"state dir: {p.paths.state_dir}",
    ]
    return redact("\n".join(lines), result.secrets)


def _describe_disk(plan: BootPlan) -> str:
    if plan.disk is None:
        return "none"
    d = plan.disk
    what = f"create {d.size_gib:g} GiB" if d.create else "use existing"
    return f"{d.path} ({d.format}, {what})"
