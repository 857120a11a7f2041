"""Build local install trees for tests, benchmarks and ``make run``.

:func:`build_debian_tree` lays out a Debian mirror's installer tree from the files of the
installed ``debian-installer-12-netboot-<arch>`` package, like ``deb.debian.org`` has it::

    dists/bookworm/main/installer-amd64/
        20230607+deb12u15/images/           (``current`` is a symlink to it)
            MANIFEST                        real d-i format: "path<padding> -- description"
            SHA256SUMS                      "<hex>  ./path" for every regular file, sorted
            netboot/                        the package's netboot tree (= netboot.tar.gz)
                version.info
                debian-installer/amd64/{linux,initrd.gz,pxelinux.0,...}

Each arch is laid out as its mirror directory is: amd64, i386, arm64 and ppc64el as above,
armhf with ``netboot/{vmlinuz,initrd.gz}`` at the top of ``netboot/`` too, mips64el per
platform flavour, ``{malta,loongson-3,octeon}/netboot/{vmlinuz-<version>-<flavour>,initrd.gz}``.

:func:`build_treeinfo_tree` writes a Fedora-like tree (``.treeinfo`` with ``[checksums]``) with
small deterministic fake kernel/initrd files.

Usage: ``python -m treeboot.devtree debian|fedora DIR [DEBIAN-ARCH]`` prints the tree's path.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import sys
from pathlib import Path

from treeboot.errors import MissingToolError
from treeboot.store.cache import file_sha256

DI_IMAGES = Path("/usr/lib/debian-installer/images/12")
DEBIAN_ARCHES = {
    "amd64": "x86_64",
    "i386": "i686",
    "arm64": "aarch64",
    "armhf": "armv7l",
    "ppc64el": "ppc64le",
    "mips64el": "mips64el",
}
_MIPS_FLAVOURS = ("malta", "loongson-3", "octeon")
_MANIFEST_TEXT = {
    "netboot/debian-installer": "PXE boot directory for tftp server",
    "netboot/netboot.tar.gz": "tarball of PXE boot directory",
    "netboot/mini.iso": "tiny CD image that boots the netboot installer",
    "netboot/vmlinuz": "kernel for use with TFTP",
    "netboot/initrd.gz": "initrd for use with TFTP",
}


def build_debian_tree(root: Path, arch: str = "amd64", *, suite: str = "bookworm") -> Path:
    """Lay out ``root/dists/<suite>/main/installer-<arch>/``; return that directory."""
    source = DI_IMAGES / arch if arch == "mips64el" else DI_IMAGES / arch / "text"
    if not any(p.name.startswith(("linux", "vmlinu")) for p in source.rglob("*")):
        raise MissingToolError(
            f"{source} has no debian-installer netboot files for {arch}",
            hint=f"install them: apt-get install debian-installer-12-netboot-{arch}",
        )
    build = _installer_build(next(DI_IMAGES.glob("*/text/version.info"), source / "version.info"))
    installer = root / "dists" / suite / "main" / f"installer-{arch}"
    images = installer / build / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    if arch == "mips64el":
        _mips_flavours(source, images)
    else:
        netboot = images / "netboot"
        shutil.copytree(source, netboot, symlinks=True)  # copies, never links to /usr files
        top = source / "debian-installer" / arch
        for name in ("vmlinuz", "initrd.gz") if arch == "armhf" else ():
            shutil.copyfile(top / name, netboot / name)
    current = installer / "current"
    if current.is_symlink() or current.exists():
        current.unlink()
    current.symlink_to(build)
    (images / "MANIFEST").write_text(debian_manifest(images))
    (images / "SHA256SUMS").write_text(sha256sums(images))
    return installer


def _mips_flavours(source: Path, images: Path) -> None:
    """mips64el: one ``<flavour>/netboot/`` per platform, kernels named with their version."""
    for flavour in _MIPS_FLAVOURS:
        netboot = images / flavour / "netboot"
        netboot.mkdir(parents=True)
        for path in sorted((source / flavour).glob("*")):
            if path.is_file() and path.name.startswith(("vmlinu", "initrd")):
                shutil.copyfile(path, netboot / path.name)


def _installer_build(version_info: Path) -> str:
    m = re.search(r"Installer build:\s*(\S+)", version_info.read_text())
    return m.group(1) if m else "current-build"


def debian_manifest(images: Path) -> str:
    """MANIFEST lines for what exists under ``images`` (d-i's own wording, padded like it)."""
    text = dict(_MANIFEST_TEXT)
    for flavour in _MIPS_FLAVOURS:  # d-i's mips64el MANIFEST names each file
        for path in sorted((images / flavour / "netboot").glob("*")):
            what = "initrd" if path.name.startswith("initrd") else "kernel"
            text[f"{flavour}/netboot/{path.name}"] = f"{what} for {flavour}, for use with TFTP"
    present = [p for p in text if (images / p).exists()]
    width = max([55, *(len(p) for p in present)])
    return "".join(f"{p:<{width}} -- {text[p]}\n" for p in present)


def sha256sums(top: Path) -> str:
    """``sha256sum`` output for every regular file under ``top`` (not symlinks), ``./``-relative."""
    lines = []
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(top).as_posix()
        if path.is_symlink() or not path.is_file() or rel == "SHA256SUMS":
            continue
        lines.append(f"{file_sha256(path)}  ./{rel}\n")
    return "".join(sorted(lines, key=lambda line: line.split("  ", 1)[1]))


def fake_kernel(size: int, seed: str) -> bytes:
    """Incompressible bytes with an x86 boot header (``HdrS`` at 0x202, protocol 2.15)."""
    data = bytearray(random.Random(seed).randbytes(size))
    if size >= 0x210:
        data[0x1FE:0x200] = b"\x55\xaa"
        data[0x202:0x206] = b"HdrS"
        data[0x206:0x208] = (0x020F).to_bytes(2, "little")
    return bytes(data)


def build_treeinfo_tree(
    root: Path,
    *,
    family: str = "Fedora",
    version: str = "39",
    arch: str = "x86_64",
    kernel_size: int = 4 << 20,
    initrd_size: int = 16 << 20,
) -> Path:
    """A Fedora-like tree at ``root``: ``.treeinfo`` + ``images/pxeboot/{vmlinuz,initrd.img}``."""
    pxe = root / "images" / "pxeboot"
    pxe.mkdir(parents=True, exist_ok=True)
    files = {
        "images/pxeboot/vmlinuz": fake_kernel(kernel_size, f"{family}{version}{arch}k"),
        "images/pxeboot/initrd.img": random.Random(f"{family}{version}{arch}i").randbytes(
            initrd_size
        ),
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    sums = "".join(f"{rel} = sha256:{hashlib.sha256(d).hexdigest()}\n" for rel, d in files.items())
    (root / ".treeinfo").write_text(
        f"""[checksums]
{sums}
[general]
arch = {arch}
family = {family}
name = {family} {version}
platforms = {arch}
version = {version}

[header]
type = productmd.treeinfo
version = 1.2

[images-{arch}]
initrd = images/pxeboot/initrd.img
kernel = images/pxeboot/vmlinuz

[release]
name = {family}
short = {family}
version = {version}

[tree]
arch = {arch}
build_timestamp = 1700000000
platforms = {arch}
variants = Everything
"""
    )
    return root


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[0] not in ("debian", "fedora"):
        print("usage: python -m treeboot.devtree debian|fedora DIR [DEBIAN-ARCH]", file=sys.stderr)
        return 2
    root = Path(argv[1])
    root.mkdir(parents=True, exist_ok=True)
    arch = argv[2] if len(argv) == 3 else "amd64"
    tree = build_debian_tree(root, arch) if argv[0] == "debian" else build_treeinfo_tree(root)
    print(os.fspath(tree))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
