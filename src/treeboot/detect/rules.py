"""The tree-detection rule tables (``rules/distros.toml``, ``rules/tree_layouts.toml``).

Loaded once into frozen dataclasses; an unknown key or a bad regex fails loudly at load time
(``tests/test_detect_rules.py`` loads every rule).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treeboot.detect.osinfo import version_key
from treeboot.errors import MetadataError

KernelPair = tuple[str, str]
KernelTable = Mapping[str, tuple[KernelPair, ...]]  # arch (or "all") -> alternatives


@dataclass(frozen=True)
class InstallerRule:
    name: str
    distros: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    boot_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class PatternRule:
    """A regex (searched) naming a distro, optionally only from ``min_version`` on."""

    pattern: str
    distro: str
    min_version: str | None = None

    def matches(self, text: str, version: str | None = None) -> bool:
        if not re.search(self.pattern, text):
            return False
        if self.min_version is None:
            return True
        have, need = version_key(version), version_key(self.min_version)
        return have is not None and need is not None and have >= need


@dataclass(frozen=True)
class InstallerHint:
    kernel: str  # regex on the kernel path
    installer: str


@dataclass(frozen=True)
class DiTree:
    manifest: str
    images: str
    suite: str | None = None


@dataclass(frozen=True)
class SuseRule:
    rolling_version: str
    rolling_name: str


@dataclass(frozen=True)
class ArchisoRule:
    os: str
    arches: tuple[str, ...]
    kernel: str
    initrd: str


@dataclass(frozen=True)
class AlpineRule:
    marker: str
    kernels: tuple[KernelPair, ...]
    arches: Mapping[str, str]


@dataclass(frozen=True)
class Rules:
    installers: Mapping[str, InstallerRule]
    treeinfo_families: tuple[PatternRule, ...]
    installer_hints: tuple[InstallerHint, ...]
    debian_arches: Mapping[str, str]
    codenames: Mapping[str, Mapping[str, str]]
    suites: Mapping[str, str]
    probe_reads: tuple[str, ...]
    probe_exists: tuple[str, ...]
    probe_canary: str
    di_trees: tuple[DiTree, ...]
    di_kernels: KernelTable
    disk_info: tuple[PatternRule, ...]
    disk_info_kernels: Mapping[str, KernelTable]
    suse_products: tuple[PatternRule, ...]
    suse: SuseRule
    suse_kernels: KernelTable
    suse_arches: Mapping[str, str]
    mageia_kernels: KernelTable
    archiso: ArchisoRule
    alpine: AlpineRule

    def debian_arch(self, arch: str) -> str:
        return self.debian_arches.get(arch, arch)

    def installer_for_distro(self, distro: str | None) -> InstallerRule | None:
        return next((r for r in self.installers.values() if distro in r.distros), None)

    def installer_for_kernel(self, kernel: str | None) -> InstallerRule | None:
        for hint in self.installer_hints:
            if kernel and re.search(hint.kernel, kernel):
                return self.installers[hint.installer]
        return None

    def codename_version(self, distro: str, codename: str) -> str | None:
        return self.codenames.get(distro, {}).get(codename.lower())


def kernels_for(table: KernelTable, arch: str) -> tuple[KernelPair, ...]:
    """The arch's alternatives, else the ``all`` ones."""
    return table.get(arch) or table.get("all") or ()


def _pairs(raw: Any) -> tuple[KernelPair, ...]:
    out = []
    for pair in raw:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise ValueError(f"expected [kernel, initrd], got {pair!r}")
        out.append((pair[0], pair[1]))
    return tuple(out)


def _table(raw: Mapping[str, Any]) -> KernelTable:
    return {arch: _pairs(pairs) for arch, pairs in raw.items()}


def _patterns(raw: list[dict[str, Any]]) -> tuple[PatternRule, ...]:
    rules = tuple(PatternRule(**r) for r in raw)
    for r in rules:
        re.compile(r.pattern)
    return rules


def load_rule_table(name: str) -> dict[str, Any]:
    """The packaged ``rules/<name>``, parsed; MetadataError if it is not valid TOML."""
    # The package's own file (never imported from a zip; importlib.resources costs 9 ms).
    text = (Path(__file__).resolve().parents[1] / "rules" / name).read_text("utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MetadataError(f"rules/{name} is not valid TOML: {e}") from e


def _installers(raw: Mapping[str, Any]) -> dict[str, InstallerRule]:
    return {
        name: InstallerRule(name, **{k: tuple(v) for k, v in body.items()})
        for name, body in raw.items()
    }


@functools.cache
def load_rules() -> Rules:
    d = load_rule_table("distros.toml")
    t = load_rule_table("tree_layouts.toml")
    hints = tuple(InstallerHint(**h) for h in d["installer_hints"])
    for h in hints:
        re.compile(h.kernel)
    alpine = dict(t["alpine"])
    rules = Rules(
        installers=_installers(d["installers"]),
        treeinfo_families=_patterns(d["treeinfo_families"]),
        installer_hints=hints,
        debian_arches=dict(d["debian_arches"]),
        codenames={k: dict(v) for k, v in d["codenames"].items()},
        suites=dict(d["suites"]),
        probe_reads=tuple(t["probe"]["read"]),
        probe_exists=tuple(t["probe"]["exists"]),
        probe_canary=t["probe"]["canary"],
        di_trees=tuple(DiTree(**x) for x in t["di_trees"]),
        di_kernels=_table(t["di_kernels"]),
        disk_info=_patterns(t["disk_info"]),
        disk_info_kernels={k: _table(v) for k, v in t["disk_info_kernels"].items()},
        suse_products=_patterns(t["suse_products"]),
        suse=SuseRule(**t["suse"]),
        suse_kernels=_table(t["suse_kernels"]),
        suse_arches=dict(t["suse_arches"]),
        mageia_kernels=_table(t["mageia_kernels"]),
        archiso=ArchisoRule(**{**t["archiso"], "arches": tuple(t["archiso"]["arches"])}),
        alpine=AlpineRule(
            marker=alpine["marker"], kernels=_pairs(alpine["kernels"]), arches=alpine["arches"]
        ),
    )
    unknown = {h.installer for h in hints} - set(rules.installers)
    if unknown:
        raise ValueError(f"installer_hints name unknown installers: {sorted(unknown)}")
    re.compile(rules.suse.rolling_version)
    return rules
