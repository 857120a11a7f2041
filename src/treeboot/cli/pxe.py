"""``treeboot pxe``: serve installers to real machines over the network (and ``--status``)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from treeboot.cli.output import emit_json, notice


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pxe",
        help="network-boot real machines into the installer (proxy-DHCP, TFTP, HTTP)",
        description="Identify and fetch LOCATION like install, then serve it over the network:"
        " dnsmasq answers PXE clients on --interface (proxy-DHCP: the network's own DHCP server"
        " keeps giving addresses), treeboot serves iPXE/GRUB scripts, kernel and initrd over"
        " HTTP. Runs in the foreground, one log line per request; Ctrl-C stops it.",
    )
    add = p.add_argument
    add("locations", nargs="*", metavar="LOCATION", help="install tree or ISO (several: --menu)")
    add("--listen", metavar="ADDR:PORT", help="HTTP address (default: --interface's, port 8067)")
    add("--interface", metavar="IF", help="answer PXE (proxy-DHCP) and TFTP on IF only")
    add("--extra-args", action="append", default=[], metavar="ARGS", help="more kernel arguments")
    add("--unattended", nargs="?", const="", metavar="KEY=VALUE,...",
        help="generate an unattended install (options as for install)")
    add("--initrd-inject", action="append", default=[], type=Path, metavar="FILE",
        help="add FILE to the initrd's root (repeatable)")
    add("--machine", action="append", default=[], metavar="MAC[,KEY=VALUE...]",
        help="per-machine settings: loader=ipxe|shim, max-boots=N, extra-args=..., and"
        " unattended options (hostname=, profile=, ...)")
    add("--machines", action="append", default=[], type=Path, metavar="FILE",
        help='per-machine settings as TOML ([machines."MAC"] tables)')
    add("--menu", action="store_true", help="offer every LOCATION in an iPXE menu")
    add("--max-boots", type=int, default=1, metavar="N",
        help="boot a machine into the installer at most N times without a callback (default 1)")
    add("--uefi-loader", choices=["snponly.efi", "ipxe.efi"], default="snponly.efi",
        help="the iPXE build UEFI clients get over TFTP")
    add("--dnsmasq-conf", type=Path, metavar="FILE",
        help="write the dnsmasq config to FILE for a dnsmasq you run; start no DHCP")
    add("--state-dir", type=Path, metavar="DIR", help="boot-once state dir")
    add("--status", action="store_true", help="list each machine's state and exit")
    add("--arch", help="architecture (default: the tree's)")
    add("--insecure", action="store_true", help="do not verify TLS certificates")
    add("--require-signature", action="store_true",
        help="refuse artifacts not covered by a verified signature")
    add("--keyring", type=Path, metavar="FILE", help="OpenPGP keyring for the signed chain")
    add("--json", action="store_true", help="JSON lines (access log) / JSON (--status)")
    p.set_defaults(func=cmd_pxe)  # fmt: skip


def cmd_pxe(args: argparse.Namespace) -> int:
    from treeboot.boot.backends.pxe.dnsmasq import UefiLoader
    from treeboot.boot.netboot import NetbootRequest, start_netboot
    from treeboot.cli.tree import warn_insecure

    if args.status:
        return _status(args)
    req = NetbootRequest(
        locations=args.locations,
        listen=args.listen,
        interface=args.interface,
        extra_args=args.extra_args,
        unattended=args.unattended,
        initrd_inject=args.initrd_inject,
        machines=args.machine,
        machines_files=args.machines,
        menu=args.menu,
        max_boots=args.max_boots,
        uefi_loader=UefiLoader(args.uefi_loader),
        dnsmasq_conf=args.dnsmasq_conf.resolve() if args.dnsmasq_conf else None,
        state_dir=args.state_dir,
        arch=args.arch,
        insecure=args.insecure,
        require_signature=args.require_signature,
        keyring=args.keyring.resolve() if args.keyring else None,
    )
    warn_insecure(args)

    def access(ip: str, rec: Any) -> None:
        if args.json:
            print(json.dumps({"client": ip, **rec.__dict__}), flush=True)
        else:
            note = f" ({rec.note})" if rec.note else ""
            print(f"{ip} {rec.method} {rec.path} {rec.status} {rec.bytes} {rec.ms:.0f}ms{note}",
                  flush=True)  # fmt: skip

    def dnsmasq_line(line: str) -> None:
        print(f"dnsmasq: {line}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _interrupt)
    with start_netboot(req, on_access=access, on_dnsmasq_line=dnsmasq_line) as svc:
        if args.dnsmasq_conf is not None:
            notice(f"dnsmasq config in {svc.dnsmasq_conf} (no DHCP started by treeboot)")
        notice(f"serving on {svc.http_url} (Ctrl-C stops)")
        try:
            while True:
                svc.check()
                time.sleep(0.5)
        except KeyboardInterrupt:
            notice("stopping")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _status(args: argparse.Namespace) -> int:
    from treeboot.boot.backends.pxe.state import load_status
    from treeboot.boot.netboot import status_path

    machines = load_status(status_path(args.state_dir))
    if args.json:
        emit_json({"machines": machines})
        return 0
    if not machines:
        print("no machines yet")
    for mac, rec in sorted(machines.items()):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.get("updated", 0)))
        print(f"{mac}  {rec.get('state')!s:17}  boots={rec.get('boots', 0)}  "
              f"ip={rec.get('ip') or '-'}  {when}")  # fmt: skip
    return 0
