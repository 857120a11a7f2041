"""Benchmark: ISO identification past the database, over every osinfo-db <media> rule.

Corpus: for every ``<media><iso>`` rule of every numbered (non-placeholder) release in the
installed osinfo-db, one synthetic primary volume descriptor built from the rule's own regexes
(the simplest string each field regex matches: ``\\d`` -> 1, ``.`` -> ".", optional parts left
out), with the release's version replaced, spelled the way the rule spells it, by a version
*past the database*: the newest release of its series with its last component + 1
(``rhel9.1`` rule -> 9.2, ``NETBSD_90`` -> ``NETBSD_100`` style for a major bump). Expected:
the short-id the series' own naming gives that version (``OsinfoDB.derive_short_id`` over the
entries sharing the short-id prefix).

Two databases:

  installed   the whole installed DB; descriptors bumped past it as above
  held-out    the same DB without the newest 20% of each distro's numbered releases (by
              release date, then version); the descriptors are those of the removed releases'
              own rules, unchanged, and the expected id is their real osinfo short-id -- the
              database never saw them, so this measures generalisation honestly

For each: the share identified exactly by treeboot (``detect.iso.name_descriptor``: osinfo
rules, then learnt patterns) and by the peer, osinfo-db's own rules alone as libosinfo applies
them (``detect.iso.match_media``, best match); rules whose descriptor does not spell the version
at all are counted (they cannot be named past the database) and reported apart.

Then the warm ``identify`` of real ISO images (xorriso; a learnt and an exact volume id):
in-process (second call, caches warm) and ``treeboot identify --json`` in a fresh process with
the on-disk caches warm, interleaved with the peer: the same command of the base branch
(``--base REF``, default ``restructure``, extracted with ``git archive``; pass the commit
before this work, e.g. ``--base 7a22500``, once it is merged).

Usage: .venv/bin/python bench/identify_corpus.py [--runs 7] [--base REF] [--timing-only]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from re import _constants as sre_c  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from treeboot.detect.iso import _pick_match, identify_iso, match_media, name_descriptor
from treeboot.detect.osinfo import (
    MediaRule,
    OsEntry,
    OsinfoDB,
    load_osinfo,
    name_template,
    version_key,
)
from treeboot.locate.iso import IsoInfo, open_iso

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("volume_id", "system_id", "publisher_id", "application_id")

# -- the simplest string a regex matches -------------------------------------------------------


def sample(pattern: str) -> str | None:
    """The simplest string ``pattern`` matches (searched), or None if the walk fails."""
    try:
        text = _walk(sre_parse.parse(pattern))
    except (re.error, ValueError, KeyError):
        return None
    return text if re.search(pattern, text) else None


def _walk(items: Iterable[tuple[Any, Any]]) -> str:
    out = []
    for op, av in items:
        if op is sre_c.LITERAL:
            out.append(chr(av))
        elif op is sre_c.NOT_LITERAL:
            out.append("x" if chr(av) != "x" else "y")
        elif op is sre_c.ANY:
            out.append(".")  # osinfo-db writes "." where media have a dot
        elif op is sre_c.IN:
            out.append(_class(av))
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
            low, high, sub = av
            if low == 0 and high and len(sub) == 1 and sub[0][0] is sre_c.LITERAL:
                low = 1  # "x86_64*" is osinfo-db's typo for x86_64, not for x86_6
            out.append(_walk(sub) * low)
        elif op is sre_c.SUBPATTERN:
            out.append(_walk(av[-1]))
        elif op is sre_c.BRANCH:
            out.append(_walk(av[1][0]))
        elif op is sre_c.CATEGORY:
            out.append(_category(av))
        elif op in (sre_c.AT, sre_c.ASSERT, sre_c.ASSERT_NOT):
            continue
        else:
            raise ValueError(f"unsupported regex item {op}")
    return "".join(out)


def _category(cat: Any) -> str:
    return {sre_c.CATEGORY_DIGIT: "1", sre_c.CATEGORY_SPACE: " "}.get(cat, "a")


def _class(items: list[tuple[Any, Any]]) -> str:
    if items and items[0][0] is sre_c.NEGATE:
        return "x"
    op, av = items[0]
    if op is sre_c.LITERAL:
        return chr(av)
    if op is sre_c.RANGE:
        return chr(max(av[0], min(av[1], ord("1"))) if av[0] <= ord("1") <= av[1] else av[0])
    if op is sre_c.CATEGORY:
        return _category(av)
    raise ValueError(f"unsupported class item {op}")


# -- versions in a descriptor ------------------------------------------------------------------

_SEPS = r"(\.| SP|-SP|SP|-|_| )"


def respell(text: str, old: str, new: str) -> tuple[str, str] | None:
    """``text`` with version ``old`` (as the text spells it) replaced by ``new``, and the
    version the new text spells (``new`` cut to the components the text writes), or None."""
    comps, want = old.split("."), new.split(".")
    while True:
        body = _SEPS.join(re.escape(c) for c in comps)
        m = re.search(rf"(?<!\d){body}(?!\d)", text)
        if m:
            spelled = (want + ["0"] * len(comps))[: len(comps)]
            rendered = spelled[0]
            for i, sep in enumerate(m.groups(), 1):
                rendered += sep + spelled[i]
            return text[: m.start()] + rendered + text[m.end() :], ".".join(spelled)
        if len(comps) == 2 and len(comps[1]) == 1:
            m = re.search(rf"(?<![\dA-Za-z]){comps[0]}{comps[1]}(?!\d)", text)
            if m and len(want) == 2 and len(want[1]) == 1:
                return text[: m.start()] + want[0] + want[1] + text[m.end() :], new
        if len(comps) > 1 and comps[-1].strip("0") == "":
            comps = comps[:-1]
            continue
        return None


def stem(entry: OsEntry) -> str | None:
    t = name_template(entry.short_id, entry.version or "")
    return t.prefix if t else None


def numbered(db: OsinfoDB) -> list[OsEntry]:
    return [e for e in db.entries if not e.is_placeholder and version_key(e.version) and e.distro]


def bumped(series: list[OsEntry]) -> str:
    newest = max(version_key(e.version) or (0,) for e in series)
    comps = list(newest)
    comps[-1] += 1
    return ".".join(str(c) for c in comps)


def descriptor(rule: MediaRule, old: str, new: str) -> tuple[IsoInfo, str | None] | None:
    """(descriptor, the version some field spells or None) from the rule's own regexes, the
    version ``old`` respelled as ``new``."""
    values: dict[str, str] = {}
    spelled: str | None = None
    for f in FIELDS:
        pattern = getattr(rule, f)
        if not pattern:
            continue
        text = sample(pattern)
        if text is None:
            return None
        changed = respell(text, old, new)
        if changed is not None:
            text, spelled = changed[0], spelled or changed[1]
        values[f] = text
    if "volume_id" not in values:
        return None
    info = IsoInfo(
        values.get("system_id", "LINUX"),
        values["volume_id"],
        values.get("publisher_id", ""),
        values.get("application_id", ""),
        1, 2048, 2048, True, True, False, False,
    )  # fmt: skip
    return info, spelled


# -- scoring -----------------------------------------------------------------------------------


@dataclass
class Score:
    total: int = 0
    spelled: int = 0
    ours: int = 0
    ours_spelled: int = 0
    peer: int = 0

    def line(self, label: str) -> str:
        def pct(n: int, d: int) -> str:
            return f"{100 * n / d:5.1f}%" if d else "  n/a"

        ratio = f"{self.ours / self.peer:.1f}x" if self.peer else "inf"
        return (
            f"{label:<10} descriptors {self.total:5d}  treeboot {pct(self.ours, self.total)}"
            f"  osinfo rules only {pct(self.peer, self.total)}  ratio {ratio}"
            f"  | version spelled: {self.spelled:5d}, treeboot "
            f"{pct(self.ours_spelled, self.spelled)}"
        )


def named(db: OsinfoDB, info: IsoInfo) -> tuple[str | None, str | None]:
    """(treeboot's short-id, the peer's short-id) for one descriptor."""
    _, match, learnt = name_descriptor(db, info)
    ours = learnt.short_id if learnt else (match.entry.short_id if match else None)
    best = _pick_match(match_media(db, info), None)
    return ours, best.entry.short_id if best else None


def score(cases: Iterable[tuple[IsoInfo, bool, str]], db: OsinfoDB, show_misses: int = 0) -> Score:
    s = Score()
    for info, spelled, want in cases:
        ours, peer = named(db, info)
        if ours != want and spelled and show_misses > 0:
            show_misses -= 1
            print(f"  miss: {info.volume_id!r} {info.application_id!r} -> {ours}, want {want}")
        s.total += 1
        s.spelled += spelled
        s.ours += ours == want
        s.ours_spelled += spelled and ours == want
        s.peer += peer == want
    return s


def installed_cases(db: OsinfoDB) -> list[tuple[IsoInfo, bool, str]]:
    cases = []
    series: dict[tuple[str, str], list[OsEntry]] = {}
    for e in numbered(db):
        if (s := stem(e)) is not None and e.distro:
            series.setdefault((e.distro, s), []).append(e)
    for (distro, _), entries in series.items():
        new = bumped(entries)
        for e in entries:
            for rule in e.medias:
                got = descriptor(rule, e.version or "", new)
                if got is None:
                    continue
                info, spelled = got
                want, _ = db.derive_short_id(distro, spelled or new, series=entries)
                cases.append((info, spelled is not None, want))
    return cases


def held_out(db: OsinfoDB, share: float = 0.2) -> tuple[OsinfoDB, list[OsEntry]]:
    by_distro: dict[str, list[OsEntry]] = {}
    for e in numbered(db):
        by_distro.setdefault(e.distro or "", []).append(e)
    removed: list[OsEntry] = []
    for entries in by_distro.values():
        entries.sort(key=lambda e: (e.release_date or "", version_key(e.version) or ()))
        removed += entries[len(entries) - math.ceil(share * len(entries)) :]
    gone = {e.id for e in removed}
    kept = OsinfoDB([e for e in db.entries if e.id not in gone], db.version, ())
    return kept, removed


def held_out_cases(removed: list[OsEntry]) -> list[tuple[IsoInfo, bool, str]]:
    cases = []
    for e in removed:
        for rule in e.medias:
            got = descriptor(rule, e.version or "", e.version or "")
            if got is not None:
                cases.append((got[0], got[1] is not None, e.short_id))
    return cases


# -- timing ------------------------------------------------------------------------------------


def build_iso(path: Path, volume_id: str) -> Path:
    (path.parent / "files").mkdir(exist_ok=True)
    (path.parent / "files" / "README.TXT").write_text("install medium\n")
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-o", str(path), "-V", volume_id,
         "-sysid", "LINUX", "-J", "-R", str(path.parent / "files")],
        check=True, capture_output=True,
    )  # fmt: skip
    return path


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_cli(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=False, capture_output=True)
    return time.perf_counter() - t


def summary(xs: list[float]) -> str:
    return f"min {min(xs) * 1000:7.1f} ms  median {statistics.median(xs) * 1000:7.1f} ms"


def timing(runs: int, base: str) -> None:
    with tempfile.TemporaryDirectory(prefix="identify-corpus-") as tmp:
        root = Path(tmp)
        base_src = root / "base"
        base_src.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", base, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(base_src)], input=archive, check=True)
        for vid in ("RHEL-9-7-0-BaseOS-x86_64", "Fedora-S-dvd-x86_64-37"):
            d = root / vid
            d.mkdir()
            iso = build_iso(d / "m.iso", vid)
            with open_iso(str(iso)) as loc:
                identify_iso(loc)  # warm the in-process caches
                inproc = [timed(lambda: identify_iso(loc)) for _ in range(runs)]
            with open_iso(str(iso)) as loc:
                name = identify_iso(loc).os
            ours_cli: list[float] = []
            base_cli: list[float] = []
            env_base = {**os.environ, "PYTHONPATH": str(base_src / "src")}
            cmd = [sys.executable, "-m", "treeboot", "identify", str(iso), "--json"]
            for env in (os.environ, env_base):  # warm the on-disk caches of both
                subprocess.run(cmd, env=env, check=False, capture_output=True)
            for _ in range(runs):  # interleaved, so both see the same machine load
                ours_cli.append(run_cli(cmd, dict(os.environ)))
                base_cli.append(run_cli(cmd, env_base))
            ratio = statistics.median(ours_cli) / statistics.median(base_cli)
            print(f"\n{vid} -> {name}")
            print(f"  in-process warm identify_iso   {summary(inproc)}")
            print(f"  treeboot identify (process)    {summary(ours_cli)}")
            print(f"  base {base:<12} (process)    {summary(base_cli)}   ratio {ratio:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--base", default="restructure", help="git ref of the peer for timings")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--timing-only", action="store_true")
    ap.add_argument("--show-misses", type=int, default=0, metavar="N")
    args = ap.parse_args()
    if args.timing_only:
        timing(args.runs, args.base)
        return 0
    db = load_osinfo()
    rules = sum(len(e.medias) for e in db.entries)
    print(f"osinfo-db {db.version}: {len(db.entries)} entries, {rules} <media> rules")
    print(score(installed_cases(db), db, args.show_misses).line("installed"))
    kept, removed = held_out(db)
    print(
        f"held-out: {len(removed)} of {len(numbered(db))} numbered releases removed "
        "(newest 20% of each distro)"
    )
    print(score(held_out_cases(removed), kept, args.show_misses).line("held-out"))
    if not args.no_timing:
        timing(args.runs, args.base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
