"""ISO images as Locations: names, reads, remote Range access, damaged images."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import pytest

from _iso_helpers import build_iso, debian_netinst_files, fakemedia, sha256
from _net_helpers import ignore_range, serve_http
from treeboot.errors import IsoError, LocationError, MetadataError, TreebootError, UsageError
from treeboot.locate.iso import IsoLocation, open_iso
from treeboot.locate.open import open_location
from treeboot.model import Media


@pytest.fixture(scope="module")
def names_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("names") / "names.iso"
    return build_iso(
        out,
        {
            "install.amd/vmlinuz": b"kernel-bytes",
            "Docs/ReadMe.Long-Name.txt": b"hello",
            "boot/grub/grub.cfg": b"set default=0\n",
            "hello.txt": b"hello world\n",
        },
        volume_id="NAMES_TEST",
        publisher="TEST PUBLISHER",
        application_id="TEST APP",
    )


@pytest.fixture(scope="module")
def debian_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("debian") / "debian-12.4.0-amd64-netinst.iso"
    return build_iso(
        out,
        debian_netinst_files(),
        volume_id="Debian 12.4.0 amd64 n",
        boot_image="isolinux/isolinux.bin",
    )


def test_volume_descriptor_facts(names_iso: Path) -> None:
    with open_iso(str(names_iso)) as loc:
        assert loc.media is Media.ISO
        info = loc.info
        assert info.volume_id == "NAMES_TEST"
        assert info.system_id == "LINUX"
        assert info.publisher == "TEST PUBLISHER"
        assert info.application_id == "TEST APP"
        assert info.volume_space_size * 2048 == info.volume_size
        assert info.image_size == names_iso.stat().st_size
        assert info.joliet and info.rock_ridge and not info.el_torito
        assert info.to_json()["volume_id"] == "NAMES_TEST"


def test_el_torito_is_reported(debian_iso: Path) -> None:
    with open_iso(str(debian_iso)) as loc:
        assert loc.info.el_torito
        assert loc.info.el_torito_platforms == ("x86",)


def test_rock_ridge_names_are_preferred_and_lookup_falls_back(names_iso: Path) -> None:
    with open_iso(str(names_iso)) as loc:
        assert loc.read("Docs/ReadMe.Long-Name.txt") == b"hello"
        assert loc.read("docs/readme.long-name.txt") == b"hello"  # case-insensitive fallback
        assert loc.read("./install.amd//vmlinuz") == b"kernel-bytes"
        assert loc.listdir("") is not None
        assert sorted(loc.listdir("") or []) == ["Docs", "boot", "hello.txt", "install.amd"]
        assert loc.listdir("hello.txt") is None
        assert loc.exists("boot/grub") and loc.size("boot/grub") is None
        assert loc.size("hello.txt") == 12
        assert loc.read("nope") is None and not loc.exists("nope")
        assert "install.amd/vmlinuz" in set(loc.walk())


def test_iso9660_level_names_without_rock_ridge_or_joliet(tmp_path: Path) -> None:
    iso = build_iso(
        tmp_path / "plain.iso",
        {"isolinux/vmlinuz": b"k", "readme.txt": b"r"},
        volume_id="PLAIN",
        joliet=False,
        rock_ridge=False,
    )
    with open_iso(str(iso)) as loc:
        assert not loc.info.rock_ridge and not loc.info.joliet
        assert loc.read("isolinux/vmlinuz") == b"k"  # stored as ISOLINUX/VMLINUZ.;1
        assert loc.read("README.TXT") == b"r"


def test_joliet_names_of_a_windows_fixture() -> None:
    with open_iso(str(fakemedia("fake-win7.iso"))) as loc:
        assert not loc.info.rock_ridge and loc.info.joliet
        assert loc.exists("fake-virtinst-iso.txt")  # Joliet name
        assert loc.exists("FAKE-VIRTINST-ISO.TXT")
        assert loc.exists("boot/etfsboot.com")
        assert loc.info.publisher == "MICROSOFT CORPORATION"


def test_read_range_and_limits(names_iso: Path) -> None:
    with open_iso(str(names_iso)) as loc:
        assert loc.read_range("hello.txt", 6, 100) == b"world\n"
        assert loc.read_range("hello.txt", 50, 10) == b""
        with pytest.raises(MetadataError):
            loc.read("hello.txt", max_size=4)
        with pytest.raises(LocationError):
            loc.read_range("missing", 0, 1)
        with pytest.raises(MetadataError):
            loc.read("../etc/passwd")
        with pytest.raises(ValueError):
            loc.read_range("hello.txt", -1, 2)


def test_download_streams_the_file_and_counts_bytes(debian_iso: Path, tmp_path: Path) -> None:
    from _iso_helpers import DEBIAN_KERNEL

    with open_iso(str(debian_iso)) as loc:
        before = loc.bytes_transferred
        dest = tmp_path / "vmlinuz"
        with dest.open("wb") as f:
            n = loc.download("install.amd/vmlinuz", f)
        assert n == DEBIAN_KERNEL.stat().st_size
        assert loc.bytes_transferred - before == n
        assert sha256(dest) == sha256(DEBIAN_KERNEL)


def test_download_resumes_only_with_matching_validator(names_iso: Path) -> None:
    with open_iso(str(names_iso)) as loc:
        st = loc.stat("hello.txt")
        assert st is not None and st.size == 12 and st.validator
        buf = io.BytesIO(b"hello ")
        loc.download("hello.txt", buf, offset=6, if_range=st.validator)
        assert buf.getvalue() == b"hello world\n"
        buf = io.BytesIO(b"XXXXXX")
        loc.download("hello.txt", buf, offset=6, if_range="stale")
        assert buf.getvalue() == b"hello world\n"


def test_open_location_dispatches_isos(names_iso: Path) -> None:
    with open_location(str(names_iso)) as loc:
        assert isinstance(loc, IsoLocation)
    with open_location(names_iso.as_uri()) as loc:
        assert loc.media is Media.ISO


def test_unsupported_scheme_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        open_iso("ftp://127.0.0.1/x.iso")
    with pytest.raises(UsageError):
        open_iso(str(tmp_path))
    with pytest.raises(LocationError):
        open_iso(str(tmp_path / "missing.iso"))


# --------------------------------------------------------------------------- damaged images


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, not an ISO\n" * 10, bytes(random.Random(1).randbytes(200_000))],
    ids=["empty", "text", "random"],
)
def test_non_iso_files_give_iso_error(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "not.iso"
    f.write_bytes(content)
    with pytest.raises(IsoError) as e:
        open_iso(str(f))
    assert e.value.exit_code == 3
    assert "not an ISO9660 image" in str(e.value)


def test_truncated_image(debian_iso: Path, tmp_path: Path) -> None:
    data = debian_iso.read_bytes()
    for cut in (17 * 2048, 19 * 2048, len(data) // 2):
        bad = tmp_path / f"cut{cut}.iso"
        bad.write_bytes(data[:cut])
        with pytest.raises(IsoError) as e:
            open_iso(str(bad))
        assert e.value.hint


def _patch_extent(data: bytearray, old_lba: int, new_lba: int) -> int:
    """Rewrite every directory record extent field (both-endian) ``old_lba`` -> ``new_lba``."""
    needle = struct.pack("<I", old_lba) + struct.pack(">I", old_lba)
    repl = struct.pack("<I", new_lba) + struct.pack(">I", new_lba)
    count = 0
    pos = data.find(needle)
    while pos != -1:
        data[pos : pos + 8] = repl
        count += 1
        pos = data.find(needle, pos + 8)
    return count


@pytest.mark.parametrize(
    "path, message",
    [("hello.txt", "outside the image"), ("boot/grub", "")],
    ids=["file-record", "directory-record"],
)
def test_record_pointing_outside_the_image(
    names_iso: Path, tmp_path: Path, path: str, message: str
) -> None:
    with open_iso(str(names_iso)) as loc:
        entry = loc.entry(path)
        assert entry is not None
        lba = entry.extents[0][0] // 2048
    data = bytearray(names_iso.read_bytes())
    assert _patch_extent(data, lba, 0x00FFFFF0) >= 1
    bad = tmp_path / "outside.iso"
    bad.write_bytes(bytes(data))
    with pytest.raises(IsoError) as e:
        open_iso(str(bad))
    assert message in str(e.value)


def test_mutated_descriptors_never_escape_as_tracebacks(tmp_path: Path) -> None:
    """Random damage to the descriptors and directories: an ISO or an IsoError, nothing else."""
    base = fakemedia("fake-centos65-label.iso").read_bytes()
    rng = random.Random(20240601)
    bad = tmp_path / "mutant.iso"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(60):
        data = bytearray(base)
        for _ in range(rng.randint(1, 12)):
            pos = rng.randrange(16 * 2048, 40 * 2048)
            data[pos] = rng.randrange(256)
        bad.write_bytes(bytes(data))
        try:
            with open_iso(str(bad)) as loc:
                for path in list(loc.walk())[:20]:
                    loc.read(path, max_size=1 << 20)
            outcomes["ok"] += 1
        except TreebootError as e:
            assert isinstance(e, IsoError | LocationError | MetadataError)
            outcomes["error"] += 1
    assert sum(outcomes.values()) == 60


# --------------------------------------------------------------------------- remote


@pytest.mark.network
def test_remote_iso_reads_little_and_counts_bytes(debian_iso: Path) -> None:
    from _iso_helpers import DEBIAN_INITRD, DEBIAN_KERNEL

    with serve_http(debian_iso.parent) as srv:
        url = srv.url + debian_iso.name
        with open_iso(url) as loc:
            assert loc.url == url
            assert loc.info.volume_id == "Debian 12.4.0 amd64 n"
            assert loc.read(".disk/info", max_size=4096) is not None
            opened = loc.bytes_transferred
            assert opened < 512 * 1024  # descriptors and directories, not the image
            kernel, initrd = io.BytesIO(), io.BytesIO()
            loc.download("install.amd/vmlinuz", kernel)
            loc.download("install.amd/initrd.gz", initrd)
            assert kernel.getvalue() == DEBIAN_KERNEL.read_bytes()
            assert initrd.getvalue() == DEBIAN_INITRD.read_bytes()
            payload = DEBIAN_KERNEL.stat().st_size + DEBIAN_INITRD.stat().st_size
            assert loc.bytes_transferred <= 1.1 * loc.bytes_requested
            assert loc.bytes_transferred < payload + 512 * 1024
            served = sum(r.bytes for r in srv.log)
            assert served == loc.bytes_transferred
            assert all(r.status == 206 for r in srv.log)
            assert len({r.conn for r in srv.log}) == 1  # keep-alive


@pytest.mark.network
def test_remote_server_ignoring_range_is_refused(debian_iso: Path) -> None:
    with serve_http(debian_iso.parent) as srv:
        srv.route("/" + debian_iso.name, ignore_range(debian_iso))
        with pytest.raises(LocationError) as e:
            open_iso(srv.url + debian_iso.name)
        assert "Range" in str(e.value)
        assert sum(r.bytes for r in srv.log) < debian_iso.stat().st_size


@pytest.mark.network
def test_remote_missing_and_non_iso(tmp_path: Path) -> None:
    (tmp_path / "junk.iso").write_bytes(b"<html>not an iso</html>" * 2000)
    (tmp_path / "empty.iso").write_bytes(b"")
    with serve_http(tmp_path) as srv:
        with pytest.raises(LocationError):
            open_iso(srv.url + "missing.iso")
        with pytest.raises(IsoError):
            open_iso(srv.url + "junk.iso")
        with pytest.raises(IsoError):
            open_iso(srv.url + "empty.iso")
