"""Locations over real loopback servers: directory, file://, http://, https://, ftp://."""

from __future__ import annotations

import io
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _net_helpers import (
    LoopbackHTTP,
    drip,
    drop_after,
    endless,
    ignore_range,
    redirect,
    serve_ftp,
    serve_http,
    stall,
)
from treeboot.errors import LocationError, MetadataError
from treeboot.locate.base import DirLocation, Location, RemoteStat, TreeLocation, safe_relpath
from treeboot.locate.http import _check_redirect
from treeboot.locate.open import open_location
from treeboot.model import Media

BIG = os.urandom(3 * 256 * 1024 + 123)  # a few download chunks plus a tail


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    (root / ".treeinfo").write_text("[general]\nfamily = Test\n")
    (root / "images" / "pxeboot").mkdir(parents=True)
    (root / "images" / "pxeboot" / "vmlinuz").write_bytes(BIG)
    (root / "images" / "odd name+1.txt").write_text("odd\n")
    for i in range(6):
        (root / f"meta{i}").write_text(f"metadata {i}\n")
    return root


@pytest.fixture(scope="module")
def http(tree: Path) -> Iterator[LoopbackHTTP]:
    with serve_http(tree) as srv:
        yield srv


@pytest.fixture(params=["dir", "file-url", "http", "ftp"])
def loc(request: pytest.FixtureRequest, tree: Path, http: LoopbackHTTP) -> Iterator[TreeLocation]:
    if request.param == "ftp":
        with serve_ftp(tree) as ftp, open_location(ftp.url, timeout=10) as opened:
            assert isinstance(opened, TreeLocation)
            yield opened
        return
    spec = {"dir": str(tree), "file-url": tree.as_uri(), "http": http.url}[request.param]
    with open_location(spec, timeout=10) as opened:
        assert isinstance(opened, TreeLocation)
        yield opened


# -- safe_relpath ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "norm"),
    [("images/pxeboot/vmlinuz", "images/pxeboot/vmlinuz"), ("./a//b/", "a/b"), ("", ""),
     (".treeinfo", ".treeinfo"), ("a/..b/c..", "a/..b/c..")],
)
def test_safe_relpath_normalises(path: str, norm: str) -> None:
    assert safe_relpath(path) == norm


@pytest.mark.parametrize(
    "path",
    ["..", "../etc/passwd", "a/../../b", "a/..", "/etc/passwd", "//host/x", "a\\..\\b",
     "..\\x", "a\x00b", "C:/x", "c:x", "a\nb", "a\x7f"],
)
def test_safe_relpath_rejects_escapes(path: str) -> None:
    with pytest.raises(MetadataError):
        safe_relpath(path)


@given(st.text(alphabet="ab./\\:\x00", max_size=12))
def test_safe_relpath_never_escapes(path: str) -> None:
    try:
        norm = safe_relpath(path)
    except MetadataError:
        return
    assert not norm.startswith("/")
    assert ".." not in norm.split("/")
    assert "\\" not in norm and "\x00" not in norm


# -- the reader interface, on every kind of tree ---------------------------------------------


def test_read_exists_size(loc: TreeLocation, tree: Path) -> None:
    assert loc.media == Media.TREE
    assert loc.url.endswith("/")
    assert loc.read(".treeinfo") == b"[general]\nfamily = Test\n"
    assert loc.read("images/odd name+1.txt") == b"odd\n"
    assert loc.read("missing") is None
    assert loc.read("images/missing/deeper") is None
    assert loc.exists("images/pxeboot/vmlinuz")
    assert loc.exists("images")
    assert not loc.exists("nope")
    assert loc.size("images/pxeboot/vmlinuz") == len(BIG)
    assert loc.size("nope") is None
    st = loc.stat("images/pxeboot/vmlinuz")
    assert st is not None and st.size == len(BIG) and st.validator


def test_read_many(loc: TreeLocation) -> None:
    got = loc.read_many(["meta0", "meta1", "missing", "meta0"])
    assert got == {"meta0": b"metadata 0\n", "meta1": b"metadata 1\n", "missing": None}


def test_read_range_and_download(loc: TreeLocation) -> None:
    assert loc.read_range("images/pxeboot/vmlinuz", 1000, 10) == BIG[1000:1010]
    assert loc.read_range("images/pxeboot/vmlinuz", len(BIG) - 4, 10) == BIG[-4:]
    out = io.BytesIO()
    seen: list[tuple[RemoteStat, int]] = []
    progressed: list[int] = []
    n = loc.download(
        "images/pxeboot/vmlinuz", out, progress=progressed.append,
        on_start=lambda st, start: seen.append((st, start)),
    )
    assert n == len(BIG) and out.getvalue() == BIG
    assert sum(progressed) == len(BIG)
    assert len(seen) == 1 and seen[0][0].size == len(BIG) and seen[0][1] == 0
    assert loc.bytes_transferred >= len(BIG)


def test_download_resumes_only_with_matching_validator(loc: TreeLocation) -> None:
    path = "images/pxeboot/vmlinuz"
    st = loc.stat(path)
    assert st is not None
    out = io.BytesIO(BIG[:5000])
    before = loc.bytes_transferred
    n = loc.download(path, out, 5000, if_range=st.validator)
    assert out.getvalue() == BIG and n == len(BIG) - 5000
    assert loc.bytes_transferred - before == len(BIG) - 5000
    stale = io.BytesIO(b"x" * 5000)  # bytes from an older version of the file
    starts: list[int] = []
    loc.download(path, stale, 5000, if_range='"stale"', on_start=lambda s, at: starts.append(at))
    assert stale.getvalue() == BIG and starts == [0]


def test_read_rejects_oversized_file(loc: TreeLocation) -> None:
    with pytest.raises(MetadataError, match="more than the 1000 bytes"):
        loc.read("images/pxeboot/vmlinuz", max_size=1000)


def test_paths_that_escape_are_refused_before_any_io(loc: TreeLocation) -> None:
    for call in (loc.read, loc.exists, loc.size):
        with pytest.raises(MetadataError):
            call("../../etc/passwd")
    with pytest.raises(MetadataError):
        loc.read_many(["meta0", "/etc/passwd"])


# -- open_location dispatch ------------------------------------------------------------------


def test_open_location_kinds(tree: Path) -> None:
    assert isinstance(open_location(str(tree)), DirLocation)
    assert open_location(tree.as_uri()).url == tree.as_uri() + "/"
    with pytest.raises(LocationError, match="does not exist"):
        open_location(str(tree / "nope"))
    with pytest.raises(LocationError, match="another host"):
        open_location("file://elsewhere/srv/tree")
    with pytest.raises(LocationError, match="unsupported location"):
        open_location("gopher://127.0.0.1/tree")


def test_iso_specs_go_to_isolocation(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import treeboot.locate.iso

    calls: list[tuple[str, bool, float]] = []

    def fake_open_iso(spec: str, *, insecure: bool, timeout: float) -> Any:
        calls.append((spec, insecure, timeout))
        return "iso"

    monkeypatch.setattr(treeboot.locate.iso, "open_iso", fake_open_iso)
    iso = tree / "images" / "odd name+1.txt"  # any regular file is taken for an image
    for spec in (str(iso), iso.as_uri(), "http://127.0.0.1:9/x/Fedora.ISO", "https://h/a.iso"):
        assert open_location(spec, insecure=True, timeout=3) == "iso"  # type: ignore[comparison-overlap]
    assert [c[0] for c in calls][-2:] == ["http://127.0.0.1:9/x/Fedora.ISO", "https://h/a.iso"]
    assert all(c[1:] == (True, 3) for c in calls)


def test_iso_without_iso_support(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "treeboot.locate.iso", None)
    with pytest.raises(LocationError, match="ISO support is not available"):
        open_location(str(tree / "meta0"))


def test_location_protocol_is_satisfied(tree: Path) -> None:
    loc: Location = open_location(str(tree))
    with loc:
        assert loc.read("meta1") == b"metadata 1\n"


# -- HTTP specifics ----------------------------------------------------------------------------


@pytest.mark.network
def test_read_many_requests_overlap(tree: Path) -> None:
    """With 200 ms per request, six reads take one round trip: all requests overlap."""
    with serve_http(tree, latency=0.2) as srv, open_location(srv.url) as loc:
        got = loc.read_many([f"meta{i}" for i in range(6)])
        assert all(got.values())
        gets = srv.requests("GET")
    assert len(gets) == 6
    assert max(r.t0 for r in gets) < min(r.t1 for r in gets)


@pytest.mark.network
def test_connection_is_reused_and_range_is_one_request(tree: Path) -> None:
    with serve_http(tree) as srv, open_location(srv.url) as loc:
        assert loc.size("images/pxeboot/vmlinuz") == len(BIG)
        assert loc.read_range("images/pxeboot/vmlinuz", 100, 50) == BIG[100:150]
        assert loc.read("meta2") == b"metadata 2\n"
        assert loc.read("meta2") == b"metadata 2\n"  # memoised
        log = srv.log
    assert [(r.method, r.range) for r in log] == [
        ("HEAD", None), ("GET", "bytes=100-149"), ("GET", None)
    ]
    assert len({r.conn for r in log}) == 1


@pytest.mark.network
def test_http_status_handling(tree: Path) -> None:
    with serve_http(tree) as srv, open_location(srv.url) as loc:
        srv.route("/broken", lambda h: h.send_simple(500, b"oops"))
        srv.route("/hidden", lambda h: h.send_simple(403, b"no"))
        assert loc.read("hidden") is None
        with pytest.raises(LocationError, match="HTTP 500"):
            loc.read("broken")
        with pytest.raises(LocationError, match="does not exist"):
            loc.download("missing", io.BytesIO())


@pytest.mark.network
def test_redirects_followed_up_to_a_limit(tree: Path) -> None:
    with serve_http(tree) as srv, open_location(srv.url) as loc:
        for i in range(3):
            srv.route(f"/hop{i}", redirect(f"/hop{i + 1}"))
        srv.route("/hop3", redirect("/meta3", 301))
        assert loc.read("hop0") == b"metadata 3\n"
        for i in range(12):
            srv.route(f"/far{i}", redirect(f"/far{i + 1}"))
        with pytest.raises(LocationError, match="too many redirects"):
            loc.read("far0")
        srv.route("/ping", redirect("/pong"))
        srv.route("/pong", redirect(srv.url + "ping"))
        with pytest.raises(LocationError, match="redirect loop"):
            loc.read("ping")


@pytest.mark.network
@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://x/"])
def test_redirect_to_another_scheme_is_refused(tree: Path, target: str) -> None:
    with serve_http(tree) as srv, open_location(srv.url) as loc:
        srv.route("/away", redirect(target))
        with pytest.raises(LocationError, match="refusing redirect"):
            loc.read("away")


def test_redirect_scheme_rules() -> None:
    _check_redirect("http://a/x", "https://b/y")  # upgrade: fine
    _check_redirect("https://a/x", "https://b/y")
    with pytest.raises(LocationError, match="https:// must not redirect to http://"):
        _check_redirect("https://a/x", "http://a/x")


@pytest.mark.network
@pytest.mark.timeout(30)
def test_stalled_server_times_out(tree: Path) -> None:
    with serve_http(tree) as srv, open_location(srv.url, timeout=0.5) as loc:
        srv.route("/.treeinfo", stall())
        with pytest.raises(LocationError, match=r"timed out|no data"):
            loc.read(".treeinfo")
        with pytest.raises(LocationError):
            loc.exists(".treeinfo")


@pytest.mark.network
@pytest.mark.timeout(30)
def test_dripping_server_is_given_up(tree: Path) -> None:
    """A byte every 0.2 s never trips a 0.5 s read timeout; the stall guard catches it."""
    with serve_http(tree) as srv, open_location(srv.url, timeout=0.5) as loc:
        srv.route("/.treeinfo", drip(b"[general]\n" * 100, 0.2))
        with pytest.raises(LocationError, match=r"less than 1024 bytes arrived in 0\.5 s"):
            loc.read(".treeinfo")
        srv.route("/slow-kernel", drip(b"k" * 2000, 0.2))
        with pytest.raises(LocationError, match="less than 1024 bytes"):
            loc.download("slow-kernel", io.BytesIO())


@pytest.mark.network
@pytest.mark.timeout(30)
def test_endless_metadata_is_cut_off(tree: Path) -> None:
    """A 'treeinfo' that never ends is refused after max_size, not read to the end."""
    with serve_http(tree) as srv, open_location(srv.url) as loc:
        srv.route("/.treeinfo", endless())
        with pytest.raises(MetadataError, match="more than the 1048576 bytes"):
            loc.read(".treeinfo", max_size=1 << 20)
        assert loc.bytes_transferred < 4 << 20
        srv.route("/declared", endless(declare_length=1 << 30))
        before = loc.bytes_transferred
        with pytest.raises(MetadataError, match="1073741824 bytes"):
            loc.read("declared", max_size=1 << 20)
        assert loc.bytes_transferred == before  # refused on the Content-Length alone


@pytest.mark.network
def test_range_ignored_by_server(tree: Path) -> None:
    with serve_http(tree) as srv, open_location(srv.url) as loc:
        vmlinuz = tree / "images" / "pxeboot" / "vmlinuz"
        srv.route("/old", ignore_range(vmlinuz))
        with pytest.raises(LocationError, match="ignored the Range request"):
            loc.read_range("old", 10, 10)
        st = loc.stat("old")
        out = io.BytesIO(b"junk" * 100)
        loc.download("old", out, 400, if_range=st.validator if st else None)
        assert out.getvalue() == BIG  # restarted cleanly from byte 0


@pytest.mark.network
def test_dropped_connection_is_a_location_error(tree: Path) -> None:
    with serve_http(tree) as srv, open_location(srv.url) as loc:
        srv.route("/cut", drop_after(tree / "images" / "pxeboot" / "vmlinuz", 100_000))
        out = io.BytesIO()
        with pytest.raises(LocationError):
            loc.download("cut", out)
        assert 0 < len(out.getvalue()) <= 100_000


# -- HTTPS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def https_url(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    with serve_http(tree) as srv:
        srv.server.socket = ctx.wrap_socket(srv.server.socket, server_side=True)
        srv.route("/downgrade", redirect(srv.url + "meta0"))  # an http:// URL
        yield srv.url.replace("http://", "https://")


@pytest.mark.network
def test_https_self_signed_needs_insecure(https_url: str) -> None:
    with (
        open_location(https_url, timeout=5) as loc,
        pytest.raises(LocationError, match="CERTIFICATE_VERIFY_FAILED") as err,
    ):
        loc.read("meta0")
    assert "--insecure" in str(err.value.hint)
    with open_location(https_url, insecure=True, timeout=5) as loc:
        assert loc.read("meta0") == b"metadata 0\n"
        with pytest.raises(LocationError, match="https:// must not redirect to http://"):
            loc.read("downgrade")


# -- FTP specifics -------------------------------------------------------------------------------


@pytest.mark.network
def test_ftp_read_many_and_pool(tree: Path) -> None:
    with serve_ftp(tree) as ftp, open_location(ftp.url) as loc:
        got = loc.read_many([f"meta{i}" for i in range(6)] + ["nope"])
        assert got["meta5"] == b"metadata 5\n" and got["nope"] is None
        assert loc.read("meta1") == b"metadata 1\n"  # memoised: no new RETR
        assert sum(1 for p in ftp.retrieved if p.endswith("meta1")) == 1


@pytest.mark.network
def test_ftp_unreachable(tree: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with (
        open_location(f"ftp://127.0.0.1:{port}/tree/", timeout=2) as loc,
        pytest.raises(LocationError, match="cannot open FTP session"),
    ):
        loc.read(".treeinfo")


def test_threads_share_one_location(tree: Path, http: LoopbackHTTP) -> None:
    errors: list[BaseException] = []
    with open_location(http.url) as loc:

        def work() -> None:
            try:
                for i in range(6):
                    assert loc.read_range("images/pxeboot/vmlinuz", i * 1000, 10)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_revalidate_reads_again_and_memoises(loc: TreeLocation, tree: Path) -> None:
    """Without a 304 (these servers never send one) revalidation is a fresh read."""
    first = loc.revalidate(".treeinfo", validator=loc.validator(".treeinfo"))
    assert not first.unchanged and first.data == (tree / ".treeinfo").read_bytes()
    assert loc.read(".treeinfo") == first.data
    gone = loc.revalidate("no-such-file", validator='"x"')
    assert (gone.unchanged, gone.data) == (False, None)


def test_http_revalidation_is_conditional_on_a_strong_etag(http: LoopbackHTTP) -> None:
    with open_location(http.url) as loc:
        assert isinstance(loc, TreeLocation)
        assert loc.read(".treeinfo") is not None
        etag = loc.validator(".treeinfo")
        assert etag and etag.startswith('"')
        http.clear()
        loc.revalidate(".treeinfo", etag)
        loc.revalidate(".treeinfo", "Sat, 01 Jan 2000 00:00:00 GMT")  # a date: never trusted
    sent = [r.headers.get("If-None-Match") for r in http.requests("GET", "/.treeinfo")]
    assert sent == [etag, None]
