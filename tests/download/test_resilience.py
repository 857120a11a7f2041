"""Downloads that survive real servers (issue 10): retries with Retry-After, stale keep-alive
connections, resume answers that do not match the request, unrequested gzip, a stalled
metadata file, malformed URLs. Servers are :mod:`_hostile_server` with the modes of
:mod:`_hostile_more`; the client is the library (``api_fetch``) or the CLI."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hostile import (
    OK,
    TIMEOUT,
    Tree,
    api_fetch,
    assert_clear_cli_error,
    check_outcome,
    cli,
)

import _hostile_more  # noqa: F401 - registers the modes
from _hostile_helpers import KERNEL, assert_clean_cache, hostile_server, treeinfo, write_tree
from _hostile_server import HostileServer
from treeboot.errors import ChecksumMismatch, TreebootError

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    base = tmp_path_factory.mktemp("served")
    kernel, initrd = os.urandom(300 * 1024), os.urandom(700 * 1024)
    write_tree(base, "tree", kernel, initrd, treeinfo(kernel, initrd))
    return Tree(base, kernel, initrd)


@pytest.fixture(scope="module")
def server(tree: Tree) -> Iterator[HostileServer]:
    with hostile_server(tree.root) as srv:
        yield srv


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# --- the policy, pure -------------------------------------------------------------------------


def test_retry_after_forms() -> None:
    from treeboot.locate._retry import parse_retry_after

    now = 1_000_000_000.0
    assert parse_retry_after("7", now) == 7.0
    date = email.utils.formatdate(now + 2, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(2.0, abs=1.0)
    assert parse_retry_after(email.utils.formatdate(now - 50, usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "-3", "1.5e9"):
        assert parse_retry_after(bad, now) is None


def test_retry_policy_caps_delay_attempts_and_deadline() -> None:
    from treeboot.locate._retry import RetryPolicy, RetryRefused

    policy = RetryPolicy(attempts=3, base=0.5, max_delay=60)
    assert policy.delay(1, "2", None) == 2.0
    for attempt in (1, 2):
        assert 0 < policy.delay(attempt, None, None) <= 0.5 * 2 ** (attempt - 1)
    with pytest.raises(RetryRefused, match="86400"):
        policy.delay(1, "86400", None)  # a day: fail at once, quoting it
    with pytest.raises(RetryRefused, match="3 attempts"):
        policy.delay(3, "1", None)
    with pytest.raises(RetryRefused, match="max-time"):
        policy.delay(1, "5", remaining=3.0)


# --- transient statuses -----------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["flaky-503", "flaky-429-date"])
def test_retry_after_is_honoured(server: HostileServer, cache_root: Path, mode: str) -> None:
    proc = cli(["fetch", server.url(mode, "tree/"), "--timeout", str(TIMEOUT), "--json"],
               cache_root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    retries = [line for line in proc.stderr.splitlines() if "retrying in" in line]
    assert len(retries) == 2, proc.stderr  # one line per retry: the kernel's and the initrd's
    assert all(line.startswith("treeboot: ") for line in retries), retries
    assert len(server.state.requests_for(f"/{mode}/tree/{KERNEL}")) == 2
    assert_clean_cache(cache_root, partials_allowed=False)


@pytest.mark.timeout(90)
def test_retry_after_a_day_fails_at_once_quoting_it(
    server: HostileServer, cache_root: Path
) -> None:
    proc = cli(["fetch", server.url("retry-after-a-day", "tree/"), "--timeout", str(TIMEOUT)],
               cache_root)  # fmt: skip
    assert_clear_cli_error(proc)
    assert "86400" in proc.stderr, proc.stderr
    assert len(server.state.requests_for(f"/retry-after-a-day/tree/{KERNEL}")) == 1


@pytest.mark.timeout(90)
def test_transient_failure_during_identification_is_retried(
    server: HostileServer, cache_root: Path
) -> None:
    proc = cli(["identify", server.url("flaky-503-metadata", "tree/"), "--json"], cache_root)
    assert proc.returncode == 0, proc.stderr
    assert "retrying in" in proc.stderr


@pytest.mark.timeout(90)
def test_stale_keepalive_connection_is_retried_on_a_new_one(
    server: HostileServer, cache_root: Path
) -> None:
    proc = cli(["fetch", server.url("stale-keepalive", "tree/"), "--timeout", str(TIMEOUT),
                "--json"], cache_root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "connection closed without an answer; retrying" in proc.stderr
    assert_clean_cache(cache_root, partials_allowed=False)


# --- resume -----------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_resume_answered_with_the_whole_file_as_206(
    server: HostileServer, tree: Tree, cache_root: Path
) -> None:
    url = server.url("range-full-206", "tree/")
    _, error = api_fetch(url, tree, cache_root, server)
    assert isinstance(error, TreebootError)  # the first answer is cut short
    result, error = api_fetch(url, tree, cache_root, server)
    check_outcome(OK, result, tree, cache_root, error)
    gets = server.state.requests_for(f"/range-full-206/tree/{KERNEL}")
    assert gets[-1].headers.get("Range"), "the second run did not try to resume"


@pytest.mark.timeout(90)
def test_resume_wrong_range_restarts_cleanly(
    server: HostileServer, tree: Tree, cache_root: Path
) -> None:
    url = server.url("range-wrong", "tree/")
    api_fetch(url, tree, cache_root, server)
    result, error = api_fetch(url, tree, cache_root, server)
    check_outcome(OK, result, tree, cache_root, error)


@pytest.mark.timeout(90)
def test_resumed_file_failing_verification_is_discarded(
    server: HostileServer, tree: Tree, cache_root: Path
) -> None:
    url = server.url("range-corrupt", "tree/")
    _, error = api_fetch(url, tree, cache_root, server)
    assert isinstance(error, TreebootError)
    _, error = api_fetch(url, tree, cache_root, server)
    assert isinstance(error, ChecksumMismatch), error
    assert_clean_cache(cache_root, partials_allowed=False)
    result, error = api_fetch(url, tree, cache_root, server)  # starts fresh: no Range
    check_outcome(OK, result, tree, cache_root, error)
    assert "Range" not in server.state.requests_for(f"/range-corrupt/tree/{KERNEL}")[-1].headers


# --- content codings --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_unrequested_gzip_is_decoded_when_the_checksum_says_so(
    server: HostileServer, tree: Tree, cache_root: Path
) -> None:
    result, error = api_fetch(server.url("gzip", "tree/"), tree, cache_root, server)
    check_outcome(OK, result, tree, cache_root, error)


@pytest.fixture(scope="module")
def gz_tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    """A tree whose initrd is itself gzip data (its checksum is that of the .gz bytes)."""
    base = tmp_path_factory.mktemp("gz")
    kernel, initrd = os.urandom(100 * 1024), gzip.compress(os.urandom(200 * 1024))
    write_tree(base, "tree", kernel, initrd, treeinfo(kernel, initrd))
    return Tree(base, kernel, initrd)


@pytest.mark.timeout(60)
def test_gz_file_merely_labelled_gzip_keeps_its_raw_bytes(gz_tree: Tree, cache_root: Path) -> None:
    srv = HostileServer(gz_tree.root).start()
    try:
        result, error = api_fetch(srv.url("gzip-label", "tree/"), gz_tree, cache_root, srv)
    finally:
        srv.close()
    check_outcome(OK, result, gz_tree, cache_root, error)


def test_decoding_keeps_the_size_cap(tmp_path: Path) -> None:
    from treeboot.download._decode import gunzip_matching

    bomb = tmp_path / "bomb.part"
    plain = bytes(4 << 20)
    bomb.write_bytes(gzip.compress(plain))
    sha = hashlib.sha256(plain).hexdigest()
    assert gunzip_matching(bomb, sha, limit=1 << 20) is None
    assert list(tmp_path.iterdir()) == [bomb], "a refused decoding left a file behind"
    got = gunzip_matching(bomb, sha, limit=8 << 20)
    assert got is not None and got[1] == len(plain)
    assert gunzip_matching(bomb, "0" * 64, limit=8 << 20) is None


# --- a stalled metadata file, a malformed URL ------------------------------------------------


@pytest.mark.timeout(90)
def test_stalled_treeinfo_costs_one_timeout(server: HostileServer, cache_root: Path) -> None:
    proc = cli(["fetch", server.url("stall-treeinfo", "tree/"), "--timeout", str(TIMEOUT)],
               cache_root)  # fmt: skip
    if proc.returncode != 0:
        assert_clear_cli_error(proc)
    asked = server.state.requests_for("/stall-treeinfo/tree/.treeinfo")
    assert len(asked) == 1, f"the stalled .treeinfo was asked {len(asked)} times"


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1/tree/", "http://host:port/tree/"])
@pytest.mark.parametrize("command", ["identify", "fetch"])
def test_malformed_url_is_a_usage_error(cache_root: Path, command: str, url: str) -> None:
    proc = cli([command, url], cache_root, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert_clear_cli_error(proc)
    assert len([ln for ln in proc.stderr.splitlines() if "error:" in ln]) == 1, proc.stderr


@pytest.mark.timeout(120)
def test_iso_over_http_follows_the_same_retry_policy(tmp_path: Path) -> None:
    from _iso_helpers import build_iso
    from treeboot.locate.open import open_location

    iso = build_iso(tmp_path / "srv" / "m.iso", {"hello.txt": b"hello\n"}, volume_id="TEST")
    srv = HostileServer(iso.parent).start()
    try:
        with open_location(srv.url("flaky-503-any", "m.iso"), timeout=TIMEOUT) as loc:
            assert loc.read("hello.txt") == b"hello\n"
        assert len(srv.state.requests_for("/flaky-503-any/m.iso")) >= 2
        assert srv.state.requests_for("/flaky-503-any/m.iso")[0].headers.get("Range")
    finally:
        srv.close()
