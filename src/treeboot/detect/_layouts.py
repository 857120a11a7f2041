"""The tree layouts :mod:`treeboot.detect.identify` tries, in order, on the round-1 probe results.

Each layout looks only at files already fetched; when it recognises its metadata it returns
a :class:`Finding`: the follow-up files it still needs (round 2) and a ``finish`` that resolves
OS, arch, kernel and initrd once they are in. Knowledge lives in osinfo-db and ``rules/*``;
the code here is one function per metadata *format*, not per distribution.
"""

from __future__ import annotations

import fnmatch
import platform
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from treeboot.arch import norm_arch
from treeboot.detect._probe import Probe
from treeboot.detect.metadata import (
    is_text,
    parse_disk_info,
    parse_mageia_version,
    parse_manifest,
    parse_one_version,
    parse_sha256sums,
    parse_suse_content,
    parse_suse_products,
    parse_version_info,
)
from treeboot.detect.osinfo import OsEntry, OsinfoDB
from treeboot.detect.rules import InstallerRule, KernelPair, Rules, kernels_for
from treeboot.detect.treeinfo import OsGuess, guess_os, parse_treeinfo, select_images
from treeboot.errors import DetectionError, MetadataError
from treeboot.locate.base import safe_relpath


@dataclass(frozen=True)
class Context:
    url: str
    probe: Probe
    rules: Rules
    db: OsinfoDB
    arch: str | None  # requested, osinfo spelling

    def text(self, path: str, *, junk_ok: bool = False) -> str | None:
        """The file as text; None if absent or binary. ``junk_ok``: a line-based format
        (MANIFEST, SHA256SUMS) keeps its text lines when other lines hold binary junk."""
        data = self.probe.data(path)
        if data is None:
            return None
        if not is_text(data):
            if not junk_ok:
                return None
            data = b"\n".join(line for line in data.split(b"\n") if is_text(line))
        return data.decode("utf-8", errors="replace")

    def segments(self) -> list[str]:
        """The location's URL path, split (last segment first)."""
        return [unquote(s) for s in reversed(urlsplit(self.url).path.split("/")) if s]

    def check_arch(self, found: str | None, where: str) -> str | None:
        if self.arch and found and self.arch != found:
            raise DetectionError(
                f"{self.url}: {where} says this tree is for {found}, not {self.arch}",
                hint=f"use a {self.arch} tree, or pass --arch {found}",
            )
        return self.arch or found

    def need_arch(self, arch: str | None, where: str) -> str:
        if arch is None:
            raise DetectionError(
                f"{self.url}: cannot tell the architecture from {where}",
                hint="pass --arch (x86_64, aarch64, ppc64le, s390x, ...)",
            )
        return arch


@dataclass(frozen=True)
class Resolved:
    layout: str
    guess: OsGuess
    arch: str
    kernel: str
    initrd: str
    checksums: dict[str, str]  # every path the tree publishes a sha256 for -> "sha256:<hex>"
    evidence: list[str]
    installer: InstallerRule | None
    needs: tuple[str, ...] | None = None  # overrides the installer's
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    finish: Callable[[], Resolved]
    reads: tuple[str, ...] = ()
    exists: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    name: str
    recognise: Callable[[Context], Finding | None]


# -- shared helpers -----------------------------------------------------------------------------


def name_os(
    ctx: Context, distro: str | None, version: str | None, codename: str | None = None
) -> OsGuess:
    """Short-id (exact or derived), display name and database status for distro + version."""
    if distro is None or version is None:
        return OsGuess(None, distro, None, version, False)
    short_id, known = ctx.db.derive_short_id(distro, version)
    entry = ctx.db.get(short_id)
    name = entry.name if entry else ctx.db.derive_name(ctx.db.by_distro(distro), version)
    if name and codename and not known and codename.lower() not in name.lower():
        name += f" ({codename.lower()})"
    return OsGuess(short_id, distro, name, version, known, entry)


def references(ctx: Context, guess: OsGuess) -> list[OsEntry]:
    """The entry itself, else the family's newest: where osinfo paths are borrowed from."""
    newest = ctx.db.newest_first(ctx.db.by_distro(guess.distro or ""))
    return [guess.entry, *newest] if guess.entry else newest


def codename_version(ctx: Context, distro: str, word: str) -> str | None:
    word = word.lower()
    entry = ctx.db.find_codename(distro, word)
    if entry is not None and entry.version:
        return entry.version
    return ctx.rules.codename_version(distro, word) or ctx.rules.suites.get(word)


def fill(pairs: Iterable[KernelPair], **names: str) -> list[KernelPair]:
    return list(dict.fromkeys((k.format(**names), i.format(**names)) for k, i in pairs))


def choose(cands: Sequence[KernelPair], probe: Probe, listed: Iterable[str] = ()) -> KernelPair:
    """The first candidate the metadata lists, else the first that exists, else the first.

    A kernel name with ``*`` (``malta/netboot/vmlinuz-*-5kc-malta``: the file carries the
    kernel's version) is matched against the listed files only, since a glob cannot be probed.
    """
    known = sorted(set(listed))
    for pair in cands:
        if "*" in pair[0]:
            hits = fnmatch.filter(known, pair[0])
            if hits:
                return hits[-1], pair[1]
        elif pair[0] in known:
            return pair
    plain = [p for p in cands if "*" not in p[0]]
    return next((p for p in plain if probe.exists(p[0])), (plain or list(cands))[0])


def checked(pair: KernelPair, source: str) -> KernelPair:
    try:
        return safe_relpath(pair[0]), safe_relpath(pair[1])
    except MetadataError as e:
        raise MetadataError(f"{source}: {e.message}", hint=e.hint) from e


def host_arch(rules: Rules) -> str:
    return norm_arch(platform.machine())


def pick_arch(ctx: Context, offered: Sequence[str], where: str) -> str:
    """The requested arch if offered, else the host's, x86_64, or the first listed."""
    if ctx.arch:
        if offered and ctx.arch not in offered:
            raise DetectionError(
                f"{ctx.url}: {where} offers {', '.join(offered)}, not {ctx.arch}",
                hint=f"pass --arch {offered[0]}",
            )
        return ctx.arch
    if not offered:
        return ctx.need_arch(None, where)
    return next((a for a in (host_arch(ctx.rules), "x86_64") if a in offered), offered[0])


# -- .treeinfo ----------------------------------------------------------------------------------


def _treeinfo(ctx: Context) -> Finding | None:
    for source in (".treeinfo", "treeinfo"):
        text = ctx.probe.text(source)
        if text is not None:
            break
    else:
        return None
    if text.lstrip().startswith("<"):  # an HTML page served for every path: no treeinfo
        return None
    ti = parse_treeinfo(text, source)
    arch, kernel, initrd = select_images(ti, ctx.arch, ctx.rules, source)

    def finish() -> Resolved:
        guess = guess_os(ti, arch, ctx.db, ctx.rules)
        installer = ctx.rules.installer_for_distro(guess.distro) or (
            ctx.rules.installer_for_kernel(kernel)
        )
        extra = {"treeinfo_family": ti.family, "treeinfo_variant": ti.variant}
        return Resolved(
            "treeinfo",
            guess,
            arch,
            kernel,
            initrd,
            ti.checksums,
            [source],
            installer,
            extra={k: v for k, v in extra.items() if v},
        )

    return Finding(finish)


# -- Debian / Ubuntu installer trees ------------------------------------------------------------


def _url_arch(ctx: Context) -> str | None:
    segs = ctx.segments()
    for i, seg in enumerate(segs):
        m = re.fullmatch(r"installer-([a-z0-9]+)", seg)
        if m:
            return norm_arch(m.group(1))
        if seg == "daily-images" and i > 0:
            return norm_arch(segs[i - 1])
    return None


def _sums_arch(ctx: Context, sums: dict[str, str], installer_dir: str) -> str | None:
    found = {m.group(1) for p in sums if (m := re.match(rf"netboot/{installer_dir}/([^/]+)/", p))}
    return norm_arch(found.pop()) if len(found) == 1 else None


def _url_release(ctx: Context, distro: str) -> str | None:
    for seg in ctx.segments():
        version = codename_version(ctx, distro, seg)
        if version:
            return version
    return None


def _di_candidates(ctx: Context, guess: OsGuess, arch: str, installer_dir: str) -> list[KernelPair]:
    prefixes = tuple(t.images for t in ctx.rules.di_trees)
    out: list[KernelPair] = []
    for entry in references(ctx, guess):
        for rule in entry.trees:
            if rule.arch == arch and rule.kernel and rule.initrd:
                out.append((_strip(rule.kernel, prefixes), _strip(rule.initrd, prefixes)))
        if out:
            break
    debarch = ctx.rules.debian_arch(arch)
    out += fill(kernels_for(ctx.rules.di_kernels, arch), installer=installer_dir, debarch=debarch)
    return list(dict.fromkeys(out))


def _strip(path: str, prefixes: Sequence[str]) -> str:
    return next((path[len(p) :] for p in prefixes if path.startswith(p)), path)


def _debian_installer(ctx: Context) -> Finding | None:
    for tree in ctx.rules.di_trees:
        text = ctx.text(tree.manifest, junk_ok=True)
        manifest = parse_manifest(text) if text else {}
        if manifest:
            break
    else:
        return None
    ubuntu = any("ubuntu-installer" in p for p in manifest) or (
        "ubuntu" in ctx.segments() and not any("debian-installer" in p for p in manifest)
    )
    distro, installer_dir = (
        ("ubuntu", "ubuntu-installer") if ubuntu else ("debian", "debian-installer")
    )
    url_arch = ctx.check_arch(_url_arch(ctx), "the URL")
    sums_path, info_path = tree.images + "SHA256SUMS", tree.images + "netboot/version.info"

    def finish() -> Resolved:
        sums_text, info_text = ctx.text(sums_path, junk_ok=True), ctx.text(info_path)
        sums = parse_sha256sums(sums_text or "")
        info = parse_version_info(info_text or "")
        arch = ctx.need_arch(url_arch or _sums_arch(ctx, sums, installer_dir), tree.manifest)
        version: str | None
        if info and info.distro == distro:
            version, codename = info.version, info.codename
        else:
            version, codename = _url_release(ctx, distro) or tree.suite, None
        guess = name_os(ctx, distro, version, codename)
        cands = _di_candidates(ctx, guess, arch, installer_dir)
        k, i = checked(choose(cands, ctx.probe, [*sums, *manifest]), sums_path)
        evidence = [tree.manifest] + [p for p, t in ((sums_path, sums), (info_path, info)) if t]
        extra = {"codename": codename, "installer_build": info.build if info else None}
        return Resolved(
            "debian-installer",
            guess,
            arch,
            tree.images + k,
            tree.images + i,
            {tree.images + p: "sha256:" + h for p, h in sums.items()},
            evidence,
            ctx.rules.installers["debian-installer"],
            extra={k: v for k, v in extra.items() if v},
        )

    return Finding(finish, reads=(sums_path, info_path))


# -- copies of Debian/Ubuntu media (.disk/info) -------------------------------------------------


def _media_candidates(ctx: Context, guess: OsGuess, arch: str, product: str) -> list[KernelPair]:
    out: list[KernelPair] = []
    for entry in references(ctx, guess):
        medias = [m for m in entry.medias if m.arch == arch and m.kernel and m.initrd]
        # "Ubuntu-Server" media before desktop ones on a server medium, and vice versa
        medias.sort(key=lambda m: (m.volume_id or "").split(" ")[0] != product)
        out += [(m.kernel, m.initrd) for m in medias if m.kernel and m.initrd]
        if out:
            break
    table = ctx.rules.disk_info_kernels.get(guess.distro or "", {})
    out += fill(kernels_for(table, arch), arch=arch)
    return list(dict.fromkeys(out))


def _disk_info(ctx: Context) -> Finding | None:
    text = ctx.text(".disk/info")
    info = parse_disk_info(text) if text else None
    if info is None:
        return None
    distro = next((r.distro for r in ctx.rules.disk_info if r.matches(info.name)), None)
    arches = set(ctx.rules.debian_arches) | set(ctx.rules.debian_arches.values())
    word = next((w for w in info.words if w.lower() in arches), None)
    arch = ctx.need_arch(
        ctx.check_arch(word and norm_arch(word), ".disk/info"),
        f".disk/info ({info.line!r})",
    )
    version = info.version
    if distro and not re.match(r"\d", version):
        version = codename_version(ctx, distro, info.first_codename_word or version) or version
    guess = name_os(ctx, distro, version, info.first_codename_word)
    cands = _media_candidates(ctx, guess, arch, info.name)
    if not cands:
        raise DetectionError(
            f"{ctx.url}: no known kernel path for {info.name} on {arch}",
            tried=ctx.probe.tried,
            hint="pass --kernel and --initrd",
        )
    sums_path = "sha256sum.txt"

    def finish() -> Resolved:
        sums = parse_sha256sums(ctx.text(sums_path, junk_ok=True) or "")
        k, i = checked(choose(cands, ctx.probe), ".disk/info")
        installer = ctx.rules.installer_for_kernel(k) or ctx.rules.installer_for_distro(distro)
        evidence = [".disk/info"] + ([sums_path] if sums else [])
        return Resolved(
            "disk-info",
            guess,
            arch,
            k,
            i,
            {p: "sha256:" + h for p, h in sums.items()},
            evidence,
            installer,
            needs=("cdrom",),
            extra={"disk_info": info.line},
        )

    exists = tuple(k for k, _ in cands) if len(cands) > 1 else ()
    return Finding(finish, reads=(sums_path,), exists=exists)


# -- SUSE content / media.1/products ------------------------------------------------------------


def _suse_distro(ctx: Context, names: Iterable[str], version: str | None) -> str | None:
    for rule in ctx.rules.suse_products:
        if any(rule.matches(n, version) for n in names):
            return rule.distro
    return None


def _suse_version(ctx: Context, version: str | None) -> str | None:
    if version and re.fullmatch(ctx.rules.suse.rolling_version, version):
        return ctx.rules.suse.rolling_name
    return version


def _suse_pairs(ctx: Context, arch: str) -> list[KernelPair]:
    suse_arch = ctx.rules.suse_arches.get(arch, arch)
    return fill(kernels_for(ctx.rules.suse_kernels, arch), suse_arch=suse_arch)


def _suse_content(ctx: Context) -> Finding | None:
    text = ctx.text("content")
    content = parse_suse_content(text) if text else None
    if content is None:
        return None
    offered = [norm_arch(a) for a in content.arches]
    arch = pick_arch(ctx, list(dict.fromkeys(offered)), "content")
    version = _suse_version(ctx, content.version)
    guess = name_os(ctx, _suse_distro(ctx, content.names, version), version)
    cands = _suse_pairs(ctx, arch)
    listed = [k for k, _ in cands if k in content.hashed]
    extra = {"label": content.label} if content.label else {}

    def finish() -> Resolved:
        k, i = checked(choose(cands, ctx.probe, listed), "content")
        sums = {p: "sha256:" + h for p, h in content.sha256.items()}
        installer = ctx.rules.installer_for_distro(guess.distro) or ctx.rules.installers["linuxrc"]
        return Resolved(
            "suse-content", guess, arch, k, i, sums, ["content"], installer, extra=extra
        )

    exists = () if listed or len(cands) < 2 else tuple(k for k, _ in cands)
    return Finding(finish, exists=exists)


def _suse_products(ctx: Context) -> Finding | None:
    text = ctx.text("media.1/products")
    products = parse_suse_products(text) if text else []
    if not products:
        return None
    version = _suse_version(ctx, products[0].version)
    guess = name_os(ctx, _suse_distro(ctx, [p.name for p in products], version), version)
    arches = [ctx.arch] if ctx.arch else [a for a in ctx.rules.suse_kernels if a != "all"]
    arches = list(dict.fromkeys([*arches, "x86_64"])) if not ctx.arch else arches
    cands = {a: _suse_pairs(ctx, a) for a in arches}

    def finish() -> Resolved:
        found = [a for a in arches if any(ctx.probe.exists(k) for k, _ in cands[a])]
        arch = (
            pick_arch(ctx, found, "media.1/products (kernels found)")
            if found
            else (ctx.need_arch(ctx.arch, "media.1/products"))
        )
        k, i = checked(choose(cands[arch], ctx.probe), "media.1/products")
        installer = ctx.rules.installer_for_distro(guess.distro) or ctx.rules.installers["linuxrc"]
        return Resolved(
            "suse-products",
            guess,
            arch,
            k,
            i,
            {},
            ["media.1/products"],
            installer,
            extra={"product": products[0].name},
        )

    return Finding(finish, exists=tuple(k for a in arches for k, _ in cands[a]))


# -- Mageia, Arch Linux, Alpine -----------------------------------------------------------------


def _mageia(ctx: Context) -> Finding | None:
    text = ctx.text("VERSION")
    info = parse_mageia_version(text) if text else None
    if info is None:
        return None
    arch = ctx.need_arch(ctx.check_arch(info.arch and norm_arch(info.arch), "VERSION"), "VERSION")
    cands = list(kernels_for(ctx.rules.mageia_kernels, arch))
    if not cands:
        raise DetectionError(
            f"{ctx.url}: no known Mageia kernel path for {arch}", hint="pass --kernel and --initrd"
        )
    guess = name_os(ctx, "mageia", info.version)

    def finish() -> Resolved:
        k, i = checked(cands[0], "VERSION")
        return Resolved(
            "mageia",
            guess,
            arch,
            k,
            i,
            {},
            ["VERSION"],
            ctx.rules.installers["drakx"],
            extra={"kind": info.kind},
        )

    return Finding(finish)


def _archiso(ctx: Context) -> Finding | None:
    rule = ctx.rules.archiso
    version = parse_one_version(ctx.text("arch/version") or "")
    arches = [ctx.arch] if ctx.arch else list(rule.arches)
    kernels = {a: rule.kernel.format(arch=a) for a in arches}
    if version is None and not any(ctx.probe.exists(k) for k in kernels.values()):
        return None
    entry = ctx.db.get(rule.os)

    def finish() -> Resolved:
        found = [a for a in arches if ctx.probe.exists(kernels[a])]
        arch = pick_arch(ctx, found, "arch/boot/")
        k, i = checked((kernels[arch], rule.initrd.format(arch=arch)), "arch/")
        name = entry.name if entry else "Arch Linux"
        guess = OsGuess(
            rule.os, entry.distro if entry else "archlinux", name, version, entry is not None, entry
        )
        evidence = ["arch/version"] if version else [kernels[arch]]
        return Resolved("archiso", guess, arch, k, i, {}, evidence, ctx.rules.installers["archiso"])

    return Finding(finish, exists=tuple(kernels.values()))


def _alpine(ctx: Context) -> Finding | None:
    version = parse_one_version(ctx.text(".alpine-release") or "")
    if version is None:
        return None
    rule = ctx.rules.alpine
    arches = [ctx.arch] if ctx.arch else list(rule.arches)
    markers = {a: rule.marker.format(alpine_arch=rule.arches.get(a, a)) for a in arches}
    guess = name_os(ctx, "alpinelinux", version)

    def finish() -> Resolved:
        found = [a for a in arches if ctx.probe.exists(markers[a])]
        arch = pick_arch(ctx, found, "apks/") if found else ctx.need_arch(ctx.arch, "apks/")
        k, i = checked(choose(rule.kernels, ctx.probe), ".alpine-release")
        return Resolved(
            "alpine", guess, arch, k, i, {}, [".alpine-release"], ctx.rules.installers["alpine"]
        )

    return Finding(finish, exists=(*markers.values(), *(k for k, _ in rule.kernels)))


LAYOUTS: tuple[Layout, ...] = (
    Layout("treeinfo", _treeinfo),
    Layout("debian-installer", _debian_installer),
    Layout("suse-content", _suse_content),
    Layout("suse-products", _suse_products),
    Layout("disk-info", _disk_info),
    Layout("mageia", _mageia),
    Layout("archiso", _archiso),
    Layout("alpine", _alpine),
)
