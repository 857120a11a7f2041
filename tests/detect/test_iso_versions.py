"""ISO identification past the installed osinfo-db: volume-id patterns learnt from its rules.

Descriptors are built the way the media are published (xorriso writes the primary volume
descriptor: volume id, system id, publisher, application id), from the naming schemes the
distributions document. The images are empty, as in the field reports: only the descriptor
speaks. Releases before and after the installed (Debian 12, 20221203) database.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _iso_helpers import Content, build_iso, patch_pvd
from treeboot.detect import _volpatterns as vol
from treeboot.detect._volnaming import compatible
from treeboot.detect.iso import identify_iso, name_descriptor
from treeboot.detect.osinfo import OsinfoDB, build_index, load_osinfo
from treeboot.detect.treeinfo import match_treeinfo
from treeboot.errors import DetectionError
from treeboot.locate.iso import IsoInfo, open_iso
from treeboot.model import Identification

# A file so that xorriso writes a real directory tree; nothing in it names the OS.
_EMPTY: dict[str, Content] = {"README.TXT": "install medium\n"}


def identify_descriptor(tmp_path: Path, volume_id: str, **pvd: str) -> Identification:
    iso = build_iso(
        tmp_path / "m.iso",
        _EMPTY,
        volume_id=volume_id,
        system_id=pvd.get("system_id", "LINUX"),
        publisher=pvd.get("publisher"),
        application_id=pvd.get("application_id"),
    )
    if "application_id" in pvd:  # xorriso upper-cases it; published media keep their case
        patch_pvd(iso, 574, 128, pvd["application_id"])  # ECMA-119 8.4.20
    with open_iso(str(iso)) as loc:
        return identify_iso(loc)


def info(volume_id: str, system_id: str = "LINUX", publisher: str = "", app: str = "") -> IsoInfo:
    return IsoInfo(system_id, volume_id, publisher, app, 1000, 2048, 2048000, True, True,
                   False, False)  # fmt: skip


# (volume id, other descriptor fields) -> (os, arch, version, known_to_database)
RHEL = "LINUX"
AFTER_THE_DATABASE = [
    # Red Hat: RHEL-<major>-<minor>-0-BaseOS-<arch> (the DVD's label, .treeinfo-free images)
    *(
        (
            f"RHEL-9-{m}-0-BaseOS-{a}",
            {"system_id": "PPC" if a == "ppc64le" else RHEL},
            f"rhel9.{m}",
            a,
            f"9.{m}",
        )
        for m in (5, 6, 7)
        for a in ("x86_64", "aarch64", "ppc64le", "s390x")
    ),
    ("RHEL-10-0-BaseOS-x86_64", {}, "rhel10.0", "x86_64", "10.0"),
    # Fedora Silverblue is its own OS in osinfo-db: Fedora-SB-ostree-<arch>-<release>
    ("Fedora-SB-ostree-x86_64-43", {}, "silverblue43", "x86_64", "43"),
    ("Fedora-SB-ostree-aarch64-41", {}, "silverblue41", "aarch64", "41"),
    ("Fedora-S-dvd-x86_64-41", {}, "fedora41", "x86_64", "41"),
    ("Fedora-E-dvd-aarch64-42", {}, "fedora42", "aarch64", "42"),
    # AlmaLinux-<major>-<minor>-<arch>-dvd; Kitten is its own OS (rules/volume_ids.toml)
    ("AlmaLinux-10-0-x86_64-dvd", {}, "almalinux10", "x86_64", "10"),
    ("AlmaLinux-Kitten-10-aarch64", {}, "almalinux-kitten10", "aarch64", "10"),
    ("AlmaLinux-Kitten-10-x86_64-dvd", {}, "almalinux-kitten10", "x86_64", "10"),
    # NetBSD: NETBSD_<major><minor> (100 is 10.0)
    ("NETBSD_91", {"system_id": "NetBSD"}, "netbsd9.1", None, "9.1"),
    ("NETBSD_94", {"system_id": "NetBSD"}, "netbsd9.4", None, "9.4"),
    ("NETBSD_100", {"system_id": "NetBSD"}, "netbsd10.0", None, "10.0"),
    ("NETBSD_101", {"system_id": "NetBSD"}, "netbsd10.1", None, "10.1"),
    # Alpine: alpine-<flavour> <x.y.z> <arch>
    ("alpine-std 3.20.3 x86_64", {}, "alpinelinux3.20", "x86_64", "3.20"),
    ("alpine-virt 3.21.0 aarch64", {}, "alpinelinux3.21", "aarch64", "3.21"),
    # Ubuntu: "Ubuntu-Server 24.04.1 LTS amd64", "Ubuntu 24.10 amd64"
    ("Ubuntu-Server 24.04.1 LTS amd64", {}, "ubuntu24.04", "x86_64", "24.04"),
    ("Ubuntu 24.10 amd64", {}, "ubuntu24.10", "x86_64", "24.10"),
    ("Ubuntu-Server 24.04.2 LTS arm64", {}, "ubuntu24.04", "aarch64", "24.04"),
    # Rocky-<major>-<minor>-<arch>-dvd
    ("Rocky-10-0-x86_64-dvd", {}, "rocky10", "x86_64", "10"),
    ("Rocky-10-1-aarch64-dvd", {}, "rocky10", "aarch64", "10"),
    # Oracle Linux: OL-<major>-<minor>-0-BaseOS-<arch>
    ("OL-9-5-0-BaseOS-x86_64", {}, "ol9.5", "x86_64", "9.5"),
    ("OL-8-10-0-BaseOS-aarch64", {}, "ol8.10", "aarch64", "8.10"),
    # openSUSE Leap; SLE 15 installer
    (
        "openSUSE-Leap-15.6-DVD-x86_64",
        {"publisher": "SUSE LINUX GmbH"},
        "opensuse15.6",
        "x86_64",
        "15.6",
    ),
    (
        "openSUSE-Leap-15.5-NET-x86_64",
        {"publisher": "SUSE LINUX GmbH"},
        "opensuse15.5",
        "x86_64",
        "15.5",
    ),
    ("SLE-15-SP6-Full-x86_64", {}, "sle15sp6", "x86_64", "15.6"),
    # FreeBSD <major>_<minor>_RELEASE_<ARCH>_<MEDIUM>; OpenBSD/<arch> <x.y> Install CD
    ("14_2_RELEASE_AMD64_CD", {"system_id": "FreeBSD"}, "freebsd14.2", "x86_64", "14.2"),
    ("14_1_RELEASE_AMD64_DVD", {"system_id": "FreeBSD"}, "freebsd14.1", "x86_64", "14.1"),
    (
        "OpenBSD/amd64   7.6 Install CD",
        {
            "system_id": "OpenBSD",
            "publisher": "Copyright (c) 2024 Theo de Raadt, The OpenBSD project",
            "application_id": "OpenBSD 7.6 amd64 Install CD",
        },
        "openbsd7.6",
        "x86_64",
        "7.6",
    ),
    # Endless OS: Endless-OS-<major>-<minor>-<build>-<language edition>
    (
        "Endless-OS-6-0-250101-base",
        {"publisher": "ENDLESS OS FOUNDATION LLC"},
        "eos6.0",
        "x86_64",
        "6.0",
    ),
    (
        "Endless-OS-5-1-240312-pt_BR",
        {"publisher": "ENDLESS OS FOUNDATION LLC"},
        "eos5.1",
        "x86_64",
        "5.1",
    ),
    # ALT: "ALT <edition> <x.y> <arch>" -- the edition word changes
    ("ALT Education 10.4 x86_64", {"publisher": "BASEALT LTD"}, "alt10.4", "x86_64", "10.4"),
    ("ALT Kworkstation 10.2 x86_64", {"publisher": "BASEALT LTD"}, "alt10.2", "x86_64", "10.2"),
    # Slackware's DVD keeps its volume id; the version is in the application id
    ("SlackDVD", {"application_id": "Slackware64 15.0 DVD"}, "slackware15.0", "x86_64", "15.0"),
    # Trisquel, Mageia
    ("trisquel 11.0 amd64", {}, "trisquel11", "x86_64", "11.0"),
    ("trisquel 11.0.1 amd64", {}, "trisquel11", "x86_64", "11.0"),
    ("Mageia-9-x86_64", {}, "mageia9", "x86_64", "9"),
    # Debian: "Debian <x.y.z> <arch> n" (netinst) and the testing suite
    ("Debian 12.8.0 amd64 n", {}, "debian12", "x86_64", "12"),
    ("Debian 13.1.0 arm64 n", {}, "debian13", "aarch64", "13"),
    # arch spellings of the descriptor normalised to osinfo's: p64el is Debian's cut ppc64el
    ("Debian 12.8.0 p64el n", {}, "debian12", "ppc64le", "12"),
    ("Debian 12.8.0 armhf n", {}, "debian12", "armv7l", "12"),
    ("Debian 12.8.0 i386 n", {}, "debian12", "i686", "12"),
]

BEFORE_THE_DATABASE = [
    ("RHEL-9-0-0-BaseOS-x86_64", {}, "rhel9.0", "x86_64", "9.0"),
    ("Fedora-S-dvd-x86_64-37", {}, "fedora37", "x86_64", "37"),
    ("Fedora-SB-ostree-x86_64-36", {}, "silverblue36", "x86_64", "36"),
    ("AlmaLinux-9-1-x86_64-dvd", {}, "almalinux9", "x86_64", "9"),
    ("NETBSD_90", {"system_id": "NetBSD"}, "netbsd9.0", None, "9.0"),
    ("alpine-std 3.17.0 x86_64", {}, "alpinelinux3.17", "x86_64", "3.17"),
    ("Ubuntu-Server 22.04.1 LTS amd64", {}, "ubuntu22.04", "x86_64", "22.04"),
    ("13_1_RELEASE_AMD64_CD", {"system_id": "FreeBSD"}, "freebsd13.1", "x86_64", "13.1"),
    ("Debian testing amd64 1", {}, "debiantesting", "x86_64", "testing"),
    ("Debian testing arm64 n", {}, "debiantesting", "aarch64", "testing"),
    ("Rocky-9-1-x86_64-dvd", {}, "rocky9", "x86_64", "9"),
]


@pytest.fixture(scope="module")
def db() -> OsinfoDB:
    db = load_osinfo()
    if db.version is None or db.get("fedora37") is None:
        pytest.skip("needs Debian 12's osinfo-db (20221203)")
    return db


@pytest.mark.parametrize(
    ("volume_id", "pvd", "os", "arch", "version"),
    AFTER_THE_DATABASE,
    ids=[c[0] for c in AFTER_THE_DATABASE],
)
def test_release_after_the_database(
    db: OsinfoDB, tmp_path: Path, volume_id: str, pvd: dict[str, str], os: str,
    arch: str | None, version: str,
) -> None:  # fmt: skip
    ident = identify_descriptor(tmp_path, volume_id, **pvd)
    assert (ident.os, ident.arch, ident.version) == (os, arch, version)
    assert ident.known_to_database is (db.get(os) is not None)
    assert "iso9660:volume-id" in ident.evidence
    assert ident.extra["osinfo_learnt_from"]


@pytest.mark.parametrize(
    ("volume_id", "pvd", "os", "arch", "version"),
    BEFORE_THE_DATABASE,
    ids=[c[0] for c in BEFORE_THE_DATABASE],
)
def test_release_the_database_knows(
    db: OsinfoDB, tmp_path: Path, volume_id: str, pvd: dict[str, str], os: str,
    arch: str | None, version: str,
) -> None:  # fmt: skip
    ident = identify_descriptor(tmp_path, volume_id, **pvd)
    assert (ident.os, ident.arch) == (os, arch)
    assert ident.version == version or ident.version == db.get(os).version  # type: ignore[union-attr]
    assert ident.known_to_database


def test_version_carried_by_the_application_id_is_the_evidence(tmp_path: Path) -> None:
    ident = identify_descriptor(tmp_path, "SlackDVD", application_id="Slackware64 15.0 DVD")
    assert ident.os == "slackware15.0" and not ident.known_to_database
    assert "iso9660:application-id" in ident.evidence


def test_placeholder_loses_to_the_spelled_version(db: OsinfoDB) -> None:
    # osinfo-db's rhel9-unknown catches RHEL-9-7-0-...; the descriptor says 9.7.
    matches, match, learnt = name_descriptor(db, info("RHEL-9-7-0-BaseOS-x86_64"))
    assert any(m.entry.short_id == "rhel9-unknown" for m in matches)
    assert match is None and learnt is not None and learnt.short_id == "rhel9.7"


def test_unanchored_database_rule_does_not_name_an_older_release(db: OsinfoDB) -> None:
    # "Fedora-S-dvd-x86_64-37" is searched, so it also matches ...-371.
    _, match, learnt = name_descriptor(db, info("Fedora-S-dvd-x86_64-371"))
    assert match is None and learnt is not None and learnt.short_id == "fedora371"


def test_unknown_descriptor_stays_unknown(tmp_path: Path) -> None:
    with pytest.raises(DetectionError):
        identify_descriptor(tmp_path, "MY_OWN_SPIN_2024")


# -- a family with a placeholder: "-unknown" only when the version is not in the descriptor ----

_OS_XML = """\
<libosinfo version="0.0.1">
  <os id="http://example.org/examplos/{version}">
    <short-id>{short_id}</short-id>
    <name>ExamplOS {version}</name>
    <version>{version}</version>
    <vendor>Example</vendor>
    <family>linux</family>
    <distro>examplos</distro>
    <media arch="x86_64">
      <iso><volume-id>{volume_id}</volume-id><system-id>LINUX</system-id></iso>
    </media>
  </os>
</libosinfo>
"""


@pytest.fixture
def example_db(tmp_path: Path) -> OsinfoDB:
    root = tmp_path / "osinfo"
    (root / "os" / "example.org").mkdir(parents=True)
    entries = [
        ("1.0", "examplos1.0", "EXAMPLOS-1-0-x86_64"),
        ("1.1", "examplos1.1", "EXAMPLOS-1-1-x86_64"),
        ("unknown", "examplos-unknown", "EXAMPLOS-.*-x86_64"),
    ]
    for version, short_id, volume_id in entries:
        text = _OS_XML.format(version=version, short_id=short_id, volume_id=volume_id)
        (root / "os" / "example.org" / f"{short_id}.xml").write_text(text)
    return build_index([str(root)])


def test_family_only_when_the_version_is_absent(example_db: OsinfoDB) -> None:
    _, match, learnt = name_descriptor(example_db, info("EXAMPLOS-devel-x86_64"))
    assert learnt is None and match is not None and match.entry.short_id == "examplos-unknown"
    _, match, learnt = name_descriptor(example_db, info("EXAMPLOS-2-5-x86_64"))
    assert match is None and learnt is not None
    assert (learnt.short_id, learnt.version, learnt.entry) == ("examplos2.5", "2.5", None)
    assert learnt.evidence == ("iso9660:volume-id", "iso9660:system-id")


# -- the property: version digits perturbed -> that version or unknown, never another family --

PERTURBED = [
    # (template, other fields, family, version template)
    ("RHEL-{a}-{b}-0-BaseOS-x86_64", {}, "rhel", "{a}.{b}"),
    ("Fedora-S-dvd-x86_64-{a}", {}, "fedora", "{a}"),
    ("Fedora-SB-ostree-aarch64-{a}", {}, "fedora", "{a}"),
    ("NETBSD_{a}{b1}", {"system_id": "NetBSD"}, "netbsd", "{a}.{b1}"),
    ("{a}_{b}_RELEASE_AMD64_CD", {"system_id": "FreeBSD"}, "freebsd", "{a}.{b}"),
    ("openSUSE-Leap-{a}.{b}-DVD-x86_64", {"publisher": "SUSE LINUX GmbH"}, "opensuse", "{a}.{b}"),
    ("Ubuntu-Server {a}.{b2} LTS amd64", {}, "ubuntu", "{a}.{b2}"),
    ("alpine-std {a}.{b}.0 x86_64", {}, "alpinelinux", "{a}.{b}"),
    ("Endless-OS-{a}-{b}-230101-fr", {"publisher": "ENDLESS OS FOUNDATION LLC"}, "eos", "{a}.{b}"),
    ("OL-{a}-{b}-0-BaseOS-x86_64", {}, "ol", "{a}.{b}"),
    ("AlmaLinux-{a}-{b}-x86_64-dvd", {}, "almalinux", "{a}"),
    ("Debian {a}.{b}.0 amd64 n", {}, "debian", "{a}"),
]


@settings(max_examples=300, deadline=None)
@given(
    case=st.sampled_from(PERTURBED),
    a=st.integers(min_value=1, max_value=99),
    b=st.integers(min_value=0, max_value=40),
    b1=st.integers(min_value=0, max_value=9),
)
def test_perturbed_version_digits_never_change_the_family(
    case: tuple[str, dict[str, str], str, str], a: int, b: int, b1: int
) -> None:
    template, pvd, family, version_template = case
    values = {"a": a, "b": b, "b1": b1, "b2": f"{b:02d}"}
    descriptor = info(
        template.format(**values),
        system_id=pvd.get("system_id", "LINUX"),
        publisher=pvd.get("publisher", ""),
    )
    want = version_template.format(**values)
    _, match, learnt = name_descriptor(load_osinfo(), descriptor)
    if learnt is not None:
        assert learnt.distro == family, (descriptor.volume_id, learnt)
        assert compatible(learnt.version, want), (descriptor.volume_id, learnt.version, want)
    elif match is not None:
        entry = match.entry
        assert entry.distro == family, (descriptor.volume_id, entry.short_id)
        assert entry.is_placeholder or compatible(entry.version, want), (
            descriptor.volume_id, entry.short_id, want)  # fmt: skip


# -- trees: editions osinfo-db models as their own OS, arch spellings --------------------------


def _treeinfo(version: str, *, variant: str | None, arch: str = "x86_64") -> str:
    variant_line = f"variant = {variant}" if variant else ""
    return textwrap.dedent(f"""\
        [general]
        family = Fedora
        version = {version}
        arch = {arch}
        {variant_line}
        [images-{arch.strip()}]
        kernel = images/pxeboot/vmlinuz
        initrd = images/pxeboot/initrd.img
        """)


@pytest.mark.parametrize(
    ("version", "variant", "os", "known"),
    [
        ("40", "Silverblue", "silverblue40", False),
        ("37", "Silverblue", "silverblue37", True),
        ("41", "Everything", "fedora41", False),
        ("37", "Server", "fedora37", True),
    ],
)
def test_tree_variant_names_its_own_os(
    db: OsinfoDB, version: str, variant: str, os: str, known: bool
) -> None:
    got = match_treeinfo(_treeinfo(version, variant=variant), db=db)
    assert (got.os.short_id, got.os.known) == (os, known)


def test_productmd_tree_variants_and_release_name(db: OsinfoDB) -> None:
    text = textwrap.dedent("""\
        [release]
        name = Fedora
        short = Fedora
        version = 41
        [tree]
        arch = x86_64_v2
        variants = Silverblue
        platforms = x86_64_v2
        [images-x86_64_v2]
        kernel = images/pxeboot/vmlinuz
        initrd = images/pxeboot/initrd.img
        """)
    got = match_treeinfo(text, db=db)
    assert (got.os.short_id, got.arch) == ("silverblue41", "x86_64")


@pytest.mark.parametrize(
    ("written", "arch"),
    [("i386", "i686"), ("armhfp", "armv7l"), ("x86_64_v2", "x86_64"), ("aarch64 ", "aarch64")],
)
def test_tree_arch_spellings(db: OsinfoDB, written: str, arch: str) -> None:
    text = _treeinfo("37", variant="Server", arch=written)
    assert match_treeinfo(text, db=db).arch == arch


def test_every_volume_ids_rule_loads() -> None:
    rules = vol.load_volume_rules()
    assert rules and all(r.template and r.version_fields for r in rules)
    for r in rules:
        for _, rx in r.compiled():
            assert "v0" in rx.groupindex or "arch" in rx.groupindex


def test_learnt_patterns_are_cached_beside_the_index(
    example_db: OsinfoDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREEBOOT_CACHE", str(tmp_path / "cache"))
    learnt = vol.patterns_of(example_db)
    files = list((tmp_path / "cache" / "osinfo").glob("volpatterns-*.json"))
    assert len(files) == 1
    again = build_index(list(example_db.paths))  # a new database object: read from the file
    assert vol.patterns_of(again) == learnt
    files[0].write_text("{not json")  # a damaged cache is relearnt, not an error
    assert vol.patterns_of(build_index(list(example_db.paths))) == learnt
