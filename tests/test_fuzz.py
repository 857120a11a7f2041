"""Parsers fuzzed with hypothesis: every input parses or raises a TreebootError, no hang, no
memory blow-up. A fixed, derandomized number of examples here; longer runs: bench/fuzz.py."""

from __future__ import annotations

import resource

import pytest
from hypothesis import HealthCheck, given, settings

from _fuzz_targets import TARGETS, Target, check_one

MAX_RSS_GROWTH_KIB = 1024 * 1024  # 1 GiB over the whole run of one target


@pytest.mark.timeout(300)
@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parser_survives_fuzzing(target: Target) -> None:
    module = target.load()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @settings(
        max_examples=target.examples,
        deadline=5000,  # ms per example: a parser that needs more is as good as hung
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(target.strategy())
    def run(data: bytes) -> None:
        check_one(target, module, data)

    run()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert growth < MAX_RSS_GROWTH_KIB, f"{target.name} grew the process by {growth} KiB"
