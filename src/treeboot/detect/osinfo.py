"""osinfo-db (the ecosystem's OS database) as a compact, cached index of frozen dataclasses.

Reads the XML that Debian's ``osinfo-db`` package installs under ``/usr/share/osinfo``
(or ``$OSINFO_DB_PATH``). Only what treeboot needs is kept: tree rules (treeinfo matching and
kernel/initrd paths), media rules (ISO volume descriptor regexes and kernel/initrd paths) and
resource minimums.

CONTRACT (detect.py, isodetect.py and the install pipeline rely on it):

    db = load_osinfo()                      # cached; rebuilt when the XML changes
    db.version                              # e.g. "20221203"
    db.entries                              # tuple[OsEntry, ...]
    db.get(short_id) -> OsEntry | None
    db.by_distro(distro) -> list[OsEntry]   # e.g. "fedora", "debian", "rhel", "opensuse"

Also offered: :meth:`OsinfoDB.derive_short_id` (and the module-level :func:`derive_short_id`),
which names a version the database does not know yet the way its family names versions
(``fedora37`` -> ``fedora41``, ``sles12sp5`` -> ``sles12sp6``), :meth:`OsinfoDB.match_media`
(libosinfo's ISO matching) and :meth:`OsinfoDB.find_codename`.

The index is a JSON file under ``$TREEBOOT_CACHE/osinfo/`` (default: the platformdirs user
cache dir), keyed by the database paths, their ``VERSION`` and directory mtimes, so a package
upgrade rebuilds it. JSON rather than pickle: the cache dir is writable, and loading it must
not run code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

if TYPE_CHECKING:  # the XML parser is loaded only to rebuild the index (a cold run)
    import xml.etree.ElementTree as ET

log = logging.getLogger(__name__)

DEFAULT_DB_PATH = "/usr/share/osinfo"
INDEX_FORMAT = 2  # bump when the dataclasses change
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


@dataclass(frozen=True)
class TreeRule:
    arch: str  # osinfo arch: x86_64, aarch64, i686, ppc64le, s390x, armv7l, riscv64, "all"
    treeinfo_family: str | None  # regex matched against .treeinfo [general]/[release] family
    treeinfo_variant: str | None
    treeinfo_version: str | None  # regex
    treeinfo_arch: str | None
    kernel: str | None  # relative to the tree
    initrd: str | None
    url: str | None  # the tree URL osinfo records (mirror layout hint)


@dataclass(frozen=True)
class MediaRule:
    arch: str
    volume_id: str | None  # regex, as osinfo-db writes it
    system_id: str | None
    publisher_id: str | None
    application_id: str | None
    volume_size: int | None
    kernel: str | None
    initrd: str | None
    live: bool = False
    installer_script: bool = True
    variant: str | None = None


@dataclass(frozen=True)
class Resources:
    arch: str
    min_ram_mib: int | None = None
    min_vcpus: int | None = None
    min_storage_gib: float | None = None
    rec_ram_mib: int | None = None
    rec_vcpus: int | None = None
    rec_storage_gib: float | None = None


@dataclass(frozen=True)
class OsEntry:
    short_id: str  # first <short-id>
    short_ids: tuple[str, ...]  # all of them
    id: str  # URI, e.g. http://fedoraproject.org/fedora/37
    name: str
    version: str | None
    distro: str | None  # <distro>: fedora, rhel, centos, debian, ubuntu, opensuse, sles, ...
    family: str | None  # <family>: linux, winnt, freebsd, ...
    vendor: str | None
    release_date: str | None
    eol_date: str | None
    trees: tuple[TreeRule, ...] = ()
    medias: tuple[MediaRule, ...] = ()
    resources: tuple[Resources, ...] = field(default=())
    derives_from: str | None = None
    codename: str | None = None  # <codename>: "bullseye", "Jammy Jellyfish", "Plow"

    def resources_for(self, arch: str) -> Resources | None:
        for r in self.resources:
            if r.arch == arch:
                return r
        for r in self.resources:
            if r.arch == "all":
                return r
        return None

    @property
    def is_placeholder(self) -> bool:
        """``fedora-unknown``, ``rhel9-unknown``: catch-alls for versions newer than the db."""
        return self.short_id.endswith("-unknown") or "unknown" in (self.version or "")


# -- version naming ---------------------------------------------------------------------------

_NUMERIC = re.compile(r"\d+(?:\.\d+)*")


def version_key(version: str | None) -> tuple[int, ...] | None:
    """``"9.10"`` -> ``(9, 10)``; None for non-numeric versions (``"rawhide"``)."""
    if version is None or not _NUMERIC.fullmatch(version):
        return None
    return tuple(int(c) for c in version.split("."))


@dataclass(frozen=True)
class NameTemplate:
    """How a family spells a version: ``sles12sp5`` is prefix ``sles``, separators ``("sp",)``."""

    prefix: str
    seps: tuple[str, ...]

    @property
    def parts(self) -> int:
        return len(self.seps) + 1

    def render(self, components: Sequence[str]) -> str:
        out = self.prefix + components[0]
        for sep, comp in zip(self.seps, components[1:], strict=False):
            out += sep + comp
        return out


def name_template(text: str, version: str) -> NameTemplate | None:
    """Find the numeric components of ``version`` at the end of ``text``, in order.

    ``("rhel9.1", "9.1")`` -> ``rhel{0}.{1}``; ``("debian6", "6.0")`` -> ``debian{0}`` (trailing
    zero components may be left out); ``("centos7.0", "7")`` -> None (text after the version).
    """
    comps = version.split(".")
    while comps:
        pattern = r"(.*?\D|)" + "".join(
            (r"(\D+?)" if i else "") + re.escape(c) for i, c in enumerate(comps)
        )
        m = re.fullmatch(pattern, text)
        if m:
            return NameTemplate(m.group(1), tuple(m.groups()[1:]))
        if comps[-1].strip("0") != "" or len(comps) == 1:
            return None
        comps = comps[:-1]
    return None


def _pick_template(examples: Sequence[tuple[str, str]], parts: int) -> NameTemplate | None:
    """From (text, version) examples, newest first: the majority prefix's best template."""
    templates = [t for text, v in examples if (t := name_template(text, v)) is not None]
    if not templates:
        return None
    prefix = Counter(t.prefix for t in templates).most_common(1)[0][0]
    mine = [t for t in templates if t.prefix == prefix]
    fitting = [t for t in mine if t.parts <= parts]
    if fitting:
        return fitting[0]  # newest that does not need invented components
    return min(mine, key=lambda t: t.parts)


def render_version(template: NameTemplate, version: str) -> str:
    comps = version.split(".")[: template.parts]
    comps += ["0"] * (template.parts - len(comps))
    return template.render(comps)


# -- the database -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        log.debug("osinfo regex %r is not valid in Python; ignored", pattern)
        return None


def regex_search(pattern: str | None, value: str | None) -> bool:
    """libosinfo's ``match_regex``: no pattern matches anything; an unanchored search."""
    if pattern is None:
        return True
    if value is None:
        return False
    rx = _regex(pattern)
    return bool(rx and rx.search(value))


def regex_fullmatch(pattern: str | None, value: str | None) -> bool:
    if pattern is None or value is None:
        return pattern is None
    rx = _regex(pattern)
    return bool(rx and rx.fullmatch(value))


@dataclass(frozen=True)
class MediaMatch:
    entry: OsEntry
    media: MediaRule


class OsinfoDB:
    """The loaded database: entries plus lookups (see the module docstring)."""

    def __init__(self, entries: Iterable[OsEntry], version: str | None, paths: Sequence[str]):
        self._entries: tuple[OsEntry, ...] | None = tuple(entries)
        self.version = version
        self.paths = tuple(paths)
        self._raw: list[dict[str, Any]] = []
        self._decoded: list[OsEntry | None] = list(self._entries)
        self._by_id: dict[str, int] = {}
        self._by_distro: dict[str, list[int]] = {}
        for i, e in enumerate(self._entries):
            self._index(i, e.short_ids, e.distro)

    @classmethod
    def from_raw(
        cls, raw: list[dict[str, Any]], version: str | None, paths: Sequence[str]
    ) -> OsinfoDB:
        """A database over the index's JSON entries, each decoded when first asked for: a warm
        ``treeboot install`` looks up one entry, not 800 (30 ms before QEMU starts)."""
        db = cls((), version, paths)
        db._entries, db._raw, db._decoded = None, raw, [None] * len(raw)
        for i, d in enumerate(raw):
            db._index(i, d["short_ids"], d.get("distro"))
        return db

    def _index(self, i: int, short_ids: Iterable[str], distro: str | None) -> None:
        for sid in short_ids:
            self._by_id.setdefault(sid, i)
        if distro:
            self._by_distro.setdefault(distro, []).append(i)

    def _entry(self, i: int) -> OsEntry:
        e = self._decoded[i]
        if e is None:
            e = self._decoded[i] = _entry_from_json(self._raw[i])
        return e

    @property
    def entries(self) -> tuple[OsEntry, ...]:
        if self._entries is None:
            self._entries = tuple(self._entry(i) for i in range(len(self._decoded)))
        return self._entries

    def __repr__(self) -> str:
        return f"OsinfoDB(version={self.version!r}, entries={len(self._decoded)})"

    def get(self, short_id: str) -> OsEntry | None:
        i = self._by_id.get(short_id)
        return None if i is None else self._entry(i)

    def by_distro(self, distro: str) -> list[OsEntry]:
        return [self._entry(i) for i in self._by_distro.get(distro, ())]

    def newest_first(self, entries: Iterable[OsEntry]) -> list[OsEntry]:
        """Numeric versions, newest first (placeholders and named versions left out)."""
        numeric = [e for e in entries if not e.is_placeholder and version_key(e.version)]
        return sorted(
            numeric, key=lambda e: (version_key(e.version), e.release_date or ""), reverse=True
        )

    def derive_short_id(
        self, distro: str, version: str, *, series: Iterable[OsEntry] | None = None
    ) -> tuple[str, bool]:
        """Name ``version`` of ``distro`` the way the family names its versions.

        Returns ``(short_id, known_to_database)``. The spelling is learnt from the family's
        newest entries (``series`` if given, e.g. only the ``centos-stream*`` ones), so
        ``("fedora", "41")`` gives ``("fedora41", False)`` with a 2022 database and
        ``("debian", "11.7")`` gives ``("debian11", True)``. A version already in the
        database keeps its exact id; a non-numeric version is looked up by ``<version>``.
        """
        pool = list(series) if series is not None else self.by_distro(distro)
        exact = [e for e in pool if (e.version or "").lower() == version.lower()]
        if version_key(version) is None:
            if exact:
                return exact[0].short_id, True
            return f"{distro}{version.lower()}", False
        examples = [(sid, e.version or "") for e in self.newest_first(pool) for sid in e.short_ids]
        template = _pick_template(examples, len(version.split(".")))
        if template is None:
            return (exact[0].short_id, True) if exact else (f"{distro}{version}", False)
        short_id = render_version(template, version)
        return short_id, self.get(short_id) is not None

    def derive_name(self, entries: Sequence[OsEntry], version: str) -> str | None:
        """A display name for a derived version, in the style of the newest entry's name."""
        for e in self.newest_first(entries):
            t = name_template(e.name, e.version or "")
            if t is not None:
                return render_version(t, version)
        return None

    def find_codename(self, distro: str, codename: str) -> OsEntry | None:
        """The entry whose ``<codename>`` (first word, case-insensitive) is ``codename``."""
        want = codename.strip().lower()
        for e in self.by_distro(distro):
            if e.codename and e.codename.split()[0].lower() == want:
                return e
        return None

    def match_media(
        self,
        volume_id: str | None,
        *,
        system_id: str | None = None,
        publisher_id: str | None = None,
        application_id: str | None = None,
        volume_size: int | None = None,
        arch: str | None = None,
    ) -> list[MediaMatch]:
        """Media rules matching an ISO's primary volume descriptor, like libosinfo does.

        Every field a rule gives must match (unanchored regex search on the trimmed value;
        ``volume-size`` exactly); rules without any ISO field never match.
        """
        found = [
            MediaMatch(e, m)
            for e in self.entries
            for m in e.medias
            if _media_matches(m, volume_id, system_id, publisher_id, application_id, volume_size)
            and (arch is None or m.arch in (arch, "all"))
        ]
        return found


def _media_matches(
    m: MediaRule,
    volume_id: str | None,
    system_id: str | None,
    publisher_id: str | None,
    application_id: str | None,
    volume_size: int | None,
) -> bool:
    if not (m.volume_id or m.system_id or m.publisher_id or m.application_id):
        return False
    fields = [
        (m.volume_id, volume_id),
        (m.system_id, system_id),
        (m.publisher_id, publisher_id),
        (m.application_id, application_id),
    ]
    if not all(regex_search(p, (v or "").strip() or None) for p, v in fields):
        return False
    return not (m.volume_size and volume_size is not None and m.volume_size != volume_size)


# -- XML -> dataclasses -----------------------------------------------------------------------


def _text(el: ET.Element, tag: str) -> str | None:
    """First child ``tag`` without ``xml:lang`` (the untranslated one), stripped."""
    for child in el.findall(tag):
        if _XML_LANG not in child.attrib:
            return (child.text or "").strip() or None
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _sub(el: ET.Element | None, tag: str) -> str | None:
    return _text(el, tag) if el is not None else None


def _tree(el: ET.Element) -> TreeRule:
    ti = el.find("treeinfo")
    return TreeRule(
        arch=el.get("arch", "all"),
        treeinfo_family=_sub(ti, "family"),
        treeinfo_variant=_sub(ti, "variant"),
        treeinfo_version=_sub(ti, "version"),
        treeinfo_arch=_sub(ti, "arch"),
        kernel=_text(el, "kernel"),
        initrd=_text(el, "initrd"),
        url=_text(el, "url"),
    )


def _media(el: ET.Element) -> MediaRule:
    iso = el.find("iso")
    variant = el.find("variant")
    return MediaRule(
        arch=el.get("arch", "all"),
        volume_id=_sub(iso, "volume-id"),
        system_id=_sub(iso, "system-id"),
        publisher_id=_sub(iso, "publisher-id"),
        application_id=_sub(iso, "application-id"),
        volume_size=_int(_sub(iso, "volume-size")),
        kernel=_text(el, "kernel"),
        initrd=_text(el, "initrd"),
        live=el.get("live") == "true",
        installer_script=el.get("installer-script") != "false",
        variant=variant.get("id") if variant is not None else None,
    )


def _resources(el: ET.Element) -> Resources:
    def get(kind: str, tag: str) -> int | None:
        sub = el.find(kind)
        return _int(_text(sub, tag)) if sub is not None else None

    def mib(v: int | None) -> int | None:
        return v // (1024 * 1024) if v else None

    def gib(v: int | None) -> float | None:
        return round(v / 1024**3, 2) if v else None

    return Resources(
        arch=el.get("arch", "all"),
        min_ram_mib=mib(get("minimum", "ram")),
        min_vcpus=get("minimum", "n-cpus"),
        min_storage_gib=gib(get("minimum", "storage")),
        rec_ram_mib=mib(get("recommended", "ram")),
        rec_vcpus=get("recommended", "n-cpus"),
        rec_storage_gib=gib(get("recommended", "storage")),
    )


def _entry(el: ET.Element) -> OsEntry | None:
    short_ids = tuple(s for c in el.findall("short-id") if (s := (c.text or "").strip()))
    if not short_ids:
        return None
    derives = el.find("derives-from")
    return OsEntry(
        short_id=short_ids[0],
        short_ids=short_ids,
        id=el.get("id", ""),
        name=_text(el, "name") or short_ids[0],
        version=_text(el, "version"),
        distro=_text(el, "distro"),
        family=_text(el, "family"),
        vendor=_text(el, "vendor"),
        release_date=_text(el, "release-date"),
        eol_date=_text(el, "eol-date"),
        trees=tuple(_tree(t) for t in el.findall("tree")),
        medias=tuple(_media(m) for m in el.findall("media")),
        resources=tuple(_resources(r) for r in el.findall("resources")),
        derives_from=derives.get("id") if derives is not None else None,
        codename=_text(el, "codename"),
    )


def parse_os_xml(path: Path) -> list[OsEntry]:
    """Every ``<os>`` in one osinfo-db XML file (unparsable files are skipped with a log)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        log.warning("osinfo-db: skipping %s: %s", path, e)
        return []
    return [entry for el in root.iter("os") if (entry := _entry(el)) is not None]


def _xml_files(db: Path) -> list[Path]:
    return sorted((db / "os").glob("*/*.xml"))


def build_index(paths: Sequence[str]) -> OsinfoDB:
    """Parse the XML under every database path (later paths override earlier short-ids)."""
    entries: dict[str, OsEntry] = {}
    for p in paths:
        for f in _xml_files(Path(p)):
            for e in parse_os_xml(f):
                entries[e.id or e.short_id] = e
    return OsinfoDB(entries.values(), _db_version(paths), paths)


# -- locating and caching ---------------------------------------------------------------------


def db_paths() -> list[str]:
    """``$OSINFO_DB_PATH`` (``os.pathsep``-separated) or the Debian package's directory."""
    env = os.environ.get("OSINFO_DB_PATH")
    candidates = env.split(os.pathsep) if env else [DEFAULT_DB_PATH]
    return [str(Path(p).resolve()) for p in candidates if p and Path(p, "os").is_dir()]


def _db_version(paths: Sequence[str]) -> str | None:
    for p in reversed(paths):
        try:
            return Path(p, "VERSION").read_text().strip() or None
        except OSError:
            continue
    return None


def _fingerprint(paths: Sequence[str]) -> str:
    """Changes when a package upgrade adds, removes or replaces XML files."""
    h = hashlib.sha256(f"format={INDEX_FORMAT}".encode())
    for p in paths:
        dirs = [Path(p), Path(p, "os"), *sorted(Path(p, "os").iterdir())]
        for d in [*dirs, Path(p, "VERSION")]:
            try:
                st = d.stat()
            except OSError:
                continue
            h.update(f"{d}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()[:24]


def index_key(paths: Sequence[str]) -> str:
    """What the cached index of ``paths`` is keyed by (changes with any XML file)."""
    return _fingerprint(paths)


def cache_dir() -> Path:
    root = os.environ.get("TREEBOOT_CACHE") or platformdirs.user_cache_dir("treeboot")
    return Path(root) / "osinfo"


def _to_json(db: OsinfoDB, key: str) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "key": key,
        "version": db.version,
        "paths": list(db.paths),
        "entries": [asdict(e) for e in db.entries],
    }


def _entry_from_json(d: dict[str, Any]) -> OsEntry:
    d = dict(d)
    d["short_ids"] = tuple(d["short_ids"])
    d["trees"] = tuple(TreeRule(**t) for t in d["trees"])
    d["medias"] = tuple(MediaRule(**m) for m in d["medias"])
    d["resources"] = tuple(Resources(**r) for r in d["resources"])
    return OsEntry(**d)


def _from_json(data: dict[str, Any]) -> OsinfoDB:
    return OsinfoDB.from_raw(list(data["entries"]), data["version"], data["paths"])


def _read_cache(path: Path, key: str) -> OsinfoDB | None:
    try:
        data = json.loads(path.read_text())
        if data.get("format") != INDEX_FORMAT or data.get("key") != key:
            return None
        return _from_json(data)
    except (OSError, ValueError, TypeError, KeyError) as e:
        log.debug("osinfo index %s unusable (%s); rebuilding", path, e)
        return None


def _write_cache(path: Path, db: OsinfoDB, key: str) -> None:
    try:
        import tempfile

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".index-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(_to_json(db, key), f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache only costs speed
        log.debug("cannot write osinfo index %s: %s", path, e)


_LOADED: dict[str, OsinfoDB] = {}


def load_osinfo(*, use_cache: bool = True) -> OsinfoDB:
    """The database, from the on-disk index when it is current (else parsed and cached).

    Without any osinfo-db installed this returns an empty database (version None): detection
    still works, but every short-id is then derived and reported as unknown to the database.
    """
    paths = db_paths()
    if not paths:
        log.warning("osinfo-db not found (install the osinfo-db package or set OSINFO_DB_PATH)")
        return OsinfoDB((), None, ())
    key = _fingerprint(paths)
    if use_cache and key in _LOADED:
        return _LOADED[key]
    # One file per set of database paths; the key inside says whether it is current.
    tag = hashlib.sha256("\0".join(paths).encode()).hexdigest()[:16]
    index = cache_dir() / f"index-{tag}.json"
    db = _read_cache(index, key) if use_cache else None
    if db is None:
        db = build_index(paths)
        if use_cache:
            _write_cache(index, db, key)
    _LOADED[key] = db
    return db


def derive_short_id(distro: str, version: str) -> tuple[str, bool]:
    """:meth:`OsinfoDB.derive_short_id` on the installed database."""
    return load_osinfo().derive_short_id(distro, version)
