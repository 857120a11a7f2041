"""Identify an ISO image: osinfo-db media rules, what is inside it, and its own boot loader.

Order of evidence (strongest first):

1. osinfo-db ``<media><iso>`` rules (volume/system/publisher/application id regexes,
   volume size) against the primary volume descriptor;
2. metadata files inside the image (``.treeinfo``, ``.disk/info``, SUSE ``content``,
   ``.alpine-release``) and the layouts of ``rules/iso_layouts.toml``;
3. the boot loader configuration (isolinux/grub/loopback/BLS): kernel, initrd and the default
   arguments, so that custom and respun images are "unknown but bootable" (``os: null``).

The result is the same :class:`~treeboot.model.Identification` as for trees, with
``media == "iso"`` and the volume descriptor in ``extra["iso"]``. The installer is named from
``rules/distros.toml`` (as for trees); the kernel arguments that point it at the medium are
:mod:`treeboot.prepare.cmdline`'s (``cdrom`` mode of ``rules/installers.toml``).
"""

from __future__ import annotations

import functools
import platform
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from treeboot.arch import norm_arch, osinfo_arch
from treeboot.artifacts.kernel import parse_kernel
from treeboot.detect import _isometa as meta
from treeboot.detect import _volnaming as naming
from treeboot.detect import _volpatterns as vol
from treeboot.detect.bootcfg import BootConfig, read_boot_config
from treeboot.detect.osinfo import MediaMatch, MediaRule, OsEntry, OsinfoDB, load_osinfo
from treeboot.detect.rules import load_rule_table, load_rules
from treeboot.errors import DetectionError, MetadataError, TreebootError
from treeboot.locate.iso import IsoInfo, IsoLocation
from treeboot.model import Identification, Media, Verified

_META_MAX = 16 * 1024 * 1024
_KERNEL_HEAD = 1 << 16  # enough for every header treeboot.artifacts.kernel reads to name the arch
# An installer booted from the medium reads its second stage and packages from it: whatever the
# installer, the image must stay attached (the pipeline attaches a local one as a CD-ROM).
_NEEDS = ["cdrom"]


# --------------------------------------------------------------------------- rules (data)


@dataclass(frozen=True)
class LayoutRule:
    name: str
    kernel: tuple[str, ...] = ()
    initrd: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    arch: str | None = None
    distro: str | None = None
    family: str | None = None
    installer: str | None = None


_UDEV_SAFE = frozenset(string.ascii_letters + string.digits + "#+-.:=@_")


def udev_label(label: str) -> str:
    """A volume label as udev writes /dev/disk/by-label names (" " -> ``\\x20``)."""
    return "".join(c if c in _UDEV_SAFE else "".join(f"\\x{b:02x}" for b in c.encode())
                   for c in label)  # fmt: skip


@functools.cache
def load_layouts() -> tuple[LayoutRule, ...]:
    """``rules/iso_layouts.toml`` as frozen dataclasses, in the order they are tried."""
    return tuple(_layout(body) for body in load_rule_table("iso_layouts.toml").get("layouts", []))


def _layout(body: dict[str, Any]) -> LayoutRule:
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in body.items()}
    return LayoutRule(**fields)


# --------------------------------------------------------------------------- osinfo matching


def _specificity(rule: MediaRule) -> int:
    fields = (rule.volume_id, rule.system_id, rule.publisher_id, rule.application_id)
    return sum(f is not None for f in fields) + bool(rule.volume_size)


def match_media(db: OsinfoDB, info: IsoInfo, arch: str | None = None) -> list[MediaMatch]:
    """osinfo-db media rules matching the volume descriptor (as libosinfo does), best first:
    the most constrained rule, then the newest release (volume ids get reused)."""
    found = db.match_media(
        info.volume_id,
        system_id=info.system_id,
        publisher_id=info.publisher,
        application_id=info.application_id,
        volume_size=info.volume_size,
        arch=arch,
    )
    return sorted(found, key=lambda m: (-_specificity(m.media), _neg_date(m.entry.release_date)))


def _neg_date(date: str | None) -> tuple[int, ...]:
    return tuple(-int(p) for p in re.findall(r"\d+", date or "0"))


# --------------------------------------------------------------------------- probing


@dataclass
class _Probe:
    """Memoised reads of one image, recording what was looked at."""

    loc: IsoLocation
    evidence: list[str] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    _memo: dict[str, bytes | None] = field(default_factory=dict)

    def read(self, path: str) -> bytes | None:
        if path not in self._memo:
            if path not in self.tried:
                self.tried.append(path)
            try:
                self._memo[path] = self.loc.read(path, max_size=_META_MAX)
            except MetadataError:
                self._memo[path] = None
        return self._memo[path]

    def text(self, path: str) -> str | None:
        data = self.read(path)
        return None if data is None else data.decode("utf-8", errors="replace")

    def exists(self, path: str) -> bool:
        return self.loc.exists(path)

    def used(self, path: str) -> None:
        if path not in self.evidence:
            self.evidence.append(path)


def _content_facts(probe: _Probe, arch: str | None, db: OsinfoDB) -> list[meta.MediaFacts]:
    def treeinfo(text: str, source: str) -> meta.MediaFacts:
        return meta.from_treeinfo(text, source, arch=arch, db=db)

    parsers: tuple[tuple[str, Callable[[str, str], meta.MediaFacts]], ...] = (
        (".treeinfo", treeinfo),
        ("treeinfo", treeinfo),
        (".disk/info", meta.from_disk_info),
        ("content", meta.from_suse_content),
        (
            ".alpine-release",
            lambda t, s: meta.from_one_version(t, s, "alpinelinux", "Alpine Linux"),
        ),
        ("arch/version", lambda t, s: meta.from_one_version(t, s, "archlinux", "Arch Linux")),
    )
    facts: list[meta.MediaFacts] = []
    for path, parse in parsers:
        text = probe.text(path)
        if text is not None:
            probe.used(path)
            facts.append(parse(text, path))
    return facts


def _first(facts: list[meta.MediaFacts], attr: str) -> Any:
    return next((getattr(f, attr) for f in facts if getattr(f, attr)), None)


@dataclass(frozen=True)
class _LayoutHit:
    rule: LayoutRule
    kernel: str | None
    initrd: str | None
    arch: str | None


def _find_layout(probe: _Probe, arch: str | None) -> _LayoutHit | None:
    for rule in load_layouts():
        if arch and rule.arch and rule.arch != arch:
            continue
        if rule.markers:
            marker = next((m for m in rule.markers if probe.exists(m)), None)
            probe.tried.extend(m for m in rule.markers if m not in probe.tried)
            if marker:
                probe.used(marker)
                return _LayoutHit(rule, None, None, rule.arch)
            continue
        for k_arch, kernel in _expand(probe, rule.kernel):
            if arch and k_arch and osinfo_arch(k_arch) != arch:
                continue
            initrd = next(
                (p for a, p in _expand(probe, rule.initrd) if a == k_arch and probe.exists(p)), None
            )
            if initrd:
                probe.used(kernel)
                return _LayoutHit(rule, kernel, initrd, rule.arch or osinfo_arch(k_arch))
    return None


def _expand(probe: _Probe, patterns: tuple[str, ...]) -> list[tuple[str | None, str]]:
    """Existing paths for the patterns; ``{arch}`` is matched against directory names."""
    out: list[tuple[str | None, str]] = []
    for pattern in patterns:
        if "{arch}" not in pattern:
            probe.tried.append(pattern) if pattern not in probe.tried else None
            if probe.exists(pattern):
                out.append((None, pattern))
            continue
        prefix = pattern.split("{arch}", 1)[0].rstrip("/")
        for name in probe.loc.listdir(prefix) or []:
            path = pattern.replace("{arch}", name)
            if osinfo_arch(name) and probe.exists(path):
                out.append((name, path))
    return out


# --------------------------------------------------------------------------- identify


def identify_iso(
    loc: IsoLocation,
    *,
    arch: str | None = None,
    kernel: str | None = None,
    initrd: str | None = None,
    db: OsinfoDB | None = None,
) -> Identification:
    """Identify the image behind ``loc`` (an :class:`IsoLocation` from ``open_iso``).

    ``db`` defaults to :func:`treeboot.detect.osinfo.load_osinfo`. Raises DetectionError (exit 3)
    when the image is neither known nor bootable.
    """

    arch = norm_arch(arch) if arch else None
    info = loc.info
    probe = _Probe(loc)
    db = db or load_osinfo()
    facts = _content_facts(probe, arch, db)
    content_arch = _first(facts, "arch")
    if arch and content_arch and content_arch != arch:
        raise DetectionError(
            f"{loc.url} is an {content_arch} image, not {arch}",
            hint=f"drop --arch or pass --arch {content_arch}",
        )
    layout = _find_layout(probe, arch or content_arch)
    want_arch = arch or content_arch or (layout.arch if layout else None)
    matches, match, learnt = name_descriptor(db, info, want_arch, filter_arch=arch)
    boot = read_boot_config(probe.read, loc.listdir)
    return _assemble(
        _Inputs(loc, probe, facts, layout, match, matches, boot, db, learnt),
        arch=want_arch
        or (learnt.arch if learnt else None)
        or (match.media.arch if match and match.media.arch != "all" else None),
        kernel=kernel,
        initrd=initrd,
    )


def name_descriptor(
    db: OsinfoDB, info: IsoInfo, arch: str | None = None, *, filter_arch: str | None = None
) -> tuple[list[MediaMatch], MediaMatch | None, naming.VolumeNaming | None]:
    """Name the OS from the primary volume descriptor alone: ``(all osinfo-db matches, the
    chosen one, the learnt naming)``, at most one of the last two set.

    osinfo-db's own rules first; patterns learnt from them (:mod:`._volpatterns`) for a
    release the database does not list, or when its only match is a placeholder
    (``rhel9-unknown``) although the descriptor spells the version. ``filter_arch`` restricts
    the rules (an ``--arch`` request), ``arch`` only prefers.
    """
    matches = match_media(db, info, filter_arch)
    match = _pick_match(matches, arch)
    values = {
        "volume_id": info.volume_id,
        "system_id": info.system_id,
        "publisher_id": info.publisher,
        "application_id": info.application_id,
    }
    hits = [h for h in vol.match_patterns(db, values) if not arch or h.arch in (None, arch)]
    if match is not None:  # the family osinfo-db named (a placeholder too) goes first
        hits.sort(key=lambda h: h.pattern.distro != match.entry.distro)
    learnt = next((n for h in hits if (n := naming.name_hit(db, h)) is not None), None)
    exact = match.entry if match and not match.entry.is_placeholder else None
    if naming.prefer_learnt(learnt, exact):
        return matches, None, learnt
    return matches, match, None


def _pick_match(matches: list[MediaMatch], arch: str | None) -> MediaMatch | None:
    if not matches:
        return None
    if arch:
        for m in matches:
            if m.media.arch in (arch, "all"):
                return m
    host = osinfo_arch(platform.machine())
    best = [m for m in matches if _specificity(m.media) == _specificity(matches[0].media)]
    for preferred in (host, "x86_64"):
        for m in best:
            if m.media.arch == preferred:
                return m
    return matches[0]


@dataclass(frozen=True)
class _Inputs:
    loc: IsoLocation
    probe: _Probe
    facts: list[meta.MediaFacts]
    layout: _LayoutHit | None
    match: MediaMatch | None
    matches: list[MediaMatch]
    boot: BootConfig
    db: OsinfoDB
    learnt: naming.VolumeNaming | None = None


def _assemble(
    x: _Inputs, *, arch: str | None, kernel: str | None, initrd: str | None
) -> Identification:
    info, probe = x.loc.info, x.probe
    kernel, initrd, source = _kernel_initrd(x, arch, kernel, initrd)
    entry = x.boot.choose(kernel, initrd) if kernel else None
    if kernel and entry is not None:
        probe.used(entry.source)
    if arch is None and kernel:
        arch = _kernel_arch(x.loc, kernel)
    os_entry, short_id = _os_entry(x)
    distro = _learnt(x, "distro") or (os_entry.distro if os_entry else None)
    distro = distro or _first(x.facts, "distro")
    distro = distro or (x.layout.rule.distro if x.layout else None)
    marker_only = x.layout is not None and x.layout.kernel is None
    if os_entry is None and short_id is None and kernel is None and not marker_only:
        raise _not_identified(x)
    boot_args = list(entry.args) if entry else []
    boot_args, relabelled = _fix_labels(boot_args, info.volume_id)
    extra: dict[str, Any] = {"iso": info.to_json(), "kernel_source": source}
    if x.learnt:
        extra["osinfo_learnt_from"] = x.learnt.learnt_from
    if x.match:
        extra["osinfo_media"] = _rule_json(x.match)
        others = sorted({m.entry.short_id for m in x.matches} - {x.match.entry.short_id})
        if others:
            extra["osinfo_candidates"] = [x.match.entry.short_id, *others]
    if x.layout:
        extra["layout"] = x.layout.rule.name
    if relabelled:
        extra["boot_args_relabelled"] = relabelled
    if kernel is None:
        extra["no_kernel_reason"] = _no_kernel_reason(x, os_entry)
    for f in x.facts:
        extra.update({k: v for k, v in f.extra.items() if k not in extra})
    published = _checksums(x, [p for p in (kernel, initrd) if p])
    # fetch verifies sha256; weaker sums (Ubuntu publishes only md5) are reported, not used.
    checksums = {p: v for p, v in published.items() if v.startswith("sha256:")}
    weak = {p: v for p, v in published.items() if p not in checksums}
    if weak:
        extra["other_checksums"] = weak
    return Identification(
        location=x.loc.url,
        media=Media.ISO,
        os=os_entry.short_id if os_entry else short_id,
        family=distro,
        name=_learnt(x, "name") or (os_entry.name if os_entry else None) or _first(x.facts, "name"),
        version=_version(x, os_entry),
        arch=arch,
        installer=_installer(x.layout, distro, kernel),
        kernel=kernel,
        initrd=initrd,
        checksums=checksums,
        evidence=_descriptor_evidence(x) + probe.evidence,
        known_to_database=os_entry is not None,
        needs=list(_NEEDS),
        boot_args=boot_args,
        verified=_verified(checksums, [p for p in (kernel, initrd) if p]),
        extra=extra,
    )


def _kernel_initrd(
    x: _Inputs, arch: str | None, kernel: str | None, initrd: str | None
) -> tuple[str | None, str | None, str | None]:
    """(kernel, initrd, where they came from), user overrides first."""
    loc = x.loc
    for label, path in (("kernel", kernel), ("initrd", initrd)):
        if path is not None and not loc.exists(path):
            raise DetectionError(
                f"--{label} {path}: no such file in {loc.url}",
                hint="list the image with `xorriso -indev IMAGE -find /` and pass an existing path",
            )
    candidates: list[tuple[str, str | None, str | None]] = []
    for f in x.facts:
        if f.images:
            k, i = f.images.get(arch or "", (None, None))
            if not k and not arch:
                k, i = next(iter(f.images.values()))
            candidates.append((f.source, k, i))
    if x.layout:
        candidates.append((f"layout:{x.layout.rule.name}", x.layout.kernel, x.layout.initrd))
    if x.match:
        candidates.append(("osinfo", x.match.media.kernel, x.match.media.initrd))
    chosen = x.boot.choose()
    if chosen:
        candidates.append((chosen.source, chosen.kernel, chosen.initrd))
    for source, k, i in candidates:
        if k and i and loc.exists(k) and loc.exists(i):
            real_k, real_i = loc.entry(k), loc.entry(i)
            assert real_k is not None and real_i is not None
            return kernel or real_k.path, initrd or real_i.path, source
    if kernel and initrd:
        return kernel, initrd, "user"
    return kernel, initrd, None


def _descriptor_evidence(x: _Inputs) -> list[str]:
    if x.learnt:
        return list(x.learnt.evidence)
    return ["iso9660:volume-descriptor"] if x.match else []


def _version(x: _Inputs, os_entry: OsEntry | None) -> str | None:
    """The descriptor's version, or the content's where it says the same in more detail
    (``.disk/info`` 12.4.0 for ``Debian 12...``)."""
    content = _first(x.facts, "version")
    learnt = _learnt(x, "version")
    if learnt and content and naming.compatible(learnt, content) and len(content) > len(learnt):
        return str(content)
    return learnt or (os_entry.version if os_entry else None) or content


def _learnt(x: _Inputs, attr: str) -> Any:
    return getattr(x.learnt, attr) if x.learnt else None


def _os_entry(x: _Inputs) -> tuple[OsEntry | None, str | None]:
    """The osinfo entry (volume descriptor match, else named from content) and short id."""
    if x.learnt:
        return x.learnt.entry, x.learnt.short_id
    if x.match:
        return x.match.entry, x.match.entry.short_id
    guess = next((f.os for f in x.facts if f.os and f.os.short_id), None)  # .treeinfo
    if guess is not None:
        return (guess.entry if guess.known else None), guess.short_id
    distro = _first(x.facts, "distro") or (x.layout.rule.distro if x.layout else None)
    version = _first(x.facts, "version")
    if distro == "archlinux":
        entry = x.db.get("archlinux")
        return entry, entry.short_id if entry else "archlinux"
    if not distro or not version:
        return None, None
    short_id, known = x.db.derive_short_id(distro, version)
    entry = x.db.get(short_id) if known else None
    return entry, short_id


def _installer(layout: _LayoutHit | None, distro: str | None, kernel: str | None) -> str | None:
    """The layout's installer, else the kernel path's, else the distro's (rules/distros.toml)."""
    if layout and layout.rule.installer:
        return layout.rule.installer
    rules = load_rules()
    rule = rules.installer_for_kernel(kernel) or rules.installer_for_distro(distro)
    return rule.name if rule else None


_LABEL_ARG = re.compile(r"(?P<key>(?:^|[:=])(?:CD)?LABEL=|^archisolabel=)(?P<label>[^:\s]+)")


def _fix_labels(args: list[str], volume_id: str) -> tuple[list[str], list[str]]:
    """Point ``LABEL=``/``CDLABEL=``/``archisolabel=`` at this image's real volume id.

    A respun image often keeps the original boot menu; its installer would then wait for a
    CD labelled like the original. Returns the new args and the labels that were replaced.
    """
    label = udev_label(volume_id)
    replaced: list[str] = []

    def swap(m: re.Match[str]) -> str:
        old = m.group("label")
        if not volume_id or old == label or old.replace("\\x20", " ") == volume_id:
            return m.group(0)
        replaced.append(old)
        return m.group("key") + label

    return [_LABEL_ARG.sub(swap, a) for a in args], replaced


def _checksums(x: _Inputs, paths: list[str]) -> dict[str, str]:
    """Checksums the image publishes for ``paths``: .treeinfo/content first, then sum files."""
    wanted = {p.casefold(): p for p in paths}
    found: dict[str, str] = {}
    for f in x.facts:
        for path, value in f.checksums.items():
            p = wanted.get(path.strip("/").casefold())
            if p and p not in found:
                found[p] = value
    for name, algo in meta.CHECKSUM_FILES:
        if len(found) == len(wanted) and all(v.startswith("sha256:") for v in found.values()):
            break
        if not x.loc.exists(name):
            continue
        text = x.probe.text(name)
        if text is None:
            continue
        listed = meta.parse_checksum_list(text, algo)
        hits = {wanted[k.casefold()]: v for k, v in listed.items() if k.casefold() in wanted}
        if hits:
            x.probe.used(name)
        for p, v in hits.items():
            if p not in found or (v.startswith("sha256:") and not found[p].startswith("sha256:")):
                found[p] = v
    return found


def _verified(checksums: dict[str, str], paths: list[str]) -> Verified:
    if paths and all(checksums.get(p, "").startswith("sha256:") for p in paths):
        return Verified.SHA256
    return Verified.NONE


def _kernel_arch(loc: IsoLocation, kernel: str) -> str | None:
    """Arch from the kernel image's headers (:func:`treeboot.artifacts.kernel.parse_kernel`)."""
    try:
        head = loc.read_range(kernel, 0, _KERNEL_HEAD)
        return parse_kernel(head, size=loc.size(kernel), name=kernel).arch
    except TreebootError:
        return None


def _rule_json(m: MediaMatch) -> dict[str, Any]:
    r = m.media
    fields = {
        "volume_id": r.volume_id,
        "system_id": r.system_id,
        "publisher_id": r.publisher_id,
        "application_id": r.application_id,
        "volume_size": r.volume_size,
    }
    return {
        "arch": r.arch,
        "variant": r.variant,
        "live": r.live,
        **{k: v for k, v in fields.items() if v},
    }


def _no_kernel_reason(x: _Inputs, os_entry: OsEntry | None) -> str:
    what = os_entry.name if os_entry else "this medium"
    if (os_entry and (os_entry.family or "").startswith("win")) or (
        x.layout and x.layout.rule.family == "winnt"
    ):
        how = "it boots the Windows boot manager, not a Linux kernel and initrd"
    else:
        how = "it has no Linux kernel and initrd this tool can boot directly"
    return f"{what} cannot be network-installed: {how}; boot the ISO as a CD-ROM instead"


def _not_identified(x: _Inputs) -> DetectionError:
    info = x.loc.info
    return DetectionError(
        f"{x.loc.url}: ISO volume {info.volume_id!r} matches no osinfo-db media rule and has"
        " no Linux kernel/initrd or boot loader configuration",
        tried=["osinfo-db <media><iso> rules", *x.probe.tried],
        hint="pass --kernel and --initrd (paths inside the ISO), or check that this is an "
        "install medium",
    )


def network_install_error(ident: Identification) -> DetectionError:
    """The error to raise when a network install is asked of media without a Linux kernel."""
    reason = ident.extra.get("no_kernel_reason") or f"{ident.location} has no Linux kernel/initrd"
    return DetectionError(
        reason, hint="attach the ISO as a CD-ROM (virt-install --cdrom) to install from it"
    )
