"""Longer fuzzing runs of treeboot's parsers (the test suite runs a fixed, small number).

    .venv/bin/python bench/fuzz.py                      # every target, 2000 examples each
    .venv/bin/python bench/fuzz.py -n 20000 -t treeinfo -t iso9660
    .venv/bin/python bench/fuzz.py --atheris -t release --runs 100000   # if atheris is installed

Targets live in tests/_fuzz_targets.py (treeinfo, MANIFEST, SUSE content, .disk/info, Release,
SHA256SUMS, boot loader configs, ISO9660). The kernel-header and initrd/cpio fuzzers of the
boot-artifacts tests (tests/test_kernel.py, tests/test_initrd.py) run here too, with more
examples. Prints one JSON line per target: examples run, failure (if any), seconds, peak RSS.
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

from _fuzz_targets import TARGETS, Target, check_one  # type: ignore[import-not-found,unused-ignore]  # noqa: E402

# The boot-artifacts helper's hypothesis fuzz tests: (target name, test module, test function).
EXTERNAL = [
    ("kernel-headers", "test_kernel", "test_fuzz_mutated_headers"),
    ("kernel-random", "test_kernel", "test_fuzz_random_bytes"),
    ("initrd-cpio", "test_initrd", "test_fuzz_mutated_initrds"),
    ("initrd-random", "test_initrd", "test_fuzz_random_initrds"),
]


def all_targets() -> list[Target]:
    return list(TARGETS)


def run_external(module: str, func: str, examples: int) -> dict[str, Any]:
    """Run another suite's @given test with more examples (its own property and strategy)."""
    from hypothesis import settings

    try:
        test = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        return {"skipped": f"{module}.{func}: {e}"}
    # Its @settings cannot be applied twice; replace the settings hypothesis reads.
    base = getattr(test, "_hypothesis_internal_use_settings", settings())
    test._hypothesis_internal_use_settings = settings(base, max_examples=examples, database=None)
    try:
        test()
    except Exception as e:
        return {"failure": f"{type(e).__name__}: {e}"[:4000]}
    return {"failure": None}


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
        for name, module, func in EXTERNAL:
            print(name, f"{module}.{func}")
        return 0
    if args.target:
        targets = [t for t in targets if t.name in set(args.target)]
    failed = 0
    for name, module, func in EXTERNAL:
        if args.atheris or (args.target and name not in args.target):
            continue
        start = time.monotonic()
        result = run_external(module, func, args.examples)
        result.update(target=name, examples=args.examples,
                      seconds=round(time.monotonic() - start, 1))  # fmt: skip
        failed += result.get("failure") is not None
        print(json.dumps(result), flush=True)
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
