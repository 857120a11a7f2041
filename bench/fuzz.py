"""Longer fuzzing runs of treeboot's parsers (the test suite runs a fixed, small number).

    .venv/bin/python bench/fuzz.py                      # every target, 2000 examples each
    .venv/bin/python bench/fuzz.py -n 20000 -t treeinfo -t iso9660
    .venv/bin/python bench/fuzz.py --atheris -t release --runs 100000   # if atheris is installed

Targets live in tests/_fuzz_targets.py (treeinfo, MANIFEST, SUSE content, .disk/info, Release,
SHA256SUMS, boot loader configs, ISO9660); kernel-header and cpio targets of the boot-artifacts
tests are added when their module exposes ``FUZZ_TARGETS``. Prints one JSON line per target:
examples run, failures (with the smallest failing input), seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from _fuzz_targets import TARGETS, Target, check_one  # noqa: E402

# Other helpers' fuzz targets (same Target type), imported when they exist.
EXTRA_TARGET_MODULES = ["_boot_fuzz_targets", "_kernel_helpers", "_cpio_helpers"]


def all_targets() -> list[Target]:
    targets = list(TARGETS)
    for name in EXTRA_TARGET_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        targets += list(getattr(mod, "FUZZ_TARGETS", []))
    return targets


def run_hypothesis(target: Target, module: Any, examples: int, seed: int | None) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    failure: str | None = None

    @settings(
        max_examples=examples,
        deadline=10000,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(target.strategy())
    def run(data: Any) -> None:
        check_one(target, module, data)

    if seed is not None:
        run = hseed(seed)(run)
    try:
        run()
    except Exception as e:  # report, keep going with the other targets
        failure = f"{type(e).__name__}: {e}"[:4000]
    return {"failure": failure}


def run_atheris(target: Target, module: Any, runs: int) -> dict[str, Any]:
    import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

    def one(data: bytes) -> None:
        check_one(target, module, data)

    atheris.Setup([sys.argv[0], f"-runs={runs}"], one)
    atheris.Fuzz()
    return {"failure": None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "-n", "--examples", type=int, default=2000, help="hypothesis examples per target"
    )
    ap.add_argument("-t", "--target", action="append", help="only these targets (repeatable)")
    ap.add_argument("--seed", type=int, help="hypothesis seed (default: random)")
    ap.add_argument("--atheris", action="store_true", help="use atheris (bytes targets only)")
    ap.add_argument("--runs", type=int, default=100000, help="atheris runs")
    ap.add_argument("--list", action="store_true", help="list targets and exit")
    args = ap.parse_args()
    targets = all_targets()
    if args.list:
        for t in targets:
            print(t.name, t.module)
        return 0
    if args.target:
        targets = [t for t in targets if t.name in set(args.target)]
    failed = 0
    for target in targets:
        module = target.load()
        if module is None:
            print(json.dumps({"target": target.name, "skipped": f"{target.module} missing"}))
            continue
        start = time.monotonic()
        if args.atheris:
            result = run_atheris(target, module, args.runs)
        else:
            result = run_hypothesis(target, module, args.examples, args.seed)
        result.update(
            target=target.name,
            examples=args.runs if args.atheris else args.examples,
            seconds=round(time.monotonic() - start, 1),
            peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        )
        failed += result["failure"] is not None
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
