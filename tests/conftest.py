"""Suite-wide settings. Area-specific fixtures live in tests/_<area>_helpers.py."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests live in tests/<stage>/; their helpers (tests/_*.py) are imported as top-level modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _paths import SHARED

pytest_plugins = ["_libvirt_fixtures"]  # libvirtd, network, clean: one daemon for all modules

# Started as a background job by a shell without job control (`make test &`, nohup), the suite
# inherits SIGINT ignored, and so would every treeboot it starts: a Python started with SIGINT
# ignored keeps ignoring it, and the tests of Ctrl-C would fail. Take SIGINT back here; the
# treeboot processes then start with the default, as under a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the suite out of the user's cache/state dirs: everything goes under pytest's tmp."""
    base = tmp_path_factory.mktemp("treeboot-home")
    saved = {k: os.environ.get(k) for k in ("TREEBOOT_CACHE", "TREEBOOT_HOME")}
    os.environ.setdefault("TREEBOOT_CACHE", str(base / "cache"))
    os.environ.setdefault("TREEBOOT_HOME", str(base / "home"))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED}")
    return SHARED


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Under CI a skip is a failure, unless it is for ../shared's real-world fixtures.

    `make test` installs every package and tool the suite needs, so in CI a skip can only hide
    a missing install step or a regression. Only the fixtures beside the checkout (../shared)
    may be absent, as on a contributor's fresh clone of this repository alone.
    """
    outcome: Any = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or not os.environ.get("CI") or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    if "shared" not in reason:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (make test installs everything): {reason}"
