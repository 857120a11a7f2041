"""``treeboot fleet PLAN.toml``: many machines at once, through Ansible."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from treeboot.cli.output import emit_json, notice

# Exit code when Ansible ran but a machine failed or its host was unreachable (README).
FLEET_FAILED = 14


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fleet",
        help="install the machines of a plan on many hosts at once (through Ansible)",
        description="Read PLAN.toml ([hosts.NAME] and [[machines]]), write an Ansible inventory,"
        " playbook and ansible.cfg for the treeboot.install collection, and run them (or only"
        " write them, with --emit). See docs/fleet.md.",
    )
    p.add_argument("plan", type=Path, help="the plan file (TOML)")
    p.add_argument("--emit", type=Path, metavar="DIR",
                   help="write inventory.yml, playbook.yml and ansible.cfg into DIR; run nothing")
    p.add_argument("--limit", metavar="PATTERN",
                   help="only these machines or hosts (Ansible's --limit)")
    p.add_argument("--forks", type=int, metavar="N",
                   help="machines installed at the same time (Ansible's --forks; default 5)")
    p.add_argument("--check", action="store_true",
                   help="Ansible's check mode: each install is a dry run; nothing starts")
    p.add_argument("--prefetch", action="store_true",
                   help="fetch each tree once here and copy the cache to every host")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_fleet)


def cmd_fleet(args: argparse.Namespace) -> int:
    from treeboot.errors import UsageError
    from treeboot.fleet.plan import load_plan

    plan = load_plan(args.plan)
    if args.forks is not None and args.forks < 1:
        raise UsageError(f"--forks {args.forks}: give at least 1")
    if args.emit is not None:
        return _emit(plan, args)
    from treeboot.fleet.run import run_fleet

    def progress(result: Any) -> None:
        if not args.json:
            notice(f"{result.machine} on {result.host}: {result.status} ({result.outcome})")

    result = run_fleet(
        plan,
        limit=args.limit,
        forks=args.forks,
        check=args.check,
        prefetch_cache=args.prefetch,
        on_result=progress,
    )
    if args.json:
        emit_json(result.to_json())
    else:
        _table(result.machines)
        for m in result.machines:
            if m.msg:
                notice(f"{m.machine}: {m.msg}")
        if result.ansible_rc != 0 and not any(m.failed for m in result.machines):
            tail = result.stdout.strip().splitlines()[-5:]
            notice(f"ansible-playbook exited with {result.ansible_rc}: " + " / ".join(tail))
    return FLEET_FAILED if result.failed else 0


def _emit(plan: Any, args: argparse.Namespace) -> int:
    from treeboot.fleet.emit import PREFETCH_DIR, emit
    from treeboot.fleet.prefetch import prefetch

    if args.limit or args.forks or args.check:
        notice("--limit, --forks and --check apply when running; pass them to ansible-playbook")
    if args.prefetch:
        prefetch(plan, args.emit / PREFETCH_DIR)
    written = emit(plan, args.emit)
    if args.json:
        emit_json({"dir": str(args.emit.resolve()), "files": [str(p) for p in written]})
    else:
        for path in written:
            print(path)
        notice(f"run it with: cd {args.emit} && ansible-playbook playbook.yml")
    return 0


def _table(machines: list[Any]) -> None:
    rows = [("MACHINE", "HOST", "OS", "STATUS", "OUTCOME", "TIME")]
    for m in machines:
        elapsed = f"{m.elapsed:.1f}s" if m.elapsed is not None else "-"
        rows.append((m.machine, m.host, m.os or "-", m.status, m.outcome, elapsed))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
