"""``treeboot identify``, ``treeboot fetch`` and ``treeboot cache {list,prune}``."""

from __future__ import annotations

import argparse
import datetime
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treeboot.cli.output import emit_json, notice
from treeboot.errors import DetectionError, UsageError

if TYPE_CHECKING:
    from treeboot.model import FetchResult, Identification
    from treeboot.store.cache import Cache

PRUNE_GRACE = 60.0  # seconds


def register(sub: Any) -> None:
    p = sub.add_parser("identify", help="identify an install tree or ISO image")
    _location_args(p)
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("fetch", help="download and verify the kernel and initrd (cached)")
    _location_args(p)
    p.add_argument("--dest", metavar="DIR", help="also put the verified files in DIR")
    p.add_argument(
        "--checksum",
        action="append",
        default=[],
        metavar="[ROLE=]sha256:HEX",
        help="pin a checksum: kernel=sha256:.., initrd=sha256:.., PATH=sha256:.. or a bare "
        "sha256:.. that one of the two files must have (repeatable)",
    )
    p.add_argument(
        "--require-signature",
        action="store_true",
        help="fail unless a signed chain (e.g. Release.gpg -> SHA256SUMS) vouches for the files",
    )
    p.add_argument(
        "--max-time",
        type=float,
        metavar="SECONDS",
        help="give up on a kernel/initrd transfer that takes longer (default: no limit when the "
        "server announces the length, 5 x --timeout when it does not)",
    )
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("cache", help="list or prune the download cache")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    lp = csub.add_parser("list", help="list cached files")
    lp.add_argument("--json", action="store_true", help="machine-readable output")
    lp.set_defaults(func=cmd_cache_list)
    pp = csub.add_parser("prune", help="remove cached files (default: only orphans)")
    which = pp.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="remove every cached file")
    which.add_argument(
        "--older-than", type=float, metavar="DAYS", help="remove files not used for DAYS days"
    )
    pp.add_argument(
        "--grace",
        type=float,
        default=PRUNE_GRACE,
        metavar="SECONDS",
        help="keep files used in the last SECONDS: a fetch that has just returned them may "
        f"not have opened them yet (default: {PRUNE_GRACE:g}; 0 removes them too)",
    )
    pp.add_argument("--json", action="store_true", help="machine-readable output")
    pp.set_defaults(func=cmd_cache_prune)


def _location_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("location", metavar="LOCATION", help="tree URL/directory or ISO file/URL")
    p.add_argument("--arch", help="architecture to pick in multi-arch trees (e.g. x86_64)")
    p.add_argument("--kernel", metavar="PATH", help="kernel path relative to the location")
    p.add_argument("--initrd", metavar="PATH", help="initrd path relative to the location")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument(  # issue 6: the keyring that vouches for a Debian/Ubuntu Release
        "--keyring", type=Path, metavar="FILE", help="OpenPGP keyring for signed Release files"
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="per network operation"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def warn_insecure(args: argparse.Namespace) -> None:
    """--insecure is never silent (issue 6): say on stderr what is no longer checked."""
    if getattr(args, "insecure", False):
        notice("--insecure: TLS certificates are not verified; checksums still are")


def cmd_identify(args: argparse.Namespace) -> int:
    warn_insecure(args)
    try:
        from treeboot.detect.identify import identify
    except ModuleNotFoundError as e:
        if e.name != "treeboot.detect.identify":
            raise
        raise DetectionError("identification is not available in this build") from e
    ident: Identification = identify(
        args.location,
        arch=args.arch,
        kernel=args.kernel,
        initrd=args.initrd,
        insecure=args.insecure,
        timeout=args.timeout,
        keyring=args.keyring,
    )
    if args.json:
        emit_json(ident.to_json())
    else:
        print(format_identification(ident))
    return 0


def format_identification(ident: Identification) -> str:
    title = ident.name or ident.os or "unknown OS"
    facts = [
        ("os", ident.os if ident.known_to_database else f"{ident.os} (not in osinfo-db)"),
        ("arch", ident.arch),
        ("installer", ident.installer),
        ("media", str(ident.media)),
        ("kernel", _with_sum(ident, ident.kernel)),
        ("initrd", _with_sum(ident, ident.initrd)),
        ("verified", str(ident.verified)),
        ("needs", ", ".join(ident.needs)),
        ("evidence", ", ".join(ident.evidence)),
    ]
    lines = [f"{title}  ({ident.location})"]
    lines += [f"  {k + ':':10} {v}" for k, v in facts if v]
    return "\n".join(lines)


def _with_sum(ident: Identification, path: str | None) -> str | None:
    if path is None:
        return None
    checksum = ident.checksums.get(path)
    return f"{path}  [{checksum[:19]}…]" if checksum else path


def parse_checksum_options(values: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--checksum`` values -> ({role or path: sha256:HEX}, [bare sha256:HEX])."""
    from treeboot.download.fetch import parse_checksum

    pinned: dict[str, str] = {}
    bare: list[str] = []
    for value in values:
        key, sep, checksum = value.partition("=")
        if not sep:
            parse_checksum(value)
            bare.append(value)
            continue
        if not key:
            raise UsageError(f"--checksum {value!r}: missing the file before '='")
        parse_checksum(checksum)
        pinned[key] = checksum
    return pinned, bare


def cmd_fetch(args: argparse.Namespace) -> int:
    from treeboot.download.fetch import fetch

    warn_insecure(args)
    if args.max_time is not None and args.max_time <= 0:
        raise UsageError("--max-time must be a number of seconds > 0")
    pinned, bare = parse_checksum_options(args.checksum)
    result = fetch(
        args.location,
        arch=args.arch,
        dest=args.dest,
        kernel=args.kernel,
        initrd=args.initrd,
        checksums=pinned,
        pins=bare,
        insecure=args.insecure,
        progress=False if args.quiet else None,
        require_signature=args.require_signature,
        timeout=args.timeout,
        keyring=args.keyring,
        max_time=args.max_time,
    )
    if args.json:
        emit_json(result.to_json())
    else:
        print(format_fetch(result))
    return 0


def format_fetch(result: FetchResult) -> str:
    lines = []
    for a in (result.kernel, result.initrd):
        how = "from cache" if a.from_cache else f"downloaded {_size(a.bytes_downloaded)}"
        lines.append(f"{a.role:7} {a.path}  ({_size(a.size)}, verified: {a.verified}, {how})")
    if result.verified == "none":
        lines.append("note: no checksum was available; the files are not verified")
    return "\n".join(lines)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _cache() -> Cache:
    from treeboot.store.cache import Cache

    return Cache()


def cmd_cache_list(args: argparse.Namespace) -> int:
    cache = _cache()
    rows = []
    for e in cache.entries():
        blob = cache.blob_path(e.sha256)
        used = blob.stat().st_mtime if blob.exists() else None
        rows.append({**asdict(e), "blob": str(blob) if used else None, "last_used": used})
    if args.json:
        emit_json({"root": str(cache.root), "bytes": cache.usage(), "entries": rows})
        return 0
    print(f"cache: {cache.root} ({_size(cache.usage())})")
    for r in rows:
        when = _date(r["last_used"]) if r["last_used"] else "missing"
        print(
            f"  {r['sha256'][:12]}  {_size(r['size']):>9}  {r['verified']:12} {when}"
            f"  {r['location']}{r['path']}"
        )
    if not rows:
        print("  (empty)", file=sys.stderr)
    return 0


def _date(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def cmd_cache_prune(args: argparse.Namespace) -> int:
    if args.older_than is not None and args.older_than < 0:
        raise UsageError("--older-than must be a number of days >= 0")
    if args.grace < 0:
        raise UsageError("--grace must be a number of seconds >= 0")
    report = _cache().prune(everything=args.all, older_than_days=args.older_than, grace=args.grace)
    if args.json:
        emit_json(report.to_json())
    else:
        print(f"removed {len(report.removed)} files, freed {_size(report.freed_bytes)}")
        if report.busy:
            print(f"left {len(report.busy)} files alone: a fetch is using them")
        if report.recent:
            print(
                f"kept {len(report.recent)} files used in the last {args.grace:g} s"
                " (--grace 0 removes them too)"
            )
    return 0
