"""``treeboot install``, ``list``, ``console`` and ``stop``. Option names follow virt-install."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treeboot.cli.output import emit_json, notice

if TYPE_CHECKING:  # imported when the command runs: `treeboot --help` stays light
    from treeboot.boot.request import InstallRequest


def register(sub: Any) -> None:
    _register_install(sub)
    p = sub.add_parser("list", help="list VMs and their state")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--connect", "-c", metavar="URI",
                   help="also list treeboot's domains on this libvirt hypervisor")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("console", help="show (and follow) a VM's serial console log")
    p.add_argument("name")
    p.add_argument("--no-follow", action="store_true", help="print the log and return")
    p.set_defaults(func=cmd_console)
    p = sub.add_parser("stop", help="stop a running VM (its disk and logs are kept)")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stop)


def _register_install(sub: Any) -> None:
    p = sub.add_parser(
        "install",
        help="install an OS from a tree or ISO into a QEMU VM",
        description="Identify LOCATION, fetch its kernel and initrd, boot the installer on QEMU"
        " and watch it until it ends; then boot the installed disk.",
    )
    p.add_argument("location", help="install tree URL (http/https/ftp), directory or ISO")
    p.add_argument("--name", "-n", required=True, help="VM name (its state directory)")
    _guest_options(p.add_argument_group("guest"))
    _boot_options(p.add_argument_group("boot"))
    _run_options(p.add_argument_group("network, console and waiting"))
    _trust_options(p.add_argument_group("verification"))
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and the exact QEMU command; start nothing")  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_install)


def _guest_options(g: Any) -> None:
    add = g.add_argument
    add("--memory", type=int, metavar="MiB", help="RAM (default: osinfo-db's)")
    add("--vcpus", type=int, metavar="N", help="virtual CPUs (default: 2)")
    add("--cpu", metavar="MODEL",
        help="QEMU CPU model (default: host under KVM; under TCG the cheapest model"
        " the release needs, see rules/cpu_models.toml)")  # fmt: skip
    add("--disk", metavar="SPEC",
        help="size=GiB | path=FILE[,size=GiB][,format=raw|qcow2] | none (an existing"
        " FILE is raw unless format= says otherwise: formats are never probed)")
    add("--force", action="store_true", help="replace an existing disk image")
    add("--arch", help="guest architecture (default: the tree's)")
    add("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    add("--connect", "-c", metavar="URI",
        help="install on a libvirt hypervisor (qemu:///system, qemu+ssh://host/system, ...)")
    add("--pool", metavar="NAME",
        help="with --connect: storage pool for the disk and uploads (default: ask libvirt)")


def _boot_options(g: Any) -> None:
    add = g.add_argument
    add("--boot", choices=["bios", "uefi", "direct"],
        help="firmware, where the arch has several (direct: none, QEMU starts the"
        " kernel); default: BIOS on x86, UEFI on arm")  # fmt: skip
    add("--boot-form", choices=["auto", "classic", "fast"], default="auto",
        help="classic: kernel and initrd as shipped; fast: forms derived on the host (vmlinux"
        " via PVH, inflated initrd); auto: per arch/firmware/accel (rules/boot_forms.toml)")
    add("--kernel", help="kernel: path in the tree, or a local ./file or /file")
    add("--initrd", help="initrd: path in the tree, or a local ./file or /file")
    add("--extra-args", action="append", default=[], metavar="ARGS",
        help="more kernel arguments (repeatable)")
    add("--initrd-inject", action="append", default=[], type=Path, metavar="FILE",
        help="add FILE to the initrd's root (repeatable)")
    add("--unattended", nargs="?", const="", metavar="KEY=VALUE,...",
        help="generate an unattended install: profile=minimal|desktop,admin-user=,"
        "user-password-file=,admin-password-file=,ssh-key=,timezone=,locale=,hostname=")
    add("--unattended-file", type=Path, metavar="FILE",
        help="your own kickstart/preseed/autoyast/autoinstall file")
    add("--trace-boot", action="store_true",
        help="trace fw_cfg and compare what QEMU loaded to the prediction")


def _run_options(g: Any) -> None:
    add = g.add_argument
    add("--network", metavar="user|none|network=NAME|bridge=BR",
        help="user (default without --connect): restricted user-mode network that reaches"
        " only the tree; with --connect: network=NAME (default: libvirt's 'default'),"
        " bridge=BR or none")
    add("--console", choices=["log", "attach", "none"], default="log",
        help="attach: also show the serial console live here")
    add("--console-log", type=Path, metavar="FILE",
        help="serial log (default: in the VM's state directory)")
    add("--wait", type=float, metavar="SECONDS",
        help="time limit (default: until the install ends); 0: run in the background")
    add("--wait-for", metavar="REGEX",
        help="stop the VM and succeed when REGEX appears on the serial console")
    add("--no-reboot", action="store_true",
        help="stop after the installer ends (do not boot the installed disk)")


def _trust_options(g: Any) -> None:
    add = g.add_argument
    add("--insecure", action="store_true", help="do not verify TLS certificates")
    add("--require-signature", action="store_true",
        help="refuse artifacts not covered by a verified signature")
    add("--keyring", type=Path, metavar="FILE",
        help="OpenPGP keyring for the signed chain (default: the distribution's archive keyring)")


def cmd_install(args: argparse.Namespace) -> int:
    from treeboot.boot.backends.qemu import format_argv
    from treeboot.boot.install import describe, install
    from treeboot.cli.tree import warn_insecure

    request = _install_request(args)
    warn_insecure(args)
    out = None if args.json else sys.stdout.buffer
    try:
        result = install(request, dry_run=args.dry_run, out=out)
    finally:
        if args.console == "attach" and out is not None and sys.stdout.isatty():
            out.write(b"\x1b[0m\x1b(B\r\n")  # the guest may leave colours or line drawing on
            out.flush()
    if args.json:
        emit_json(result.to_json())
    elif args.dry_run:
        print(describe(result))
        if result.xml is not None:
            print("libvirt domain XML (install phase):")
            print(result.xml, end="")
        else:
            print("QEMU command:")
            print(format_argv(result.argv))
    else:
        _report(result)
    if result.trace_report and not args.json:
        print(result.trace_report)
    return result.exit_code


def _install_request(args: argparse.Namespace) -> InstallRequest:
    """The InstallRequest the command line describes."""
    from treeboot.boot.request import InstallRequest
    from treeboot.boot.steps import split_extra_args

    return InstallRequest(
        location=args.location,
        name=args.name,
        memory_mib=args.memory,
        vcpus=args.vcpus,
        cpu=args.cpu,
        disk=args.disk,
        arch=args.arch,
        accel=args.accel,
        boot=args.boot,
        extra_args=split_extra_args(args.extra_args),
        network=args.network,
        console=args.console,
        console_log=args.console_log.resolve() if args.console_log else None,
        wait=args.wait,
        wait_for=args.wait_for,
        no_reboot=args.no_reboot,
        initrd_inject=args.initrd_inject,
        unattended=args.unattended,
        unattended_file=args.unattended_file,
        trace_boot=args.trace_boot,
        boot_form=args.boot_form,
        kernel=args.kernel,
        initrd=args.initrd,
        insecure=args.insecure,
        require_signature=args.require_signature,
        keyring=args.keyring.resolve() if args.keyring else None,
        force=args.force,
        progress=False if args.quiet else None,
        connect=args.connect,
        pool=args.pool,
    )


def _report(result: Any) -> None:
    run = result.run
    name = result.plan.name
    for phase in run.phases:
        notice(f"{phase.phase}: {phase.outcome} ({phase.detail})")
    if str(run.outcome) == "running-in-background":
        notice(f"VM {name} runs in the background; see `treeboot console {name}`")
        notice(f"stop it with `treeboot stop {name}`")
    notice(f"serial console log: {result.plan.paths.console_log}")


def cmd_list(args: argparse.Namespace) -> int:
    from treeboot.boot.vm import list_vms

    vms = list_vms()
    domains = _libvirt_domains(args.connect, {vm.name for vm in vms}) if args.connect else []
    if args.json:
        emit_json([vm.to_json() for vm in vms] + domains)
        return 0
    if not vms and not domains:
        notice("no VMs")
        return 0
    print(f"{'NAME':<20} {'STATE':<8} {'PHASE':<10} {'OUTCOME':<22} OS")
    for vm in vms:
        outcome = vm.outcome or ""
        print(f"{vm.name:<20} {vm.state:<8} {vm.phase or '':<10} {outcome:<22} {vm.os or ''}")
    for d in domains:
        print(f"{d['name']:<20} {d['state']:<8} {d['phase'] or '':<10} {'(libvirt)':<22}"
              f" {d['os'] or ''}")
    return 0


def _libvirt_domains(uri: str, known: set[str]) -> list[dict[str, Any]]:
    """treeboot's domains on ``uri`` (found by their metadata) that have no local state."""
    from treeboot.boot.backends.libvirt import Hypervisor, treeboot_domains

    hv = Hypervisor(uri)
    try:
        return [
            {"name": d.name, "state": "running" if d.running else "stopped", "phase": d.phase,
             "os": d.os, "location": d.location, "connect": uri}
            for d in treeboot_domains(hv) if d.name not in known
        ]  # fmt: skip
    finally:
        hv.close()


def cmd_console(args: argparse.Namespace) -> int:
    from treeboot.boot.vm import follow_console

    try:
        for _ in follow_console(args.name, sys.stdout.buffer, follow=not args.no_follow):
            pass
    except KeyboardInterrupt:
        return 0  # leaving the console does not stop the VM
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from treeboot.boot.vm import stop_vm, vm_status

    before = vm_status(args.name)
    after = stop_vm(args.name)
    if args.json:
        emit_json({"name": args.name, "was": before.state, "state": after.state})
    elif before.state == "running":
        notice(f"stopped {args.name}")
    else:
        notice(f"{args.name} was not running")
    return 0 if after.state == "stopped" else 1
