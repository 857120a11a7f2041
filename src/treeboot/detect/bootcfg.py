"""Boot loader configuration of install media: which kernel, initrd and arguments it boots.

Reads the formats media ship: SYSLINUX/ISOLINUX (``isolinux.cfg`` with ``include``), GRUB
(``grub.cfg``, ``loopback.cfg``: ``menuentry``/``submenu``/``linux``/``initrd``/``set default``)
and systemd-boot (``loader/entries/*.conf``). Only static configuration is understood: lines
that use unresolved GRUB variables are skipped, never evaluated.

References: syslinux.org wiki "Config" and "Directives/include"; GRUB manual "Shell-like
scripting" and "menuentry"; UAPI Boot Loader Specification (type #1 entries).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

Reader = Callable[[str], bytes | None]

MAX_CONFIG_SIZE = 1024 * 1024
_MAX_INCLUDES = 32
# Config files, in the order they are tried. "{arch}" is expanded from boot/<arch>/loader dirs.
SYSLINUX_CONFIGS = (
    "isolinux/isolinux.cfg",
    "boot/isolinux/isolinux.cfg",
    "isolinux.cfg",
    "syslinux/syslinux.cfg",
    "boot/syslinux/syslinux.cfg",
    "syslinux.cfg",
    "boot/{arch}/loader/isolinux.cfg",
)
GRUB_CONFIGS = (
    "boot/grub/grub.cfg",
    "boot/grub2/grub.cfg",
    "EFI/BOOT/grub.cfg",
    "EFI/boot/grub.cfg",
    "boot/grub/loopback.cfg",
    "boot/{arch}/grub2-efi/grub.cfg",
)
BLS_DIR = "loader/entries"
# Arguments that make sense only on physical media or interactively; dropped from boot_args.
_DROP_ARGS = ("initrd=", "BOOT_IMAGE=", "rd.live.check")
_NOT_LINUX = re.compile(r"(\.c32|\.com|\.0|\.bin|\.efi|memtest[^/]*|ipxe\.lkrn)$", re.IGNORECASE)


@dataclass(frozen=True)
class BootEntry:
    """One boot menu entry that starts a Linux kernel."""

    label: str
    kernel: str  # path inside the medium, no leading "/"
    initrds: tuple[str, ...]
    args: tuple[str, ...]
    source: str  # the config file it came from
    default: bool = False

    @property
    def initrd(self) -> str | None:
        """The main initrd: microcode images come first by convention, the initramfs last."""
        return self.initrds[-1] if self.initrds else None


@dataclass(frozen=True)
class BootConfig:
    entries: tuple[BootEntry, ...] = ()
    files: tuple[str, ...] = ()  # config files that were read
    problems: tuple[str, ...] = field(default=())

    def choose(self, kernel: str | None = None, initrd: str | None = None) -> BootEntry | None:
        """The entry the medium boots by default, among those booting ``kernel`` (and
        ``initrd``) when given."""
        pool = [e for e in self.entries if kernel is None or _same(e.kernel, kernel)]
        pool = [e for e in pool if e.initrds] or pool
        if initrd is not None:
            pool = [e for e in pool if any(_same(i, initrd) for i in e.initrds)] or pool
        for e in pool:
            if e.default:
                return e
        return pool[0] if pool else None


def _same(a: str, b: str) -> bool:
    return a.strip("/").casefold() == b.strip("/").casefold()


def _clean_args(args: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """Split ``initrd=a,b`` out of an argument list and drop media-only arguments."""
    kept: list[str] = []
    initrds: list[str] = []
    for a in args:
        if a.startswith("initrd="):
            initrds += [p for p in a[len("initrd=") :].split(",") if p]
        if "$" in a or any(a == d or (d.endswith("=") and a.startswith(d)) for d in _DROP_ARGS):
            continue
        kept.append(a)
    return tuple(kept), initrds


def _resolve(path: str, base: str) -> str | None:
    """A loader path as a path inside the medium (GRUB device prefixes removed)."""
    path = re.sub(r"^\([^)]*\)", "", path.strip())
    if not path or "$" in path:
        return None
    joined = path if path.startswith("/") else posixpath.join("/", base, path)
    return posixpath.normpath(joined).lstrip("/")


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=False, posix=True)
    except ValueError:
        return line.split()


# --------------------------------------------------------------------------- SYSLINUX


@dataclass
class _SysEntry:
    label: str
    kernel: str | None = None
    args: list[str] = field(default_factory=list)
    initrds: list[str] = field(default_factory=list)
    menu_default: bool = False


@dataclass
class _SysState:
    base: str
    read: Reader
    entries: list[_SysEntry] = field(default_factory=list)
    default: str | None = None
    files: list[str] = field(default_factory=list)
    budget: int = _MAX_INCLUDES


def parse_syslinux(text: str, cfg_path: str, read: Reader | None = None) -> list[BootEntry]:
    """Entries of a SYSLINUX/ISOLINUX config; ``include`` files are read through ``read``."""
    state = _SysState(base=posixpath.dirname(cfg_path), read=read or (lambda _p: None))
    _sys_lines(text, cfg_path, state)
    return _sys_finish(state, cfg_path)


def _sys_lines(text: str, cfg_path: str, st: _SysState) -> None:
    st.files.append(cfg_path)
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        key, rest = key.lower(), rest.strip()
        if key == "menu":
            sub, _, arg = rest.partition(" ")
            sub = sub.lower()
            if sub == "default" and st.entries:
                st.entries[-1].menu_default = True
            elif sub == "include":
                _sys_include(arg.split()[0] if arg.split() else "", st)
            elif sub == "label" and st.entries:
                st.entries[-1].label = st.entries[-1].label or arg
            continue
        _sys_directive(key, rest, st)


def _sys_directive(key: str, rest: str, st: _SysState) -> None:
    cur = st.entries[-1] if st.entries else None
    if key == "label":
        st.entries.append(_SysEntry(label=rest))
    elif key in ("include", "config") and rest:
        _sys_include(rest.split()[0], st)
    elif key == "default" and rest:
        words = rest.split()
        if len(words) > 1 and not _NOT_LINUX.search(words[0]):
            # "DEFAULT vmlinuz args" without labels: an implicit entry.
            st.entries.append(_SysEntry(label="default", kernel=words[0], args=words[1:]))
            st.default = "default"
        elif not _NOT_LINUX.search(words[0]):
            st.default = words[0]
    elif key == "ontimeout" and rest and st.default is None:
        st.default = rest.split()[0]
    elif cur is None:
        return
    elif key in ("kernel", "linux"):
        cur.kernel = rest.split()[0] if rest else None
        cur.args += rest.split()[1:]
    elif key == "append":
        cur.args = [] if rest == "-" else rest.split()
    elif key == "initrd" and rest:
        cur.initrds += [p for p in rest.split()[0].split(",") if p]


def _sys_include(name: str, st: _SysState) -> None:
    path = _resolve(name, st.base)
    if not path or st.budget <= 0 or path in st.files:
        return
    st.budget -= 1
    data = st.read(path)
    if data is not None and len(data) <= MAX_CONFIG_SIZE:
        _sys_lines(data.decode("utf-8", errors="replace"), path, st)


def _sys_finish(st: _SysState, cfg_path: str) -> list[BootEntry]:
    linux = [e for e in st.entries if e.kernel and not _NOT_LINUX.search(e.kernel)]
    marked = any(e.menu_default for e in linux)  # "MENU DEFAULT" wins over "DEFAULT label"
    out: list[BootEntry] = []
    for e in linux:
        kernel = _resolve(e.kernel or "", st.base)
        if kernel is None:
            continue
        args, from_append = _clean_args(e.args)
        initrds = [p for p in (_resolve(i, st.base) for i in e.initrds + from_append) if p]
        is_default = e.menu_default if marked else st.default == e.label
        out.append(BootEntry(e.label, kernel, tuple(initrds), args, cfg_path, is_default))
    return out


def _with_default(e: BootEntry, default: bool) -> BootEntry:
    return BootEntry(e.label, e.kernel, e.initrds, e.args, e.source, default)


# --------------------------------------------------------------------------- GRUB


@dataclass
class _GrubState:
    read: Reader
    files: list[str] = field(default_factory=list)
    default: str | None = None
    budget: int = _MAX_INCLUDES


def parse_grub(text: str, cfg_path: str, read: Reader | None = None) -> list[BootEntry]:
    """Entries of a GRUB config (``menuentry``, ``submenu``, literal ``source``/``configfile``)."""
    st = _GrubState(read=read or (lambda _p: None))
    raw = _grub_block(text.splitlines(), 0, cfg_path, st, prefix="")[0]
    default = st.default or "0"
    out = []
    for index, title, e in raw:
        is_default = default in (index, title)
        out.append(_with_default(e, is_default))
    return out


_GrubRaw = tuple[str, str, BootEntry]


def _grub_block(
    lines: list[str], i: int, cfg: str, st: _GrubState, prefix: str
) -> tuple[list[_GrubRaw], int]:
    """Parse lines from ``i`` up to the closing brace of the current block."""
    entries: list[_GrubRaw] = []
    count = 0
    while i < len(lines):
        words = _split(lines[i].strip())
        i += 1
        if not words or words[0].startswith("#"):
            continue
        head = words[0]
        if head == "}":
            break
        if head in ("menuentry", "submenu"):
            title = next((w for w in words[1:] if not w.startswith("-") and w != "{"), "")
            index = f"{prefix}{count}"
            count += 1
            if head == "submenu":
                sub, i = _grub_block(lines, i, cfg, st, prefix=f"{index}>")
                entries += sub
                continue
            body_end = _block_end(lines, i)
            entry = _grub_entry(lines[i:body_end], title, cfg)
            i = body_end + 1
            if entry is not None:
                entries.append((index, title, entry))
        elif head == "set" and len(words) > 1 and words[1].startswith("default="):
            st.default = words[1].split("=", 1)[1].strip("\"'")
        elif head in ("source", "configfile") and len(words) > 1 and not prefix:
            entries += _grub_include(words[1], st, count_offset=count)
    return entries, i


def _block_end(lines: list[str], i: int) -> int:
    depth = 1
    while i < len(lines):
        s = lines[i].strip()
        depth += s.endswith("{") - (s == "}" or s.startswith("}"))
        if depth <= 0:
            return i
        i += 1
    return i


def _grub_entry(body: list[str], title: str, cfg: str) -> BootEntry | None:
    kernel: str | None = None
    args: list[str] = []
    initrds: list[str] = []
    for line in body:
        words = _split(line.strip())
        if not words:
            continue
        if words[0] in ("linux", "linuxefi", "linux16") and len(words) > 1:
            kernel = _resolve(words[1], "")
            args = words[2:]
        elif words[0] in ("initrd", "initrdefi", "initrd16"):
            initrds = [p for p in (_resolve(w, "") for w in words[1:]) if p]
    if kernel is None or _NOT_LINUX.search(kernel):
        return None
    kept, _ = _clean_args(args)
    return BootEntry(title, kernel, tuple(initrds), kept, cfg)


def _grub_include(name: str, st: _GrubState, count_offset: int) -> list[_GrubRaw]:
    path = _resolve(name, "")
    if not path or st.budget <= 0 or path in st.files:
        return []
    st.budget -= 1
    st.files.append(path)
    data = st.read(path)
    if data is None or len(data) > MAX_CONFIG_SIZE:
        return []
    sub, _ = _grub_block(data.decode("utf-8", errors="replace").splitlines(), 0, path, st, "")
    # Indices continue the including file's numbering.
    return [(str(int(ix) + count_offset) if ix.isdigit() else ix, t, e) for ix, t, e in sub]


# --------------------------------------------------------------------------- BLS


def parse_bls(text: str, path: str) -> BootEntry | None:
    """A Boot Loader Specification type #1 entry (``linux``, ``initrd``, ``options``)."""
    kernel: str | None = None
    initrds: list[str] = []
    options: list[str] = []
    title = posixpath.basename(path)
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        value = value.strip()
        if key == "title":
            title = value
        elif key == "linux":
            kernel = _resolve(value, "")
        elif key == "initrd":
            initrds += [p for p in (_resolve(v, "") for v in value.split()) if p]
        elif key == "options":
            options += value.split()
    if kernel is None:
        return None
    kept, _ = _clean_args(options)
    return BootEntry(title, kernel, tuple(initrds), kept, path)


# --------------------------------------------------------------------------- media


def read_boot_config(
    read: Reader, listdir: Callable[[str], list[str] | None] | None = None
) -> BootConfig:
    """Every Linux boot entry the medium's loaders define, SYSLINUX first, then GRUB, BLS."""
    arches = _loader_arches(listdir)
    entries: list[BootEntry] = []
    files: list[str] = []
    problems: list[str] = []
    for template in SYSLINUX_CONFIGS + GRUB_CONFIGS:
        for path in _expand(template, arches):
            if path in files:
                continue
            data = read(path)
            if data is None:
                continue
            if len(data) > MAX_CONFIG_SIZE:
                problems.append(f"{path}: larger than {MAX_CONFIG_SIZE} bytes, skipped")
                continue
            text = data.decode("utf-8", errors="replace")
            parser = parse_syslinux if template in SYSLINUX_CONFIGS else parse_grub
            found = parser(text, path, read)
            files.append(path)
            entries += [e for e in found if e not in entries]
    for name in sorted((listdir(BLS_DIR) if listdir else None) or []):
        if name.endswith(".conf"):
            data = read(f"{BLS_DIR}/{name}")
            bls = parse_bls(data.decode("utf-8", "replace"), f"{BLS_DIR}/{name}") if data else None
            if bls is not None:
                entries.append(bls)
                files.append(f"{BLS_DIR}/{name}")
    return BootConfig(tuple(entries), tuple(files), tuple(problems))


def _loader_arches(listdir: Callable[[str], list[str] | None] | None) -> list[str]:
    if listdir is None:
        return []
    return [d for d in (listdir("boot") or []) if listdir(f"boot/{d}/loader") is not None] or [
        d for d in (listdir("boot") or []) if listdir(f"boot/{d}/grub2-efi") is not None
    ]


def _expand(template: str, arches: list[str]) -> list[str]:
    if "{arch}" not in template:
        return [template]
    return [template.format(arch=a) for a in arches]
