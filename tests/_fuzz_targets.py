"""Fuzz targets for treeboot's parsers, shared by tests/test_fuzz.py and bench/fuzz.py.

A target is a parser plus a seed corpus. The property is the same for all: any input either
parses or raises a :class:`~treeboot.errors.TreebootError` subclass, without hanging and without
a memory blow-up. Inputs come from three strategies: random text, structured documents built from
the format's vocabulary (sections, keys, hostile values such as ``..`` paths), and real fixture
files with random edits.

Targets whose module is not importable (written by another helper later) are skipped.
"""

from __future__ import annotations

import contextlib
import importlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from treeboot.errors import TreebootError

SHARED = Path(__file__).resolve().parents[2] / "shared"
URLDETECT = SHARED / "fixtures" / "urldetect"
FAKEMEDIA = SHARED / "fixtures" / "fakemedia"

HOSTILE_VALUES = [
    "../../../../etc/passwd", "/etc/shadow", "images/../../x", "images/pxeboot/vmlinuz",
    "sha256:" + "0" * 64, "sha256:zz", "md5:", ":", "", " ", "\x00", "%(x)s", "$x", "${x}",
    "x" * 5000, "\u202e", "ä", "x86_64", "aarch64", "Fedora", "Debian", "42", "-1", "1e9999",
    "[", "]", "=", "\\", '"', "'", "\t", "\r",
]  # fmt: skip
TREEINFO_SECTIONS = [
    "general", "header", "release", "tree", "images-x86_64", "images-aarch64", "images-xen",
    "checksums", "stage2", "variant-Server", "base_product", "media", "DEFAULT", "",
]  # fmt: skip
TREEINFO_KEYS = [
    "family", "version", "arch", "name", "short", "kernel", "initrd", "boot.iso", "platforms",
    "type", "variants", "mainimage", "images/pxeboot/vmlinuz", "repository", "packagedir",
]  # fmt: skip
CONTENT_KEYS = [
    "PRODUCT", "VERSION", "LABEL", "DISTRO", "BASEARCHS", "DEFAULTBASE", "REPOID", "ARCH.x86_64",
    "META", "KEY", "HASH", "CONTENTSTYLE", "DESCRDIR", "DATADIR", "SUMMARY", "NAME",
]  # fmt: skip


def corpus(*patterns: str) -> list[bytes]:
    out: list[bytes] = []
    for pattern in patterns:
        out += [p.read_bytes() for p in sorted(URLDETECT.glob(pattern)) if p.is_file()]
    return out or [b""]


# --- strategies -----------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed file with a few random byte-level edits (replace, insert, delete, duplicate)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, len(data)))
        if op == "replace" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(max_size=32))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            chunk = data[pos : pos + draw(st.integers(1, 256))]
            data[pos:pos] = chunk * draw(st.integers(1, 4))
    return bytes(data)


@st.composite
def ini_document(draw: st.DrawFn, sections: list[str], keys: list[str]) -> bytes:
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.booleans()):
            lines.append(f"[{draw(st.sampled_from(sections))}]")
        key = draw(st.one_of(st.sampled_from(keys), st.text(max_size=12)))
        value = draw(st.one_of(st.sampled_from(HOSTILE_VALUES), st.text(max_size=40)))
        sep = draw(st.sampled_from([" = ", "=", ": ", " "]))
        lines.append(f"{key}{sep}{value}")
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@st.composite
def keyvalue_document(draw: st.DrawFn, keys: list[str]) -> bytes:
    lines = [
        f"{draw(st.sampled_from(keys))} {draw(st.sampled_from([*HOSTILE_VALUES, 'x86_64 i586']))}"
        for _ in range(draw(st.integers(0, 15)))
    ]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@st.composite
def manifest_document(draw: st.DrawFn) -> bytes:
    lines = [
        f"{draw(st.sampled_from(HOSTILE_VALUES))}{' ' * draw(st.integers(0, 40))}-- "
        f"{draw(st.text(max_size=30))}"
        for _ in range(draw(st.integers(0, 15)))
    ]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@st.composite
def disk_info_document(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(["Debian GNU/Linux", "Ubuntu-Server", "Ubuntu", "", "x" * 300]))
    version = draw(st.sampled_from(["12.4.0", "22.04.3 LTS", "17.10", "", "1" * 200]))
    rest = draw(st.text(max_size=60))
    return f'{name} {version} "{draw(st.text(max_size=20))}" - {rest}'.encode(
        "utf-8", "surrogatepass"
    )


def inputs(seeds: list[bytes], structured: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=2048),
        st.text(max_size=2048).map(lambda s: s.encode("utf-8", "surrogatepass")),
        structured,
        mutated(seeds),
    )


# --- targets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    strategy: Callable[[], st.SearchStrategy[Any]]
    call: Callable[[Any, Any], object]  # (module, input) -> result
    examples: int = 150  # in the test suite; bench/fuzz.py runs many more
    needs: list[str] = field(default_factory=list)

    def load(self) -> Any:
        """The module under test (an import error is a failure, never a skip)."""
        return importlib.import_module(self.module)


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _iso_seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(FAKEMEDIA.glob("*.iso"))] or [b""]


@st.composite
def iso_image(draw: st.DrawFn) -> bytes:
    """A real small ISO with edits in its first 40 sectors (volume descriptors, path tables,
    directory records), or truncated."""
    data = bytearray(draw(st.sampled_from(_iso_seeds_cached())))
    if not data:
        return b""
    for _ in range(draw(st.integers(1, 12))):
        pos = draw(st.integers(16 * 2048, min(len(data), 40 * 2048) - 1))
        width = draw(st.sampled_from([1, 2, 4, 8]))
        data[pos : pos + width] = draw(st.binary(min_size=width, max_size=width))
    if draw(st.integers(0, 9)) == 0:
        del data[draw(st.integers(17 * 2048, len(data))) :]
    return bytes(data)


@cache
def _iso_seeds_cached() -> list[bytes]:
    return _iso_seeds()


@cache
def _osinfo_db() -> Any:
    from treeboot.detect.osinfo import load_osinfo  # type: ignore[attr-defined,unused-ignore]

    return load_osinfo()


def _treeinfo_and_images(mod: Any, data: bytes) -> object:
    """Parse, then pick the images as detection does (path checks included)."""
    from treeboot.detect.rules import load_rules

    ti = mod.parse_treeinfo(data.decode("utf-8", errors="replace"))
    for arch in (None, "x86_64", "aarch64"):
        with contextlib.suppress(TreebootError):
            mod.select_images(ti, arch, load_rules())
    return ti


def call_iso(mod: Any, data: bytes) -> object:
    with tempfile.NamedTemporaryFile(suffix=".iso") as f:
        f.write(data)
        f.flush()
        loc = mod.open_iso(f.name)
        try:
            from treeboot.detect.iso import identify_iso

            return identify_iso(loc, db=_osinfo_db())
        finally:
            loc.close()


class _Includes:
    """A config reader where every include resolves to more fuzzed text: include loops."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __call__(self, path: str) -> bytes | None:
        return self.data


TARGETS: list[Target] = [
    # ISO media: .treeinfo, .disk/info, SUSE content and SHA256SUMS are read by the parsers of
    # the treeinfo/metadata targets; the md5 lists (Ubuntu's md5sum.txt) by isometa's own
    Target(
        "isometa-checksum-list", "treeboot.detect._isometa",
        lambda: inputs([b"0" * 32 + b"  ./linux\n"], manifest_document()),
        lambda m, d: m.parse_checksum_list(text(d), "md5"),
    ),
    # productmd .treeinfo (tree detection and ISO identification)
    Target(
        "treeinfo", "treeboot.detect.treeinfo",
        lambda: inputs(corpus("*/*/.treeinfo", "*/.treeinfo"),
                       ini_document(TREEINFO_SECTIONS, TREEINFO_KEYS)),
        lambda m, d: _treeinfo_and_images(m, d),
    ),
    Target(
        "metadata-manifest", "treeboot.detect.metadata",
        lambda: inputs(corpus("*/*/*/*/*/*/MANIFEST", "*/*/*/MANIFEST"), manifest_document()),
        lambda m, d: m.parse_manifest(m.decode(d)),
    ),
    Target(
        "metadata-sha256sums", "treeboot.detect.metadata",
        lambda: inputs([b"a" * 64 + b"  ./netboot/linux\n"], manifest_document()),
        lambda m, d: m.parse_sha256sums(m.decode(d)),
    ),
    Target(
        "metadata-suse-content", "treeboot.detect.metadata",
        lambda: inputs(corpus("*/*/content", "*/content"), keyvalue_document(CONTENT_KEYS)),
        lambda m, d: m.parse_suse_content(m.decode(d)),
    ),
    Target(
        "metadata-suse-products", "treeboot.detect.metadata",
        lambda: inputs(corpus("*/*/content"), keyvalue_document(CONTENT_KEYS)),
        lambda m, d: m.parse_suse_products(m.decode(d)),
    ),
    Target(
        "metadata-disk-info", "treeboot.detect.metadata",
        lambda: inputs(corpus("*/*/.disk/info"), disk_info_document()),
        lambda m, d: m.parse_disk_info(m.decode(d)),
    ),
    Target(
        "metadata-version", "treeboot.detect.metadata",
        lambda: inputs(corpus("*/*/VERSION", "*/VERSION"), keyvalue_document(["VERSION", "="])),
        lambda m, d: (m.parse_version_info(m.decode(d)), m.parse_mageia_version(m.decode(d)),
                      m.parse_one_version(m.decode(d))),
    ),
    # signature chain files
    Target(
        "release", "treeboot.trust.signature",
        lambda: inputs(
            [b"Origin: Debian\nCodename: bookworm\nSHA256:\n " + b"a" * 64 + b" 12 main/x\n"],
            keyvalue_document(["Origin:", "Suite:", "SHA256:", " ", "  " + "a" * 64 + " 1"]),
        ),
        lambda m, d: m.parse_release(d),
    ),
    Target(
        "sha256sums", "treeboot.trust.signature",
        lambda: inputs([b"a" * 64 + b"  ./netboot/linux\n"], manifest_document()),
        lambda m, d: m.parse_sha256sums(d),
    ),
    # boot loader configs of media
    Target(
        "syslinux-cfg", "treeboot.detect.bootcfg",
        lambda: inputs(
            [b"default vesamenu.c32\nlabel linux\n  kernel vmlinuz\n  append initrd=initrd.img\n"],
            keyvalue_document(["label", "kernel", "linux", "append", "include", "menu", "default",
                               "initrd", "config", "path", "  append"]),
        ),
        lambda m, d: m.parse_syslinux(text(d), "isolinux/isolinux.cfg", _Includes(d)),
    ),
    Target(
        "grub-cfg", "treeboot.detect.bootcfg",
        lambda: inputs(
            [b"menuentry 'Install' {\n  linux /images/pxeboot/vmlinuz quiet\n"
             b"  initrd /images/pxeboot/initrd.img\n}\n"],
            keyvalue_document(["menuentry 'x' {", "}", "linux", "initrd", "source", "submenu x {",
                               "set", "configfile", "if", "fi", "linuxefi", "{"]),
        ),
        lambda m, d: m.parse_grub(text(d), "boot/grub/grub.cfg", _Includes(d)),
    ),
    Target(
        "bls-entry", "treeboot.detect.bootcfg",
        lambda: inputs([b"title x\nlinux /vmlinuz\ninitrd /initrd\noptions a=b\n"],
                       keyvalue_document(["title", "linux", "initrd", "options", "version"])),
        lambda m, d: m.parse_bls(text(d), "loader/entries/x.conf"),
    ),
    # ISO9660 structures (pycdlib behind treeboot's IsoLocation) and media identification
    Target("iso9660", "treeboot.locate.iso", iso_image, call_iso, examples=40),
]  # fmt: skip


def by_name(name: str) -> Target:
    for t in TARGETS:
        if t.name == name:
            return t
    raise KeyError(name)


def check_one(target: Target, module: Any, data: Any) -> None:
    """The property: parse, or raise a TreebootError subclass. Anything else propagates."""
    with contextlib.suppress(TreebootError):
        target.call(module, data)
