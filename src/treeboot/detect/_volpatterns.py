"""Version-independent volume descriptor patterns, learnt from osinfo-db's own media rules.

osinfo-db writes one ``<media><iso>`` rule per release: ``RHEL-9-1-(...)?BaseOS-x86_64``,
``NETBSD_90``, ``alpine-std 3\\.17.* x86_64$``, ``Fedora-SB-ostree-aarch64-37``. The version
sits somewhere in one of the fields and is spelled the family's way (``9-1``, ``90`` for 9.0,
``3\\.17``, ``37``). :func:`learn_patterns` finds that spelling in every rule of every numbered
release and replaces it by named groups (``(?P<v0>\\d+)-(?P<v1>\\d+)``), so the pattern also
matches releases the database does not list yet. On the way it

- replaces the rule's arch spelling (``x86_64``, ``amd64``, ``AMD64``, ``p64el``) by an
  ``(?P<arch>...)`` group of every arch spelling (new arches of a known family);
- relaxes years (OpenBSD's ``Copyright (c) 2018 ...`` publisher) and drops ``volume-size``;
- merges editions: two patterns of one series that differ in one word only (Endless OS
  ``-fr``/``-zh_CN``, ``ALT Workstation``/``ALT Education``) give a third with a word slot.

A *series* is the set of entries whose short-ids share the prefix before the version
(``silverblue36``, ``silverblue37``), so editions osinfo-db models as their own OS keep their
own id. Rules whose version is spelled nowhere teach nothing (no version is ever guessed);
named releases (``debiantesting``, ``opensusetumbleweed``) only learn the arch slot, and only
when their version word is in the rule. :func:`match_patterns` returns every hit, best first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from treeboot.arch import OSINFO_ARCHES, arch_spellings, osinfo_arch
from treeboot.detect.osinfo import (
    MediaRule,
    OsEntry,
    OsinfoDB,
    cache_dir,
    index_key,
    name_template,
    version_key,
)
from treeboot.detect.rules import load_rule_table

log = logging.getLogger(__name__)

PATTERN_FORMAT = 2  # bump when VolumePattern changes
FIELDS = ("volume_id", "system_id", "publisher_id", "application_id")
# How the fields are named in ``Identification.evidence``.
EVIDENCE = {
    "volume_id": "iso9660:volume-id",
    "system_id": "iso9660:system-id",
    "publisher_id": "iso9660:publisher-id",
    "application_id": "iso9660:application-id",
}

# A separator between version components as osinfo-db writes it in a regex.
_SEP = r"(?:\\\.|\.| SP|-SP|SP|sp|-|_|\[_-\]|\[-_\]| )"
_YEAR = re.compile(r"(?<![\d\\{,])(?:19|20)\d\d(?![\d}])")
_WORD = "[A-Za-z][A-Za-z_]*"
# Every arch spelling treeboot.arch knows, longest first, in any case ("AMD64").
_ARCH_NAMES = sorted({s for a in OSINFO_ARCHES for s in arch_spellings(a)}, key=lambda s: -len(s))
_ARCH_GROUP = "(?P<arch>(?i:" + "|".join(re.escape(s) for s in _ARCH_NAMES) + "))"


@dataclass(frozen=True)
class VolumePattern:
    """One learnt pattern: every field regex must be found in the descriptor."""

    distro: str
    stem: str  # short-id before the version: "rhel", "silverblue", "netbsd"
    source: str  # short-id of the entry it was learnt from
    arch: str  # the rule's arch ("all": from the arch group, if any)
    fields: tuple[tuple[str, str], ...]  # (field, regex source)
    version_fields: tuple[str, ...]  # fields that carry the version groups
    weight: int  # literal characters: the more, the more specific
    template: str | None = None  # rules/volume_ids.toml: "almalinux-kitten{v0}"
    display: str | None = None  # rules/volume_ids.toml: "AlmaLinux Kitten {version}"

    def compiled(self) -> tuple[tuple[str, re.Pattern[str]], ...]:
        return tuple((f, _compile(src)) for f, src in self.fields)

    def required(self) -> tuple[tuple[str, str], ...]:
        """(field, text the value must contain): checked before compiling (a few of the
        hundreds of patterns are ever compiled in one run)."""
        return tuple((f, lit) for f, src in self.fields if (lit := _required_prefix(src)))


@dataclass(frozen=True)
class VolumeHit:
    """A pattern that matched, with what the descriptor says through it."""

    pattern: VolumePattern
    version: str | None  # None: the named release the pattern was learnt from
    arch: str | None
    evidence: tuple[str, ...]  # the fields that matched, as ``EVIDENCE`` names them


_compiled: dict[str, re.Pattern[str]] = {}


def _compile(src: str) -> re.Pattern[str]:
    rx = _compiled.get(src)
    if rx is None:
        rx = _compiled[src] = re.compile(src)
    return rx


# -- finding the version and the arch in a regex ----------------------------------------------


# Regex syntax in a pattern source: escapes, character classes, repeats, groups, anchors.
_SYNTAX = re.compile(r"\\[A-Za-z0-9]|\\|\[(?:\\.|[^\]])*\]|\{[^}]*\}|[()|*+?^$]")


@functools.lru_cache(maxsize=8192)
def _literal_mask(src: str) -> tuple[bool, ...]:
    """Which characters of a regex source are literal text (not in ``[...]``, ``{...}``, or an
    escape like ``\\d``; the ``\\`` of ``\\.`` is syntax, the dot literal)."""
    mask = [True] * len(src)
    for m in _SYNTAX.finditer(src):
        for i in range(m.start(), m.end()):
            mask[i] = False
    return tuple(mask)


def _spellings(version: str) -> list[tuple[list[str], bool]]:
    """Component lists to look for, most explicit first; True = written without separators."""
    comps = version.split(".")
    out: list[tuple[list[str], bool]] = []
    if len(comps) < 3:
        out.append(([*comps, "0"], False))
    out.append((comps, False))
    if len(comps) == 2 and len(comps[1]) == 1:
        out.append((comps, True))  # NETBSD_90, NETBSD_100
    while len(comps) > 1 and comps[-1].strip("0") == "":
        comps = comps[:-1]
        out.append((comps, False))
    return out


_NUM_RUN = re.compile(rf"(?<![\d\\])\d+(?:{_SEP}\d+)*(?!\d)")
_SEP_SPLIT = re.compile(f"({_SEP})")


def _runs(src: str) -> list[list[tuple[int, str]]]:
    """Literal digit runs (``9-1``, ``64-37``, ``15-SP1``) as [(offset, component), ...]."""
    mask = _literal_mask(src)
    out: list[list[tuple[int, str]]] = []
    for m in _NUM_RUN.finditer(src):
        comps: list[tuple[int, str]] = []
        pos = m.start()
        for n, piece in enumerate(_SEP_SPLIT.split(m.group())):
            if n % 2 == 0:
                comps.append((pos, piece))
            pos += len(piece)
        if all(mask[i] for i in range(m.start(), m.end()) if src[i].isdigit()):
            out.append(comps)
    return out


# Point-release components a rule writes after the version (``9.0.(\d)``, ``10.\d+.\d+``):
# optional in the learnt pattern, the next release may be a ".0" that leaves them out.
_POINT = re.compile(r"(?:(?:\\\.|\.|-|_)(?:\\d\+?|\(\\d\+?\)|\[0-9\]\+?))+")
_VEND = "(?P<vend>)"  # marks the end of the version block (named releases replace the block)


@functools.lru_cache(maxsize=8192)
def _find_version(src: str, version: str) -> tuple[int, int, str] | None:
    """(start, end, replacement) of the first literal spelling of ``version`` in ``src``."""
    found = _find_spelling(src, version)
    if found is None:
        return None
    start, end, rep = found
    point = _POINT.match(src, end)
    if point:
        rep, end = rep + f"(?:{point.group()})?", point.end()
    return start, end, rep + _VEND


def _find_spelling(src: str, version: str) -> tuple[int, int, str] | None:
    runs = _runs(src)
    for want, joined in _spellings(version):
        target = ["".join(want)] if joined else want
        for comps in runs:
            for i in range(len(comps) - len(target) + 1):
                if [c for _, c in comps[i : i + len(target)]] != target:
                    continue
                start = comps[i][0]
                last = comps[i + len(target) - 1]
                end = last[0] + len(last[1])
                if joined:
                    if start and src[start - 1].isalnum():
                        continue
                    return start, end, r"(?P<v0>\d+)(?P<v1>\d)"
                rep = r"(?P<v0>\d+)"
                for n in range(1, len(target)):
                    (prev, pc), (cur, _) = comps[i + n - 1], comps[i + n]
                    sep = src[prev + len(pc) : cur]
                    rep += (r"\." if sep == "." else sep) + rf"(?P<v{n}>\d+)"
                return start, end, rep
    return None


@functools.cache
def _arch_words(arch: str) -> re.Pattern[str]:
    names = "|".join(re.escape(s) for s in sorted(arch_spellings(arch), key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?i:{names})(?![A-Za-z0-9])")


@functools.lru_cache(maxsize=8192)
def _with_arch(src: str, arch: str) -> str:
    """The first literal spelling of ``arch`` in ``src`` replaced by the arch group."""
    if arch not in OSINFO_ARCHES:
        return src
    mask = _literal_mask(src)
    for m in _arch_words(arch).finditer(src):
        if "(?P<" in src[max(0, m.start() - 8) : m.start()] or not all(mask[m.start() : m.end()]):
            continue
        end = m.end() + (1 if src[m.end() : m.end() + 1] in ("*", "?") else 0)
        return src[: m.start()] + _ARCH_GROUP + src[end:]
    return src


_LITERAL_HEAD = re.compile(r"\^?([^\\\[\](){}|*+?^$.]*)([*?{]?)")


def _required_prefix(src: str) -> str:
    """The literal text a regex source starts with (after ``^``), minus a last character a
    quantifier makes optional; "" when a top-level ``|`` makes nothing required."""
    bare = src.replace(_ARCH_GROUP, "")
    if "|" in bare:
        depth = 0
        for c in bare:
            depth += c == "("
            depth -= c == ")"
            if c == "|" and depth == 0:
                return ""
    m = _LITERAL_HEAD.match(src)
    assert m is not None  # every group in the pattern is optional
    head = m.group(1)
    return head[:-1] if m.group(2) else head


def _weight(src: str) -> int:
    bare = re.sub(r"\(\?P<\w+>.*?\)\)?|\\[dDsSwW]|\[.*?\]|[.*+?()|^$\\]", "", src)
    return len(bare)


# -- learning ----------------------------------------------------------------------------------


def stem(entry: OsEntry) -> str | None:
    """The short-id before the version: the series an entry belongs to."""
    return _stem_of(entry.short_id, entry.version)


@functools.lru_cache(maxsize=8192)
def _stem_of(short_id: str, version: str | None) -> str | None:
    """The short-id before the version (``silverblue37`` -> ``silverblue``)."""
    if version_key(version) is None:
        return short_id
    t = name_template(short_id, version or "")
    return t.prefix if t else None


def _rule_fields(rule: MediaRule) -> list[tuple[str, str]]:
    return [(f, v) for f in FIELDS if (v := getattr(rule, f))]


def _generalise(entry: OsEntry, rule: MediaRule) -> VolumePattern | None:
    series = stem(entry)
    if entry.is_placeholder or not entry.distro or series is None:
        return None
    numeric = version_key(entry.version) is not None
    fields: list[tuple[str, str]] = []
    carriers: list[str] = []
    for name, src in _rule_fields(rule):
        found = _find_version(src, entry.version or "") if numeric else None
        if found:
            start, end, rep = found
            src = src[:start] + rep + src[end:]
            carriers.append(name)
        elif not numeric and (entry.version or "").lower() in src.lower():
            carriers.append(name)
        src = _YEAR.sub(r"\\d{4}", src) if name in ("publisher_id", "application_id") else src
        fields.append((name, _with_arch(src, rule.arch)))
    if not carriers or not any(n == "volume_id" or n == "application_id" for n, _ in fields):
        return None  # the version is in no field: this rule cannot name another release
    for _, src in fields:
        try:
            _compile(src)
        except re.error:
            return None
    weight = sum(_weight(s) for _, s in fields) + 4 * len(fields)
    return VolumePattern(
        distro=entry.distro,
        stem=series,
        source=entry.short_id,
        arch=rule.arch,
        fields=tuple(fields),
        version_fields=tuple(carriers) if numeric else (),
        weight=weight,
    )


def _edition_slots(patterns: Sequence[VolumePattern]) -> list[VolumePattern]:
    """Pairs of one series and arch whose version field differs in one word only."""
    out: list[VolumePattern] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    by_series: dict[tuple[str, str], list[VolumePattern]] = {}
    for p in patterns:
        if p.version_fields:
            by_series.setdefault((p.stem, p.arch), []).append(p)
    for group in by_series.values():
        for i, a in enumerate(group):
            for b in group[i + 1 : i + 12]:  # neighbours: rules of one entry sit together
                merged = _merge(a, b)
                if merged is not None and (merged.stem, merged.fields) not in seen:
                    seen.add((merged.stem, merged.fields))
                    out.append(merged)
    return out


def _merge(a: VolumePattern, b: VolumePattern) -> VolumePattern | None:
    fa, fb = dict(a.fields), dict(b.fields)
    if fa.keys() != fb.keys():
        return None
    diff = [f for f in fa if fa[f] != fb[f]]
    if len(diff) != 1:
        return None
    x, y = fa[diff[0]], fb[diff[0]]
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    while n > 0 and x[n - 1] not in "-_ /":
        n -= 1
    k = 0
    while k < min(len(x), len(y)) - n and x[-1 - k] == y[-1 - k]:
        k += 1
    while k > 0 and x[len(x) - k] not in "-_ /$":
        k -= 1
    mx, my = x[n : len(x) - k], y[n : len(y) - k]
    if not (re.fullmatch(_WORD, mx) and re.fullmatch(_WORD, my)):
        return None
    src = x[:n] + _WORD + x[len(x) - k :]
    if n == 0 or "(?P<v0>" not in src:  # a word slot needs literal text before it
        return None
    fields = tuple((f, src if f == diff[0] else s) for f, s in a.fields)
    return VolumePattern(a.distro, a.stem, a.source, a.arch, fields, a.version_fields,
                         a.weight - max(len(mx), len(my)))  # fmt: skip


def learn_patterns(entries: Iterable[OsEntry]) -> tuple[VolumePattern, ...]:
    """Every media rule of ``entries`` generalised (see the module docstring), deduplicated."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], VolumePattern] = {}
    newest = sorted(entries, key=lambda e: (e.release_date or "", e.version or ""), reverse=True)
    for entry in newest:
        for rule in entry.medias:
            p = _generalise(entry, rule)
            if p is None:
                continue
            seen = found.setdefault((p.stem, p.fields), p)
            if seen.arch != p.arch:  # the same descriptor for several arches: it names none
                found[(p.stem, p.fields)] = dataclasses.replace(seen, arch="all")
    plain = list(found.values())
    return tuple(plain + _edition_slots(plain) + _named_releases(newest, plain))


_BLOCK = re.compile(r"\(\?P<v0>.*?\(\?P<vend>\)")


def _replace_block(src: str, text: str) -> str:
    m = _BLOCK.search(src)
    return src[: m.start()] + text + src[m.end() :] if m else src


def _named_releases(
    entries: Sequence[OsEntry], patterns: Sequence[VolumePattern]
) -> list[VolumePattern]:
    """A named release (``debiantesting``, ``fedora-rawhide``) is spelled where its series
    writes the number: ``Debian testing arm64 n`` from ``Debian 12.x.y arm64 n``. Only for
    entries whose own rules spell the name."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], VolumePattern] = {}
    for e in entries:
        word = (e.version or "").lower()
        if version_key(e.version) is not None or e.is_placeholder or not word or not e.distro:
            continue
        if not any(word in (v or "").lower() for r in e.medias for _, v in _rule_fields(r)):
            continue
        for p in patterns:
            if p.distro != e.distro or not p.version_fields or not e.short_id.startswith(p.stem):
                continue
            lit = f"(?i:{re.escape(word)})"
            fields = tuple(
                (f, _replace_block(src, lit) if f in p.version_fields else src)
                for f, src in p.fields
            )
            named = VolumePattern(e.distro, e.short_id, e.short_id, p.arch, fields, (),
                                  p.weight + len(word) - 2)  # fmt: skip
            out.setdefault((named.stem, named.fields), named)
    return list(out.values())


_Required = tuple[tuple[str, str], ...]
_LEARNT: weakref.WeakKeyDictionary[OsinfoDB, tuple[tuple[VolumePattern, _Required], ...]] = (
    weakref.WeakKeyDictionary()
)


@functools.cache
def load_volume_rules() -> tuple[VolumePattern, ...]:
    """``rules/volume_ids.toml``: families osinfo-db cannot teach (bad regexes fail here)."""
    out = []
    for body in load_rule_table("volume_ids.toml").get("families", []):
        body = dict(body)
        distro, template, display = body.pop("distro"), body.pop("short_id"), body.pop("name")
        fields = tuple((f, body.pop(f)) for f in FIELDS if f in body)
        if body or not fields:
            raise ValueError(f"rules/volume_ids.toml: unknown keys {sorted(body)} for {template}")
        carriers = tuple(f for f, src in fields if "v0" in _compile(src).groupindex)
        weight = 50 + sum(_weight(s) for _, s in fields)  # hand-checked: beats learnt ones
        out.append(VolumePattern(distro, template.split("{")[0], "rules/volume_ids.toml",
                                 "all", fields, carriers, weight, template, display))  # fmt: skip
    return tuple(out)


def patterns_of(db: OsinfoDB) -> tuple[tuple[VolumePattern, _Required], ...]:
    """The patterns of ``db`` with their required text: learnt once per database and kept
    beside the osinfo index (JSON, keyed like it plus this module and the rules file)."""
    got = _LEARNT.get(db)
    if got is None:
        learnt = (*load_volume_rules(), *_cached_learn(db))
        got = tuple((p, p.required()) for p in learnt)
        _LEARNT[db] = got
    return got


def _cached_learn(db: OsinfoDB) -> tuple[VolumePattern, ...]:
    if not db.paths:
        return learn_patterns(db.entries)
    own = Path(__file__).stat()
    key = hashlib.sha256(
        f"{PATTERN_FORMAT}\0{index_key(db.paths)}\0{own.st_mtime_ns}\0{own.st_size}".encode()
    ).hexdigest()[:24]
    # One file per set of database paths (like the index); the key inside says if it is current.
    tag = hashlib.sha256("\0".join(db.paths).encode()).hexdigest()[:16]
    path = cache_dir() / f"volpatterns-{tag}.json"
    try:
        data = json.loads(path.read_text().replace(_ARCH, _json_str(_ARCH_GROUP)))
        if data["key"] == key:
            return tuple(VolumePattern(**_tuples(d)) for d in data["patterns"])
    except (OSError, ValueError, TypeError, KeyError) as e:
        log.debug("learnt volume patterns %s unusable (%s); learning", path, e)
    patterns = learn_patterns(db.entries)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".volpatterns-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            out = {"key": key, "patterns": [asdict(p) for p in patterns]}
            # the arch group is most of the text: written once
            text = json.dumps(out, separators=(",", ":")).replace(_json_str(_ARCH_GROUP), _ARCH)
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache only costs speed
        log.debug("cannot write %s: %s", path, e)
    return patterns


_ARCH = "@ARCH@"


def _json_str(text: str) -> str:
    return json.dumps(text)[1:-1]


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d["fields"] = tuple((f, s) for f, s in d["fields"])
    d["version_fields"] = tuple(d["version_fields"])
    return d


# -- matching ----------------------------------------------------------------------------------


def _version(m: re.Match[str]) -> str | None:
    parts = [m.group(g) for g in ("v0", "v1", "v2") if g in m.re.groupindex and m.group(g)]
    return ".".join(parts) or None


def match_patterns(db: OsinfoDB, values: Mapping[str, str | None]) -> list[VolumeHit]:
    """Hits of the learnt patterns on the descriptor ``values`` (field -> text), best first."""
    hits: list[VolumeHit] = []
    stripped = {k: (v or "").strip() for k, v in values.items()}
    for pattern, required in patterns_of(db):
        if not all(lit in stripped.get(f, "") for f, lit in required):
            continue
        hit = _try(pattern, pattern.compiled(), stripped)
        if hit is not None:
            hits.append(hit)
    hits.sort(key=lambda h: (bool(h.version), h.pattern.weight), reverse=True)
    return hits


def _try(
    pattern: VolumePattern,
    compiled: tuple[tuple[str, re.Pattern[str]], ...],
    values: Mapping[str, str | None],
) -> VolumeHit | None:
    versions: set[str] = set()
    arches: set[str] = set()
    for name, rx in compiled:
        value = (values.get(name) or "").strip()
        m = rx.search(value) if value else None
        if m is None:
            return None
        if name in pattern.version_fields:
            v = _version(m)
            if v is None:
                return None
            versions.add(v)
        if "arch" in rx.groupindex and m.group("arch"):
            arches.add(osinfo_arch(m.group("arch")) or "")  # "" = not an arch: no hit
    if len(versions) > 1 or len(arches) > 1 or "" in arches:
        return None
    arch = arches.pop() if arches else (pattern.arch if pattern.arch != "all" else None)
    evidence = tuple(EVIDENCE[n] for n, _ in compiled)
    return VolumeHit(pattern, versions.pop() if versions else None, arch, evidence)
