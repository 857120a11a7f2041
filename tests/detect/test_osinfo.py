"""osinfo-db index: parsing the installed XML, the JSON cache, version naming, media matching."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from treeboot.detect import osinfo
from treeboot.detect.osinfo import OsinfoDB, load_osinfo, name_template, render_version

SYSTEM_DB = Path(osinfo.DEFAULT_DB_PATH)


@pytest.fixture
def db() -> OsinfoDB:
    if not (SYSTEM_DB / "os").is_dir():
        pytest.skip("osinfo-db is not installed")
    return load_osinfo()


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache dir and no in-process memo."""
    monkeypatch.setattr(osinfo, "_LOADED", {})
    monkeypatch.setenv("TREEBOOT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "osinfo"


def _small_db(dest: Path, *xmls: str) -> Path:
    if not (SYSTEM_DB / "os").is_dir():
        pytest.skip("osinfo-db is not installed")
    (dest / "os").mkdir(parents=True)
    shutil.copy(SYSTEM_DB / "VERSION", dest / "VERSION")
    for rel in xmls:
        (dest / "os" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SYSTEM_DB / "os" / rel, dest / "os" / rel)
    return dest


def test_installed_database(db: OsinfoDB) -> None:
    assert db.version == "20221203"
    assert len(db.entries) > 500
    f37 = db.get("fedora37")
    assert f37 is not None and (f37.distro, f37.version, f37.family) == ("fedora", "37", "linux")
    assert db.get("debian12") is None and db.get("fedora38") is None  # the brief's premise
    assert db.get("debianbuster") is db.get("debian10")  # every <short-id> is an alias
    assert {e.short_id for e in db.by_distro("debian")} >= {"debian9", "debian11"}


def test_tree_media_and_resources(db: OsinfoDB) -> None:
    d11 = db.get("debian11")
    assert d11 is not None
    amd64 = next(t for t in d11.trees if t.arch == "x86_64")
    assert amd64.kernel == "current/images/netboot/debian-installer/amd64/linux"
    assert amd64.url == "http://deb.debian.org/debian/dists/bullseye/main/installer-amd64"
    f37 = db.get("fedora37")
    assert f37 is not None
    rule = next(t for t in f37.trees if t.treeinfo_variant == "Server" and t.arch == "x86_64")
    assert (rule.treeinfo_family, rule.treeinfo_version) == ("Fedora", "37")
    live = next(m for m in f37.medias if m.live)
    assert live.volume_id == "Fedora-WS-Live-37.*" and not live.installer_script
    res = f37.resources_for("x86_64")
    assert res is not None and res.min_ram_mib == 1024 and res.rec_storage_gib == 20.0


def test_codenames(db: OsinfoDB) -> None:
    d11 = db.find_codename("debian", "Bullseye")
    jammy = db.find_codename("ubuntu", "jammy")
    assert d11 is not None and d11.short_id == "debian11" and d11.codename == "bullseye"
    assert jammy is not None and jammy.short_id == "ubuntu22.04"
    assert db.find_codename("debian", "bookworm") is None  # newer than 20221203: rules TOML


@pytest.mark.parametrize(
    ("distro", "version", "expected"),
    [
        ("fedora", "39", ("fedora39", False)),
        ("fedora", "37", ("fedora37", True)),
        ("debian", "12", ("debian12", False)),
        ("debian", "11.7", ("debian11", True)),  # point releases share the major's id
        ("rhel", "9.2", ("rhel9.2", False)),
        ("rhel", "9.0", ("rhel9.0", True)),
        ("opensuse", "15.5", ("opensuse15.5", False)),
        ("ubuntu", "24.04", ("ubuntu24.04", False)),
        ("ubuntu", "22.04.3", ("ubuntu22.04", True)),
        ("sles", "12.6", ("sles12sp6", False)),
        ("sles", "11.4", ("sles11sp4", True)),
        ("sle", "15.5", ("sle15sp5", False)),
        ("alpinelinux", "3.19.1", ("alpinelinux3.19", False)),
        ("mageia", "9", ("mageia9", False)),
        ("fedora", "Rawhide", ("fedora-rawhide", True)),
        ("opensuse", "tumbleweed", ("opensusetumbleweed", True)),
        ("newdistro", "1.0", ("newdistro1.0", False)),
    ],
)
def test_derive_short_id(
    db: OsinfoDB, distro: str, version: str, expected: tuple[str, bool]
) -> None:
    assert db.derive_short_id(distro, version) == expected


def test_derive_short_id_learns_from_a_series(db: OsinfoDB) -> None:
    stream = [e for e in db.by_distro("centos") if e.short_id.startswith("centos-stream")]
    assert db.derive_short_id("centos", "10", series=stream) == ("centos-stream10", False)
    assert db.derive_short_id("centos", "10") == ("centos10", False)


def test_module_level_derive_short_id(db: OsinfoDB) -> None:
    assert osinfo.derive_short_id("fedora", "41") == ("fedora41", False)


def test_derived_display_names(db: OsinfoDB) -> None:
    assert db.derive_name(db.by_distro("fedora"), "41") == "Fedora Linux 41"
    assert db.derive_name(db.by_distro("sles"), "12.6") == "SUSE Linux Enterprise Server 12 SP6"


@pytest.mark.parametrize(
    ("text", "version", "rendered"),
    [
        ("rhel9.1", "9.1", "rhel9.2"),
        ("sles12sp5", "12.5", "sles12sp6"),
        ("debian6", "6.0", "debian12"),  # trailing ".0" left out
        ("ubuntu22.04", "22.04", "ubuntu24.04"),
        ("centos7.0", "7", None),  # text after the version: not a template
        ("fedora-rawhide", "Rawhide", None),
    ],
)
def test_name_templates(text: str, version: str, rendered: str | None) -> None:
    t = name_template(text, version)
    new = {"rhel9.1": "9.2", "sles12sp5": "12.6", "debian6": "12", "ubuntu22.04": "24.04"}
    assert (render_version(t, new[text]) if t else None) == rendered


def test_match_media(db: OsinfoDB) -> None:
    assert {m.entry.short_id for m in db.match_media("Fedora-S-dvd-x86_64-37")} == {"fedora37"}
    hits = db.match_media("Debian 11.5.0 amd64 n", arch="x86_64")
    assert [m.entry.short_id for m in hits] == ["debian11"]
    assert hits[0].media.kernel == "install.amd/vmlinuz"
    assert db.match_media("NOT AN OS") == []


# -- the index cache --------------------------------------------------------------------------


def test_index_is_cached_as_json_and_reused(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (SYSTEM_DB / "os").is_dir():
        pytest.skip("osinfo-db is not installed")
    t0 = time.perf_counter()
    cold = load_osinfo()
    t1 = time.perf_counter()
    (index,) = fresh.glob("index-*.json")
    assert json.loads(index.read_text())["version"] == cold.version
    monkeypatch.setattr(osinfo, "_LOADED", {})

    def no_parsing(paths: object) -> OsinfoDB:
        raise AssertionError("the XML was parsed again")

    monkeypatch.setattr(osinfo, "build_index", no_parsing)
    t2 = time.perf_counter()
    warm = load_osinfo()
    t3 = time.perf_counter()
    assert warm.entries == cold.entries and warm.version == cold.version
    with capsys.disabled():  # for the record, not asserted (machines differ)
        print(f"\nosinfo index: cold {1e3 * (t1 - t0):.0f} ms, warm {1e3 * (t3 - t2):.0f} ms")


def test_index_rebuilt_when_the_database_changes(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dbdir = _small_db(tmp_path / "db", "fedoraproject.org/fedora-37.xml")
    monkeypatch.setenv("OSINFO_DB_PATH", str(dbdir))
    assert [e.short_id for e in load_osinfo().entries] == ["fedora37"]
    _small_db(tmp_path / "more", "debian.org/debian-11.xml")
    shutil.move(tmp_path / "more" / "os" / "debian.org", dbdir / "os" / "debian.org")
    assert {e.short_id for e in load_osinfo().entries} == {"fedora37", "debian11"}
    assert len(list(fresh.glob("index-*.json"))) == 1  # one file per database path


def test_corrupt_index_is_rebuilt(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dbdir = _small_db(tmp_path / "db", "fedoraproject.org/fedora-37.xml")
    monkeypatch.setenv("OSINFO_DB_PATH", str(dbdir))
    load_osinfo()
    (index,) = fresh.glob("index-*.json")
    index.write_text('{"format": 2, "key": "x", "entries": [{"bogus": 1}')
    monkeypatch.setattr(osinfo, "_LOADED", {})
    assert load_osinfo().get("fedora37") is not None
    index.write_text(json.dumps({**json.loads(index.read_text()), "entries": [{"bogus": 1}]}))
    monkeypatch.setattr(osinfo, "_LOADED", {})
    assert load_osinfo().get("fedora37") is not None


def test_unwritable_cache_still_works(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dbdir = _small_db(tmp_path / "db", "fedoraproject.org/fedora-37.xml")
    monkeypatch.setattr(osinfo, "_LOADED", {})
    monkeypatch.setenv("OSINFO_DB_PATH", str(dbdir))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TREEBOOT_CACHE", str(blocker))
    assert load_osinfo().get("fedora37") is not None


def test_several_database_paths_are_merged(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a = _small_db(tmp_path / "a", "fedoraproject.org/fedora-37.xml")
    b = _small_db(tmp_path / "b", "debian.org/debian-11.xml")
    monkeypatch.setenv("OSINFO_DB_PATH", os.pathsep.join([str(a), str(b)]))
    assert {e.short_id for e in load_osinfo().entries} == {"fedora37", "debian11"}


def test_no_database_is_an_empty_one(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSINFO_DB_PATH", "/nonexistent/osinfo")
    empty = load_osinfo()
    assert empty.entries == () and empty.version is None
    assert empty.derive_short_id("fedora", "39") == ("fedora39", False)


def test_broken_xml_file_is_skipped(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dbdir = _small_db(tmp_path / "db", "fedoraproject.org/fedora-37.xml")
    (dbdir / "os" / "fedoraproject.org" / "broken.xml").write_text("<libosinfo><os id=")
    monkeypatch.setenv("OSINFO_DB_PATH", str(dbdir))
    assert [e.short_id for e in load_osinfo().entries] == ["fedora37"]
