"""Every tree-detection rule table loads into its dataclasses and is self-consistent."""

from __future__ import annotations

import re
import tomllib
from importlib import resources

import pytest

from treeboot.arch import norm_arch
from treeboot.detect.rules import (
    DiTree,
    InstallerRule,
    PatternRule,
    Rules,
    _installers,
    _pairs,
    _patterns,
    kernels_for,
    load_rules,
)
from treeboot.locate.base import safe_relpath

MINE = ("distros.toml", "tree_layouts.toml")


@pytest.fixture(scope="module")
def rules() -> Rules:
    return load_rules()


def test_every_rules_file_is_valid_toml() -> None:
    folder = resources.files("treeboot").joinpath("rules")
    names = [p.name for p in folder.iterdir() if p.name.endswith(".toml")]
    assert set(MINE) <= set(names)
    for name in names:
        tomllib.loads(folder.joinpath(name).read_text("utf-8"))


def test_rules_load_into_dataclasses(rules: Rules) -> None:
    assert all(isinstance(r, InstallerRule) for r in rules.installers.values())
    assert all(isinstance(r, PatternRule) for r in rules.treeinfo_families + rules.disk_info)
    assert all(isinstance(t, DiTree) for t in rules.di_trees)
    assert {"anaconda", "debian-installer", "subiquity", "linuxrc", "archiso", "alpine",
            "drakx"} <= set(rules.installers)


def test_regexes_compile(rules: Rules) -> None:
    for r in (*rules.treeinfo_families, *rules.disk_info, *rules.suse_products):
        re.compile(r.pattern)
    for h in rules.installer_hints:
        assert h.installer in rules.installers
        re.compile(h.kernel)


def test_no_distro_has_two_installers(rules: Rules) -> None:
    seen: dict[str, str] = {}
    for inst in rules.installers.values():
        for distro in inst.distros:
            assert distro not in seen, f"{distro}: {seen.get(distro)} and {inst.name}"
            seen[distro] = inst.name


def test_kernel_paths_are_relative_and_safe(rules: Rules) -> None:
    names = {"arch": "x86_64", "debarch": "amd64", "installer": "debian-installer",
             "suse_arch": "x86_64"}
    tables = [rules.di_kernels, rules.suse_kernels, rules.mageia_kernels,
              *rules.disk_info_kernels.values()]
    pairs = [p for t in tables for ps in t.values() for p in ps] + list(rules.alpine.kernels)
    pairs.append((rules.archiso.kernel, rules.archiso.initrd))
    for kernel, initrd in pairs:
        for path in (kernel.format(**names), initrd.format(**names)):
            assert safe_relpath(path) == path
    for path in (*rules.probe_reads, *rules.probe_exists):
        assert safe_relpath(path) == path


def test_every_debian_arch_has_a_netboot_kernel(rules: Rules) -> None:
    for arch in rules.debian_arches:
        assert kernels_for(rules.di_kernels, arch), arch
    assert {norm_arch(d) for d in rules.debian_arches.values()} == set(rules.debian_arches)


def test_arch_spellings() -> None:
    assert [norm_arch(a) for a in ("amd64", "X86_64_V2", "i586", "arm64", "ppc64el")] == [
        "x86_64", "x86_64", "i686", "aarch64", "ppc64le"]
    assert norm_arch("ppc64") == "ppc64"  # big-endian stays itself (SLES 11)


def test_codename_tables(rules: Rules) -> None:
    assert rules.codename_version("debian", "Bookworm") == "12"
    assert rules.codename_version("ubuntu", "noble") == "24.04"
    assert rules.suites["sid"] == "testing"


def test_min_version_patterns() -> None:
    rule = PatternRule("^SLES", "sle", "15")
    assert rule.matches("SLES15-SP5", "15.5") and not rule.matches("SLES", "12.5")
    assert not rule.matches("SLES", None)


def test_loaders_reject_unknown_keys_and_bad_pairs() -> None:
    with pytest.raises(TypeError):
        _patterns([{"pattern": "x", "distro": "y", "typo": 1}])
    with pytest.raises(TypeError):
        _installers({"x": {"distro": ["oops"]}})
    with pytest.raises(ValueError):
        _pairs([["only-a-kernel"]])
    with pytest.raises(re.error):
        _patterns([{"pattern": "(", "distro": "y"}])
