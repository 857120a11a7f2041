"""Command line. The only place that prints errors and exits.

Subcommands live in ``_cli_*.py`` modules; each has ``register(subparsers)`` which adds its
parsers and sets ``func`` to a callable ``(argparse.Namespace) -> int``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

# httpx imports its own command-line client (click, rich, pygments: about 40 ms) whenever
# click happens to be installed. The treeboot command never runs it, and `install` would pay
# for it before QEMU starts; the library (imported by other programs) leaves httpx alone.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from treeboot._version import __version__  # noqa: E402
from treeboot.cli.output import install_notice_handler  # noqa: E402
from treeboot.errors import TreebootError, UsageError  # noqa: E402
from treeboot.model import redact_text  # noqa: E402

# Order is the order in `treeboot --help`.
COMMAND_MODULES = [
    "treeboot.cli.tree",  # identify, fetch, cache
    "treeboot.cli.vm",  # install, list, console, stop
    "treeboot.cli.inspect",  # inspect, explain
    "treeboot.cli.pxe",  # pxe
    "treeboot.cli.fleet",  # fleet
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 itself; we keep that code but print our own way.
        self.print_usage(sys.stderr)
        print(f"treeboot: error: {message}", file=sys.stderr)
        raise SystemExit(2)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like SIGINT's KeyboardInterrupt: the same prompt,
    clean stop (downloads cancelled, partial files kept, VMs stopped), then exit 143."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="treeboot",
        description="Network-install an OS from an install tree or ISO.",
    )
    parser.add_argument("--version", action="version", version=f"treeboot {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="treeboot: %(name)s: %(message)s",
    )
    install_notice_handler()
    signal.signal(signal.SIGTERM, _on_sigterm)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        rc: int = args.func(args)
        return rc
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print("treeboot: terminated" if terminated else "treeboot: interrupted", file=sys.stderr)
        # Exit at once: the collection at interpreter exit walks every object (the osinfo
        # index...) and took seconds on a loaded host; what is left is freed by the kernel.
        gc.freeze()
        return 143 if terminated else 130
    except TreebootError as e:
        if args.debug:
            raise
        print(f"treeboot: error: {redact_text(e.message)}", file=sys.stderr)
        if e.hint:
            print(f"treeboot: hint: {redact_text(e.hint)}", file=sys.stderr)
        return e.exit_code
    except Exception:
        if args.debug:
            raise
        import traceback

        print("treeboot: internal error (this is a bug; rerun with --debug):", file=sys.stderr)
        print(traceback.format_exc().strip().splitlines()[-1], file=sys.stderr)
        return 70


def usage_error(message: str, hint: str | None = None) -> UsageError:
    return UsageError(message, hint=hint)


if __name__ == "__main__":
    sys.exit(main())
