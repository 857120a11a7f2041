"""``treeboot inspect FILE``: what a kernel image or initrd is (``explain`` joins it here)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from treeboot.artifacts.report import format_initrd, format_kernel
from treeboot.cli.output import emit_json


def register(sub: Any) -> None:
    _register_inspect(sub)
    _register_explain(sub)


def _register_inspect(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="show what a kernel image or initrd is (headers, compression, cpio segments)",
        description="Read a boot artifact: x86 bzImage, arm64/RISC-V Image (also gzip'd),"
        " EFI zboot, PE/COFF EFI binary, ELF kernel, or initrd (segments, compression,"
        " cpio entries).",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="kernel image or initrd")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--max-decompressed",
        type=int,
        default=None,
        metavar="BYTES",
        help="stop decompressing an initrd after BYTES (entry counts then unknown)",
    )
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from treeboot.artifacts.kernel import inspect_file

    result = inspect_file(args.file, max_decompressed=args.max_decompressed)
    data = result.to_json()
    if args.json:
        emit_json(data)
    elif data["format"] == "initrd":
        print(format_initrd(data))
    else:
        print(format_kernel(data))
    return 0


# -- `treeboot explain` (treeboot/explain.py) ------------------------------------------------


def _register_explain(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="show the boot chain: what is fetched, fw_cfg items, who loads what where",
        description="Explain how LOCATION's installer (or a --kernel/--initrd pair) will boot:"
        " fetched artifacts and their verification, kernel header, command line, the exact"
        " QEMU command, fw_cfg items, memory placement and the firmware hand-off.",
    )
    p.add_argument("location", nargs="?", help="install tree URL, directory or ISO")
    p.add_argument("--kernel", help="kernel: path in the tree, or a local ./file or /file")
    p.add_argument("--initrd", help="initrd: path in the tree, or a local ./file or /file")
    p.add_argument("--arch", help="guest architecture (default: the tree's or the kernel's)")
    p.add_argument("--backend", default="qemu",
                   help="qemu or libvirt (install --connect); pxe: not yet")
    p.add_argument("--memory", type=int, metavar="MiB", help="RAM (default: as install)")
    p.add_argument("--machine", help="QEMU machine type (default: as install: q35, virt, ...)")
    p.add_argument("--boot", choices=["default", "bios", "uefi", "direct"], default="default",
                   help="firmware as for install --boot (default: the arch's own)")  # fmt: skip
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    p.add_argument("--extra-args", action="append", default=[], metavar="ARGS",
                   help="more kernel arguments (repeatable)")  # fmt: skip
    p.add_argument("--network", default="user", metavar="user|none", help="as install")
    p.add_argument("--boot-form", choices=["auto", "classic", "fast"], default="auto",
                   help="as install: which form of kernel and initrd is booted")  # fmt: skip
    p.add_argument("--no-fetch", action="store_true",
                   help="do not download kernel/initrd (header facts stay unknown)")  # fmt: skip
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--require-signature", action="store_true",
                   help="refuse artifacts that no signed chain vouches for")  # fmt: skip
    p.add_argument("--keyring", type=Path, metavar="FILE",
                   help="OpenPGP keyring for the signed chain (default: the distro's)")  # fmt: skip
    p.add_argument("--svg", type=Path, metavar="FILE", help="also draw the boot chain as SVG")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    from treeboot.boot.steps import split_extra_args
    from treeboot.cli.output import notice
    from treeboot.cli.tree import warn_insecure
    from treeboot.errors import UsageError
    from treeboot.explain.chain import ExplainRequest, explain
    from treeboot.explain.svg import render_svg
    from treeboot.explain.text import format_explanation

    request = ExplainRequest(
        location=args.location, kernel=args.kernel, initrd=args.initrd, arch=args.arch,
        backend=args.backend, memory_mib=args.memory, machine=args.machine, boot=args.boot,
        accel=args.accel, extra_args=split_extra_args(args.extra_args), network=args.network,
        fetch=not args.no_fetch, insecure=args.insecure,
        require_signature=args.require_signature,
        keyring=args.keyring.resolve() if args.keyring else None, boot_form=args.boot_form,
    )  # fmt: skip
    warn_insecure(args)
    ex = explain(request)
    if args.svg is not None:
        try:
            args.svg.write_text(render_svg(ex), encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--svg {args.svg}: cannot write it: {e.strerror}") from e
        notice(f"boot chain drawn in {args.svg}")
    if args.json:
        emit_json(ex.to_json())
    else:
        print(format_explanation(ex))
    return 0
