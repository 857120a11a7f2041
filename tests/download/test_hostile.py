"""A hostile-server suite: every misbehaviour ends in a clear error (or a verified success) within
a bounded time, and leaves a clean cache.

The server (tests/_hostile_server.py) serves a small Fedora-like tree under
``http://127.0.0.1:<port>/<mode>/``; ``<mode>`` picks the misbehaviour. The library is driven
through ``fetch.download.fetch`` with an Identification (so that each case meets exactly one
problem) and through the CLI (``python -m treeboot identify|fetch``), where the error must be one
``treeboot: error:`` message and never a traceback. Timeouts are short (``timeout=``/``--timeout``)
and each test has a pytest-timeout: a hang fails the test instead of asserting on wall-clock time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from _hostile_helpers import (
    INITRD,
    KERNEL,
    assert_clean_cache,
    blobs,
    hostile_server,
    treeinfo,
    write_tree,
)
from _hostile_server import HostileServer, make_tls_context, start_ftp
from treeboot.errors import ChecksumMismatch, TreebootError
from treeboot.model import Identification, Media
from treeboot.store.cache import Cache

pytestmark = pytest.mark.network

TIMEOUT = 2.0  # seconds: the client's network timeout in every case


# --- the served tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    root: Path  # served directory; the tree is <root>/tree/
    kernel: bytes
    initrd: bytes

    def sha(self, role: str) -> str:
        return hashlib.sha256(self.kernel if role == "kernel" else self.initrd).hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    base = tmp_path_factory.mktemp("served")
    kernel = os.urandom(300 * 1024)
    initrd = os.urandom(700 * 1024)
    write_tree(base, "tree", kernel, initrd, treeinfo(kernel, initrd))
    # Trees whose metadata points outside themselves.
    for name, path in [("dotdot", "../../../../../etc/passwd"), ("absolute", "/etc/passwd"),
                       ("dotdot-inner", "images/../../tree/images/pxeboot/vmlinuz")]:  # fmt: skip
        write_tree(base, name, kernel, initrd, treeinfo(kernel, initrd, kernel_path=path))
    # A Debian tree whose MANIFEST and SHA256SUMS name paths outside it.
    images = base / "debian/dists/bookworm/main/installer-amd64/current/images"
    netboot = images / "netboot/debian-installer/amd64"
    netboot.mkdir(parents=True)
    (netboot / "linux").write_bytes(kernel)
    (netboot / "initrd.gz").write_bytes(initrd)
    hostile = ["../../../../../../etc/passwd", "/etc/passwd", "netboot/../../../../../etc/passwd"]
    (images / "MANIFEST").write_text(
        "".join(f"{p:40} -- Linux kernel for netboot\n" for p in hostile)
        + "netboot/debian-installer/amd64/linux -- Linux kernel\n"
    )
    (images / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256(kernel).hexdigest()}  {p}\n" for p in hostile)
    )
    return Tree(base, kernel, initrd)


@pytest.fixture(scope="module")
def server(tree: Tree) -> Iterator[HostileServer]:
    with hostile_server(tree.root) as srv:
        yield srv


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def ident(url: str, tree: Tree, **kw: object) -> Identification:
    fields: dict[str, object] = {
        "location": url,
        "media": Media.TREE,
        "os": "fedora42",
        "family": "fedora",
        "name": "Fedora 42",
        "version": "42",
        "arch": "x86_64",
        "installer": "anaconda",
        "kernel": KERNEL,
        "initrd": INITRD,
        "checksums": {
            KERNEL: f"sha256:{tree.sha('kernel')}",
            INITRD: f"sha256:{tree.sha('initrd')}",
        },
    }
    fields.update(kw)
    return Identification(**fields)  # type: ignore[arg-type]


# --- library-level cases --------------------------------------------------------------------

ERROR = "error"  # must fail with a TreebootError
OK = "ok"  # must succeed with the right bytes
EITHER = "either"  # may fail cleanly or succeed, but never with wrong bytes

CASES: dict[str, str] = {
    "ok": OK,
    "redirect-ok": OK,
    "truncated": ERROR,
    "length-larger": ERROR,
    "length-smaller": ERROR,
    "endless": ERROR,
    "drip": ERROR,
    "stall-after-headers": ERROR,
    "stall-before-headers": ERROR,
    "close-at-once": ERROR,
    "garbage-status": ERROR,
    "bad-content-length": ERROR,
    "bad-chunked": ERROR,
    "redirect-self": ERROR,
    "redirect-pingpong": ERROR,
    "redirect-chain": ERROR,
    "redirect-file": ERROR,
    "redirect-scheme": ERROR,
    "redirect-ftp": ERROR,
    "status-404": ERROR,
    "status-403": ERROR,
    "status-500": ERROR,
    "status-503": ERROR,
    "flaky-503": OK,  # retried after its Retry-After (issue 10)
    "gzip": OK,  # decoded: the checksum says the decoded entity is the file
    "empty-body": ERROR,
    "soft-404": ERROR,
    "changing-file": ERROR,
}
# Modes whose first request is truncated: the first run fails (or retries), a second resumes.
RESUME_CASES: dict[str, str] = {"range-ignored": OK, "range-wrong": OK, "changing-file": ERROR}


def check_outcome(
    expect: str, run: object, tree: Tree, cache_root: Path, error: BaseException | None
) -> None:
    if error is not None and not isinstance(error, TreebootError):
        raise error
    if expect == OK:
        assert error is None, f"expected success, got {error!r}"
    if expect == ERROR:
        assert error is not None, "expected a clear error, the fetch succeeded"
        assert str(error).strip(), "the error has no message"
    if error is None:
        from treeboot.model import FetchResult

        assert isinstance(run, FetchResult)
        assert hashlib.sha256(run.kernel.path.read_bytes()).hexdigest() == tree.sha("kernel")
        assert hashlib.sha256(run.initrd.path.read_bytes()).hexdigest() == tree.sha("initrd")
    assert_clean_cache(cache_root, partials_allowed=not isinstance(error, ChecksumMismatch))


HANG = 30.0  # seconds: a fetch still running after this is hung (the client's timeout is 2 s)


def api_fetch(
    url: str, tree: Tree, cache_root: Path, server: HostileServer | None = None, **kw: object
) -> tuple[object, BaseException | None]:
    """``fetch()`` in a worker thread, so that a hung client fails the test instead of hanging
    the suite; the server's stop event then releases the connection and the thread ends."""
    from treeboot.download.fetch import fetch

    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["result"] = fetch(
                ident(url, tree), timeout=TIMEOUT, cache=Cache(cache_root), progress=False,
                **kw,  # type: ignore[arg-type]
            )  # fmt: skip
        except BaseException as e:
            box["error"] = e

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(HANG)
    if worker.is_alive():
        if server is not None:
            server.state.stop.set()  # release the hostile connection ...
            worker.join(HANG)
            server.state.stop = threading.Event()  # ... and re-arm for the next test
        pytest.fail(f"fetch of {url} still running after {HANG:g} s: no bound on a hostile server")
    error = box.get("error")
    assert error is None or isinstance(error, BaseException)
    return box.get("result"), error


# A hostile body with no length the client can hold it to: bounded by the deadline an
# unannounced length gets (download/fetch.py: 5 x the timeout), well before the size cap.
UNBOUNDED = {"endless"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(CASES))
def test_fetch_meets_a_hostile_server(
    server: HostileServer, tree: Tree, cache_root: Path, mode: str
) -> None:
    result, error = api_fetch(server.url(mode, "tree/"), tree, cache_root, server)
    check_outcome(CASES[mode], result, tree, cache_root, error)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", list(RESUME_CASES))
def test_resume_meets_a_hostile_server(
    server: HostileServer, tree: Tree, cache_root: Path, mode: str
) -> None:
    url = server.url(mode, "tree/")
    first, error = api_fetch(url, tree, cache_root, server)
    if error is not None and not isinstance(error, TreebootError):
        raise error
    assert_clean_cache(cache_root)
    if error is not None:  # no internal retry: the second run resumes against the bad server
        first, error = api_fetch(url, tree, cache_root, server)
    check_outcome(RESUME_CASES[mode], first, tree, cache_root, error)


@pytest.mark.timeout(60)
def test_checksum_mismatch_leaves_nothing(
    server: HostileServer, tree: Tree, cache_root: Path
) -> None:
    from treeboot.download.fetch import fetch

    bad = ident(server.url("ok", "tree/"), tree, checksums={KERNEL: "sha256:" + "0" * 64})
    with pytest.raises(ChecksumMismatch):
        fetch(bad, timeout=TIMEOUT, cache=Cache(cache_root), progress=False)
    assert tree.sha("kernel") not in blobs(cache_root)
    assert_clean_cache(cache_root, partials_allowed=False)


@pytest.mark.timeout(60)
def test_pinned_checksum_mismatch(server: HostileServer, tree: Tree, cache_root: Path) -> None:
    from treeboot.download.fetch import fetch

    url = server.url("ok", "tree/")
    with pytest.raises(ChecksumMismatch):
        fetch(ident(url, tree), checksums={"kernel": "sha256:" + "1" * 64}, timeout=TIMEOUT,
              cache=Cache(cache_root), progress=False)  # fmt: skip
    assert_clean_cache(cache_root, partials_allowed=False)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "path", ["../../../../etc/passwd", "/etc/passwd", "images/../../../x", "images/%2e%2e/x"]
)
def test_artifact_path_outside_the_tree(
    server: HostileServer, tree: Tree, cache_root: Path, path: str
) -> None:
    from treeboot.download.fetch import fetch

    bad = ident(server.url("ok", "tree/"), tree, kernel=path, checksums={})
    with pytest.raises(TreebootError):
        fetch(bad, timeout=TIMEOUT, cache=Cache(cache_root), progress=False)
    assert not any("etc/passwd" in r.path or "%2e" in r.path.lower() for r in server.state.log)
    assert_clean_cache(cache_root)


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tree: Tree, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    srv = HostileServer(tree.root, tls=make_tls_context(tmp_path_factory.mktemp("tls"))).start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.mark.timeout(60)
def test_self_signed_certificate_is_refused(
    tls_server: HostileServer, tree: Tree, cache_root: Path
) -> None:
    _, error = api_fetch(tls_server.url("ok", "tree/"), tree, cache_root, tls_server)
    assert isinstance(error, TreebootError)
    assert "certificate" in str(error).lower() or "ssl" in str(error).lower()
    assert error.hint and "--insecure" in error.hint
    assert_clean_cache(cache_root)


@pytest.mark.timeout(60)
def test_insecure_accepts_a_self_signed_certificate(
    tls_server: HostileServer, tree: Tree, cache_root: Path
) -> None:
    result, error = api_fetch(
        tls_server.url("ok", "tree/"), tree, cache_root, tls_server, insecure=True
    )
    check_outcome(OK, result, tree, cache_root, error)


# --- FTP ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("behaviour", "expect"), [("ok", OK), ("drop", ERROR)])
def test_ftp_data_connection(tree: Tree, cache_root: Path, behaviour: str, expect: str) -> None:
    srv, thread, port = start_ftp(tree.root, behaviour)
    try:
        result, error = api_fetch(f"ftp://127.0.0.1:{port}/tree/", tree, cache_root)
        check_outcome(expect, result, tree, cache_root, error)
    finally:
        srv.close_all()
        thread.join(timeout=10)


# --- through the command line ---------------------------------------------------------------


def cli(
    args: list[str], cache_root: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TREEBOOT_CACHE=str(cache_root))
    try:
        return subprocess.run(
            [sys.executable, "-m", "treeboot", *args],
            capture_output=True, text=True, env=env, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        pytest.fail(f"treeboot {' '.join(args)} still running after {timeout:g} s")


def assert_clear_cli_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode not in (0, 70), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr
    assert "treeboot: error:" in proc.stderr, proc.stderr


CLI_FETCH_CASES = [m for m, e in CASES.items() if e == ERROR] + ["range-ignored"]
CLI_IDENTIFY_CASES = {
    # mode, tree -> what identify must do
    ("huge-metadata", "tree"): ERROR,
    ("huge-metadata-unannounced", "tree"): ERROR,
    ("endless-metadata", "tree"): ERROR,
    ("stall-metadata", "tree"): ERROR,
    ("status-503-metadata", "tree"): ERROR,
    ("redirect-file-metadata", "tree"): ERROR,
    ("soft-404", "tree"): ERROR,
    ("non-utf8", "tree"): EITHER,
    ("ok", "dotdot"): ERROR,
    ("ok", "absolute"): ERROR,
    ("ok", "dotdot-inner"): ERROR,
    ("ok", "debian/dists/bookworm/main/installer-amd64"): EITHER,
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", CLI_FETCH_CASES)
def test_cli_fetch_error_is_clear(server: HostileServer, cache_root: Path, mode: str) -> None:
    args = ["fetch", server.url(mode, "tree/"), "--timeout", str(TIMEOUT), "--json"]
    proc = cli(args, cache_root, timeout=HANG if mode in UNBOUNDED else 120)
    if mode == "range-ignored" and proc.returncode != 0:  # first run truncated: rerun resumes
        assert_clear_cli_error(proc)
        proc = cli(args, cache_root)
        assert proc.returncode == 0, proc.stderr
    elif mode != "range-ignored":
        assert_clear_cli_error(proc)
    assert_clean_cache(cache_root)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("mode", "tree_name"), list(CLI_IDENTIFY_CASES))
def test_cli_identify_hostile_metadata(
    server: HostileServer, cache_root: Path, mode: str, tree_name: str
) -> None:
    proc = cli(
        ["identify", server.url(mode, f"{tree_name}/"), "--timeout", str(TIMEOUT), "--json"],
        cache_root,
    )
    if CLI_IDENTIFY_CASES[(mode, tree_name)] == ERROR or proc.returncode != 0:
        assert_clear_cli_error(proc)
    if proc.returncode == 0:  # identified: then only with paths inside the tree
        out = json.loads(proc.stdout)
        for path in (out["kernel"], out["initrd"], *out["checksums"]):
            assert path and not path.startswith("/") and ".." not in path.split("/"), out
    if tree_name != "tree":
        assert not any("etc/passwd" in r.path for r in server.state.log)


@pytest.mark.timeout(90)
def test_cli_dotdot_treeinfo_never_fetches_outside(server: HostileServer, cache_root: Path) -> None:
    for name in ("dotdot", "absolute"):
        proc = cli(["fetch", server.url("ok", f"{name}/"), "--timeout", str(TIMEOUT)], cache_root)
        assert_clear_cli_error(proc)
    assert not any("etc/passwd" in r.path for r in server.state.log)
    assert_clean_cache(cache_root)


@pytest.mark.timeout(90)
def test_cli_tls_refused_then_insecure_is_loud(tls_server: HostileServer, cache_root: Path) -> None:
    url = tls_server.url("ok", "tree/")
    proc = cli(["fetch", url, "--timeout", str(TIMEOUT)], cache_root)
    assert_clear_cli_error(proc)
    assert "--insecure" in proc.stderr
    proc = cli(["fetch", url, "--timeout", str(TIMEOUT), "--insecure", "--json"], cache_root)
    assert proc.returncode == 0, proc.stderr
    assert "insecure" in proc.stderr.lower() or "not verified" in proc.stderr.lower(), (
        "--insecure must say on stderr that certificates are not checked"
    )
