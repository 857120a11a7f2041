"""fetch: parallel, resumable, verified downloads into the cache, over real loopback servers."""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from _net_helpers import (
    Handler,
    LoopbackHTTP,
    Route,
    drop_after,
    endless,
    ignore_range,
    serve_ftp,
    serve_http,
)
from _paths import SHARED
from treeboot.devtree import build_treeinfo_tree
from treeboot.download.fetch import _HashingFile, fetch, fetch_file
from treeboot.errors import ChecksumMismatch, FetchError, SignatureError, UsageError
from treeboot.locate.base import DirLocation, RemoteStat
from treeboot.locate.open import open_location
from treeboot.model import Identification, Media, Verified
from treeboot.store.cache import Cache

KERNEL = "images/pxeboot/vmlinuz"
INITRD = "images/pxeboot/initrd.img"


# Runs the CLI with identify.detect replaced by a stub that returns $TREEBOOT_TEST_IDENT, so
# that these tests do not depend on detection (tested elsewhere).
CLI_WITH_STUB_DETECT = """
import json, os, sys, types
from treeboot.model import Identification, Media, Verified
spec = json.loads(os.environ["TREEBOOT_TEST_IDENT"])
def identify_location(loc, *, arch=None, kernel=None, initrd=None, **_):
    loc.read(".treeinfo")
    fields = dict(spec, location=loc.url, media=Media(spec["media"]))
    fields["verified"] = Verified(spec["verified"])
    return Identification(**fields)
def identify(location, *, insecure=False, timeout=30.0, **_):
    from treeboot.locate.base import DirLocation, RemoteStat
    from treeboot.locate.open import open_location
    with open_location(location, insecure=insecure, timeout=timeout) as loc:
        return identify_location(loc)
mod = types.ModuleType("treeboot.detect.identify")
mod.identify, mod.identify_location = identify, identify_location
sys.modules["treeboot.detect.identify"] = mod
from treeboot.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    build_treeinfo_tree(root / "fedora", kernel_size=1 << 20, initrd_size=3 << 20)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private tree a test may modify."""
    return build_treeinfo_tree(tmp_path / "tree", kernel_size=300_000, initrd_size=2 << 20)


@pytest.fixture(scope="module")
def srv(mirror: Path) -> Iterator[LoopbackHTTP]:
    with serve_http(mirror) as server:
        yield server


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def published(tree: Path) -> dict[str, str]:
    return dict(re.findall(r"^(images/\S+) = (sha256:\w+)", (tree / ".treeinfo").read_text(), re.M))


def ident_for(location: str, tree: Path, **kw: Any) -> Identification:
    base = Identification(
        location=location,
        media=Media.TREE,
        os="fedora39",
        family="fedora",
        name="Fedora 39",
        version="39",
        arch="x86_64",
        installer="anaconda",
        kernel=KERNEL,
        initrd=INITRD,
        checksums=published(tree),
        verified=Verified.SHA256,
    )
    return replace(base, **kw)


def image_gets(srv: LoopbackHTTP) -> list[str]:
    images = ("/vmlinuz", "/initrd.img", "/linux", "/initrd.gz")
    return [r.path for r in srv.requests("GET") if r.path.endswith(images)]


def cache_files(cache: Cache) -> dict[str, list[str]]:
    dirs = {"blobs": cache.blobs, "index": cache.index, "tmp": cache.tmp}
    return {k: sorted(p.name for p in d.iterdir()) for k, d in dirs.items()}


# -- the basic promise ----------------------------------------------------------------------


def test_fetch_verifies_and_second_run_transfers_nothing(
    srv: LoopbackHTTP, mirror: Path, cache: Cache
) -> None:
    ident = ident_for(srv.url + "fedora/", mirror / "fedora")
    srv.clear()
    first = fetch(ident, cache=cache, progress=False)
    assert first.verified == Verified.SHA256 and not first.from_cache
    assert first.bytes_downloaded == (1 << 20) + (3 << 20)
    assert first.kernel.path.read_bytes() == (mirror / "fedora" / KERNEL).read_bytes()
    assert first.initrd.path.read_bytes() == (mirror / "fedora" / INITRD).read_bytes()
    assert sorted(image_gets(srv)) == ["/fedora/" + INITRD, "/fedora/" + KERNEL]
    srv.clear()
    second = fetch(ident, cache=cache, progress=False)
    assert second.from_cache and second.bytes_downloaded == 0
    assert second.kernel.path == first.kernel.path
    assert srv.log == []  # a published checksum makes the blob a hit without any request
    assert second.to_json()["verified"] == "sha256"
    assert len(cache_files(cache)["blobs"]) == 2 and cache_files(cache)["tmp"] == []


def test_unverified_files_revalidate_with_head(tree: Path, cache: Cache) -> None:
    with serve_http(tree) as srv:
        ident = ident_for(srv.url, tree, checksums={}, verified=Verified.NONE)
        first = fetch(ident, cache=cache, progress=False)
        assert first.verified == Verified.NONE
        assert [e.verified for e in cache.entries()] == ["none", "none"]
        srv.clear()
        second = fetch(ident, cache=cache, progress=False)
        assert second.from_cache and second.bytes_downloaded == 0
        assert sorted(r.method for r in srv.log) == ["HEAD", "HEAD"]
        (tree / INITRD).write_bytes(b"a new initrd")
        os.utime(tree / INITRD, (1, 1))  # a different Last-Modified/ETag
        third = fetch(ident, cache=cache, progress=False)
        assert third.kernel.from_cache and not third.initrd.from_cache
        assert third.initrd.path.read_bytes() == b"a new initrd"


def test_checksum_mismatch_leaves_cache_clean(tree: Path, cache: Cache) -> None:
    sums = published(tree)
    sums[INITRD] = "sha256:" + "0" * 64
    with (
        serve_http(tree) as srv,
        pytest.raises(ChecksumMismatch, match="the checksum the tree publishes"),
    ):
        fetch(ident_for(srv.url, tree, checksums=sums), cache=cache, progress=False)
    files = cache_files(cache)
    initrd_sha = hashlib.sha256((tree / INITRD).read_bytes()).hexdigest()
    assert initrd_sha not in files["blobs"] and len(files["blobs"]) == 1  # the good kernel
    assert [e.path for e in cache.entries()] == [KERNEL]
    assert files["tmp"] == []


# -- resume ----------------------------------------------------------------------------------


def _interrupted_fetch(srv: LoopbackHTTP, tree: Path, cache: Cache, nbytes: int) -> None:
    srv.route("/" + INITRD, drop_after(tree / INITRD, nbytes))
    with pytest.raises(FetchError, match=f"kept {nbytes} bytes") as err:
        fetch(ident_for(srv.url, tree), cache=cache, progress=False)
    assert "resumes" in str(err.value.hint)
    parts = list(cache.tmp.glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == nbytes


def test_interrupted_download_resumes_with_range(tree: Path, cache: Cache) -> None:
    size = (tree / INITRD).stat().st_size
    with serve_http(tree) as srv:
        _interrupted_fetch(srv, tree, cache, 700_000)
        srv.clear()
        result = fetch(ident_for(srv.url, tree), cache=cache, progress=False)
        (get,) = srv.requests("GET", "/" + INITRD)
    assert get.range == "bytes=700000-" and "If-Range" in get.headers
    assert get.status == 206 and get.bytes == size - 700_000
    assert result.initrd.bytes_downloaded == size - 700_000
    assert result.initrd.verified == Verified.SHA256 and result.kernel.from_cache
    assert result.initrd.path.read_bytes() == (tree / INITRD).read_bytes()
    assert list(cache.tmp.iterdir()) == []


def test_resume_restarts_when_the_file_changed(tree: Path, cache: Cache) -> None:
    with serve_http(tree) as srv:
        _interrupted_fetch(srv, tree, cache, 500_000)
        new = os.urandom(1 << 20)
        (tree / INITRD).write_bytes(new)
        os.utime(tree / INITRD, (2, 2))
        sums = published(tree) | {INITRD: "sha256:" + hashlib.sha256(new).hexdigest()}
        srv.clear()
        result = fetch(ident_for(srv.url, tree, checksums=sums), cache=cache, progress=False)
        (get,) = srv.requests("GET", "/" + INITRD)
    assert get.status == 200 and get.bytes == len(new)  # If-Range did not match: full body
    assert result.initrd.path.read_bytes() == new


def test_resume_restarts_when_server_ignores_range(tree: Path, cache: Cache) -> None:
    with serve_http(tree) as srv:
        _interrupted_fetch(srv, tree, cache, 400_000)
        srv.route("/" + INITRD, ignore_range(tree / INITRD))
        result = fetch(ident_for(srv.url, tree), cache=cache, progress=False)
    assert result.initrd.bytes_downloaded == (tree / INITRD).stat().st_size
    assert result.initrd.path.read_bytes() == (tree / INITRD).read_bytes()


# -- pins, signatures, dest ----------------------------------------------------------------------


def test_pins(srv: LoopbackHTTP, mirror: Path, cache: Cache) -> None:
    ident = ident_for(srv.url + "fedora/", mirror / "fedora", checksums={})
    kernel_sum = published(mirror / "fedora")[KERNEL]
    got = fetch(ident, cache=cache, checksums={"kernel": kernel_sum}, progress=False)
    assert got.kernel.verified == Verified.SHA256 and got.initrd.verified == Verified.NONE
    got = fetch(ident, cache=cache, pins=[kernel_sum], progress=False)
    assert got.kernel.verified == Verified.SHA256
    with pytest.raises(ChecksumMismatch, match="neither the kernel nor the initrd"):
        fetch(ident, cache=cache, pins=["sha256:" + "1" * 64], progress=False)
    other = "sha256:" + hashlib.sha256(b"another initrd").hexdigest()
    with pytest.raises(ChecksumMismatch, match="the checksum you pinned"):
        fetch(ident, cache=cache, checksums={INITRD: other}, progress=False)
    with pytest.raises(UsageError, match="not fetched"):
        fetch(ident, cache=cache, checksums={"images/other": kernel_sum}, progress=False)
    with pytest.raises(UsageError, match="unsupported checksum"):
        fetch(ident, cache=cache, checksums={"kernel": "md5:abc"}, progress=False)


def test_bare_pin_is_checked_before_downloading(tree: Path, cache: Cache) -> None:
    with serve_http(tree) as srv:
        with pytest.raises(ChecksumMismatch, match="neither the kernel's nor the initrd's"):
            fetch(ident_for(srv.url, tree), cache=cache, pins=["sha256:" + "2" * 64])
        assert srv.log == []


def test_require_signature(srv: LoopbackHTTP, mirror: Path, cache: Cache) -> None:
    ident = ident_for(srv.url + "fedora/", mirror / "fedora")
    with pytest.raises(SignatureError, match="no signed chain"):
        fetch(ident, cache=cache, require_signature=True)
    signed = replace(ident, verified=Verified.SIGNED_CHAIN)
    result = fetch(signed, cache=cache, require_signature=True, progress=False)
    assert result.verified == Verified.SIGNED_CHAIN


def test_dest_gets_independent_copies(
    srv: LoopbackHTTP, mirror: Path, cache: Cache, tmp_path: Path
) -> None:
    ident = ident_for(srv.url + "fedora/", mirror / "fedora")
    result = fetch(ident, cache=cache, dest=tmp_path / "out", progress=False)
    assert result.kernel.path == tmp_path / "out" / "vmlinuz"
    assert result.initrd.path == tmp_path / "out" / "initrd.img"
    with open(result.initrd.path, "ab") as f:  # e.g. appending a cpio archive in place
        f.write(b"injected")
    again = fetch(ident, cache=cache, progress=False)
    assert again.from_cache and again.initrd.path.read_bytes().endswith(b"injected") is False


# -- every kind of location ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dir", "ftp"])
def test_fetch_from_dir_and_ftp(kind: str, tree: Path, cache: Cache) -> None:
    if kind == "dir":
        result = fetch(ident_for(str(tree), tree), cache=cache, progress=False)
    else:
        with serve_ftp(tree) as ftp:
            result = fetch(ident_for(ftp.url, tree), cache=cache, progress=False)
            assert sorted(ftp.retrieved) == sorted(str(tree / p) for p in (INITRD, KERNEL))
    assert result.verified == Verified.SHA256
    assert result.initrd.path.read_bytes() == (tree / INITRD).read_bytes()


def test_fetch_from_iso(cache: Cache) -> None:
    iso = SHARED / "fixtures" / "fakemedia" / "fake-f26-netinst.iso"
    if not iso.is_file():
        pytest.skip(f"{iso} not found: needs ../shared's fakemedia fixtures")
    ident = Identification(
        location=str(iso), media=Media.ISO, os=None, family=None, name=None, version=None,
        arch=None, installer=None, kernel="isolinux/vmlinuz", initrd="isolinux/initrd.img",
    )
    result = fetch(ident, cache=cache, progress=False)
    assert result.verified == Verified.NONE and result.kernel.size >= 0
    with open_location(str(iso)) as loc:
        assert result.initrd.path.read_bytes() == loc.read("isolinux/initrd.img")


def test_fetch_file_in_threads_downloads_once(tree: Path, cache: Cache) -> None:
    expected = published(tree)[INITRD]
    with serve_http(tree, latency=0.1) as srv, open_location(srv.url) as loc:
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(fetch_file(loc, INITRD, expected)))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(srv.requests("GET", "/" + INITRD)) == 1
    assert len(results) == 4 and len({r.path for r in results}) == 1
    assert sum(not r.from_cache for r in results) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("declared", "message"),
    [(None, "larger than 1000000 bytes (length unannounced)"), (1 << 40, "larger than 2147483648")],
)
def test_endless_artifact_is_refused(
    tree: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch, declared: int | None, message: str
) -> None:
    import treeboot.download.fetch

    monkeypatch.setattr(treeboot.download.fetch, "MAX_UNANNOUNCED_SIZE", 1_000_000)
    with serve_http(tree) as srv, open_location(srv.url) as loc:
        srv.route("/" + INITRD, endless(declare_length=declared))
        with pytest.raises(FetchError, match=re.escape(message)):
            fetch_file(loc, INITRD, published(tree)[INITRD], cache=cache)
        assert loc.bytes_transferred < 10_000_000
    assert list(cache.tmp.iterdir()) == [] and list(cache.blobs.iterdir()) == []


def slowly(fspath: Path | None, rate: int) -> Route:
    """``fspath`` at ``rate`` bytes/s with its length and the ETag the server gives it
    otherwise; None: an endless chunked body with neither."""

    def route(h: Handler) -> None:
        body = fspath.read_bytes() if fspath else b""
        h.send_response(200)
        if fspath:
            st = fspath.stat()
            h.send_header("Content-Length", str(len(body)))
            h.send_header("ETag", f'"{st.st_mtime_ns:x}-{st.st_size:x}"')
        else:
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.close_connection = True
        step = max(1, rate // 50)
        for off in itertools.count(0, step) if not fspath else range(0, len(body), step):
            if h.server.stopping.wait(0.02):
                return
            chunk = body[off : off + step] if fspath else b"\0" * step
            h.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if not fspath else chunk)

    return route


@pytest.mark.timeout(60)
def test_unannounced_length_has_a_deadline(tree: Path, cache: Cache) -> None:
    """An endless body without a length ends after 5 x timeout, long before the size cap."""
    with serve_http(tree) as srv:
        srv.route("/" + INITRD, slowly(None, rate=1 << 20))
        with pytest.raises(FetchError, match="announced no length and was still sending") as err:
            fetch(ident_for(srv.url, tree), cache=cache, progress=False, timeout=0.3)
    assert err.value.hint and "--max-time" in err.value.hint
    assert cache_files(cache)["tmp"] == []


@pytest.mark.timeout(60)
def test_max_time_stops_a_slow_transfer_that_then_resumes(tree: Path, cache: Cache) -> None:
    size = (tree / INITRD).stat().st_size
    with serve_http(tree) as srv:
        srv.route("/" + INITRD, slowly(tree / INITRD, rate=size // 4))
        with pytest.raises(FetchError, match=r"did not end within --max-time 0\.5 s") as err:
            fetch(ident_for(srv.url, tree), cache=cache, progress=False, max_time=0.5)
        assert err.value.hint and "resumes" in err.value.hint
        del srv.server.routes["/" + INITRD]
        kept = [p for p in cache.tmp.glob("*.part") if p.stat().st_size]
        assert kept, "the partial download was not kept"
        result = fetch(ident_for(srv.url, tree), cache=cache, progress=False)
    assert 0 < result.initrd.bytes_downloaded < size and result.verified == Verified.SHA256


class ShortStat(DirLocation):
    """A location announcing 1000 bytes less than it sends (a broken FTP SIZE, say)."""

    def _stat(self, rel: str) -> RemoteStat | None:
        st = super()._stat(rel)
        return st and RemoteStat((st.size or 0) - 1000, st.validator)


def test_body_longer_than_announced_stops(tree: Path, cache: Cache) -> None:
    with ShortStat(tree) as loc, pytest.raises(FetchError, match="sent more than the") as err:
        fetch_file(loc, INITRD, published(tree)[INITRD], cache=cache)
    assert f"{(tree / INITRD).stat().st_size - 1000} bytes it announced" in str(err.value)
    assert cache_files(cache) == {"blobs": [], "index": [], "tmp": []}


# -- full disk ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root), else skip."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the monkeypatched test covers ENOSPC)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_a_clean_fetch_error(tree: Path, tiny_fs: Path) -> None:
    cache = Cache(tiny_fs / "cache")
    with serve_http(tree) as srv, pytest.raises(FetchError, match="no space left") as err:
        fetch(ident_for(srv.url, tree), cache=cache, progress=False)
    assert err.value.exit_code == 5
    assert list(cache.tmp.glob("*.part")) == []
    big = hashlib.sha256((tree / INITRD).read_bytes()).hexdigest()
    assert big not in cache_files(cache)["blobs"]


def test_enospc_on_write(tree: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = _HashingFile.write

    def write(self: _HashingFile, data: bytes) -> int:
        if self.tell() > 100_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(_HashingFile, "write", write)
    with pytest.raises(FetchError, match="no space left"):
        fetch(ident_for(str(tree), tree), cache=cache, progress=False)
    assert list(cache.tmp.iterdir()) == [] and cache.entries() == []


# -- the command line, in real processes -------------------------------------------------------


def _cli_env(tree: Path, cache_dir: Path, **ident: Any) -> dict[str, str]:
    data = ident_for("", tree, **ident).to_json()
    return {**os.environ, "TREEBOOT_CACHE": str(cache_dir), "TREEBOOT_TEST_IDENT": json.dumps(data)}


def _cli(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} | kw
    return subprocess.run(
        [sys.executable, "-c", CLI_WITH_STUB_DETECT, *args], env=env, text=True, timeout=120, **kw
    )


@pytest.mark.slow
def test_eight_parallel_fetch_processes(tree: Path, tmp_path: Path) -> None:
    env = _cli_env(tree, tmp_path / "cache")
    with serve_http(tree, latency=0.05) as srv:
        argv = [sys.executable, "-c", CLI_WITH_STUB_DETECT, "fetch", srv.url, "--json"]
        procs = [
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(8)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        gets = image_gets(srv)
    assert [p.returncode for p in procs] == [0] * 8, [e.decode()[-500:] for _, e in outs]
    assert sorted(gets) == ["/" + INITRD, "/" + KERNEL]  # each artifact downloaded once
    results = [json.loads(o) for o, _ in outs]
    assert len({r["initrd"] for r in results}) == 1
    assert sum(r["bytes_downloaded"] for r in results) == sum(
        (tree / p).stat().st_size for p in (KERNEL, INITRD)
    )
    assert len(list((tmp_path / "cache" / "blobs" / "sha256").iterdir())) == 2


def test_cli_fetch_piped_has_no_progress_bar(tree: Path, tmp_path: Path) -> None:
    env = _cli_env(tree, tmp_path / "cache")
    with serve_http(tree) as srv:
        proc = _cli(["fetch", srv.url, "--json", "--dest", str(tmp_path / "d")], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = json.loads(proc.stdout)
    assert out["verified"] == "sha256" and out["kernel"] == str(tmp_path / "d" / "vmlinuz")
    assert set(out["artifacts"]) == {"kernel", "initrd"}


def test_cli_fetch_on_a_terminal_shows_progress(tree: Path, tmp_path: Path) -> None:
    env = _cli_env(tree, tmp_path / "cache") | {"TERM": "xterm", "COLUMNS": "120"}
    leader, follower = pty.openpty()
    try:
        with serve_http(tree) as srv:
            proc = _cli(["fetch", srv.url], env, stderr=follower)
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0
    assert b"kernel vmlinuz" in shown and b"initrd initrd.img" in shown and b" MB" in shown
    assert "verified: sha256" in proc.stdout


def test_cli_fetch_errors_and_usage(tree: Path, tmp_path: Path) -> None:
    env = _cli_env(tree, tmp_path / "cache", checksums={INITRD: "sha256:" + "3" * 64})
    with serve_http(tree) as srv:
        bad = _cli(["fetch", srv.url, "--json"], env)
        usage = _cli(["fetch", srv.url, "--checksum", "kernel=md5:00"], env)
    assert bad.returncode == 6 and "sha256 is" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stdout == ""
    assert usage.returncode == 2 and "unsupported checksum" in usage.stderr
    assert _cli(["fetch"], env).returncode == 2


def test_cli_identify(tree: Path, tmp_path: Path) -> None:
    env = _cli_env(tree, tmp_path / "cache")
    text = _cli(["identify", str(tree)], env)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("Fedora 39") and "kernel:" in text.stdout
    js = _cli(["identify", str(tree), "--json"], env)
    assert json.loads(js.stdout)["kernel"] == KERNEL
    gone = _cli(["identify", str(tmp_path / "nope")], env)
    assert gone.returncode == 4 and "does not exist" in gone.stderr


def test_cli_identify_cannot_identify(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from treeboot.cli.main import main
    from treeboot.errors import DetectionError

    def identify(location: str, **kw: Any) -> Identification:
        raise DetectionError("no install tree here", tried=[".treeinfo", "MANIFEST"])

    stub = types.ModuleType("treeboot.detect.identify")
    stub.identify = identify  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "treeboot.detect.identify", stub)
    assert main(["identify", "/nowhere"]) == 3
    err = capsys.readouterr().err
    assert "no install tree here" in err and ".treeinfo, MANIFEST" in err


def test_prune_while_fetching(tree: Path, cache: Cache) -> None:
    """`cache prune --all` during a download leaves it alone; the fetch succeeds."""
    done: list[Any] = []
    with serve_http(tree, latency=0.5) as srv:
        t = threading.Thread(
            target=lambda: done.append(fetch(ident_for(srv.url, tree), cache=cache, progress=False))
        )
        t.start()
        deadline = time.monotonic() + 30
        while not list(cache.tmp.glob("*.part")) and time.monotonic() < deadline:
            time.sleep(0.01)
        report = cache.prune(everything=True)
        t.join(60)
    assert len(report.busy) >= 1
    assert done and done[0].initrd.path.exists() and done[0].verified == Verified.SHA256


# -- integration with the real detection, on a tree built from the debian-installer package ------


@pytest.fixture(scope="module")
def debian_mirror(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from treeboot.devtree import DI_IMAGES, build_debian_tree

    if not (DI_IMAGES / "amd64" / "text").is_dir():
        pytest.skip("debian-installer-12-netboot-amd64 is not installed")
    root = tmp_path_factory.mktemp("debmirror")
    tree = build_debian_tree(root)
    return root, tree.relative_to(root).as_posix() + "/"


def test_identify_and_fetch_debian_tree(debian_mirror: tuple[Path, str], cache: Cache) -> None:
    root, rel = debian_mirror
    package = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
    with serve_http(root, latency=0.02) as srv:
        first = fetch(srv.url + rel, cache=cache, progress=False)
        assert first.identification.os == "debian12"
        assert first.verified == Verified.SHA256 and first.bytes_downloaded > 40_000_000
        assert first.kernel.path.read_bytes() == (package / "linux").read_bytes()
        assert first.initrd.path.read_bytes() == (package / "initrd.gz").read_bytes()
        srv.clear()
        second = fetch(srv.url + rel, cache=cache, progress=False)
        assert second.from_cache and second.bytes_downloaded == 0
        assert not [r for r in srv.log if r.path.endswith(("/linux", "/initrd.gz"))]
