"""The guest CPU model per release (rules/cpu_models.toml): cheapest model with the level."""

from __future__ import annotations

import pytest

from treeboot.arch import Architecture
from treeboot.errors import UsageError
from treeboot.prepare.cpumodel import choose_cpu, required_level

X86 = Architecture.X86_64
V2 = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16"


@pytest.mark.parametrize(
    ("short_id", "level"),
    [
        ("debian12", "x86-64"),
        ("debian13", "x86-64"),
        ("ubuntu24.04", "x86-64"),
        ("fedora41", "x86-64"),
        ("centos7.0", "x86-64"),
        ("centos-stream8", "x86-64"),
        ("rhel8.10", "x86-64"),
        ("rhel9.5", "x86-64-v2"),
        ("rhel9.7", "x86-64-v2"),  # newer than the database: the rule still holds
        ("centos-stream9", "x86-64-v2"),
        ("almalinux9", "x86-64-v2"),
        ("rocky9", "x86-64-v2"),
        ("ol9.4", "x86-64-v2"),
        ("rhel10.0", "x86-64-v3"),
        ("almalinux-kitten10", "x86-64-v3"),
        ("centos-stream10", "x86-64-v3"),
        ("rhel11.0", "x86-64-v3"),  # the highest matching rule wins
        ("sles15sp6", "x86-64"),
        ("sles16.0", "x86-64-v2"),
        ("opensuse15.6", "x86-64"),
        ("opensuse16.0", "x86-64-v2"),
        ("opensusetumbleweed", "x86-64"),
        ("opensuse-unknown", None),  # a family without a version: not identified enough
        (None, None),
    ],
)
def test_required_level(short_id: str | None, level: str | None) -> None:
    assert required_level(X86, short_id) == level


def test_tcg_gets_the_cheapest_model_with_the_level() -> None:
    assert choose_cpu(X86, "tcg", "debian12").model == "qemu64"
    assert choose_cpu(X86, "tcg", "rhel9.4").model == V2
    assert choose_cpu(X86, "tcg", "rhel10.0").model == "max"
    choice = choose_cpu(X86, "tcg", "rhel9.4")
    assert choice.level == "x86-64-v2" and "rhel9.4 needs x86-64-v2" in choice.reason


def test_an_unidentified_release_gets_the_richest_model() -> None:
    assert choose_cpu(X86, "tcg", None).model == "max"
    assert choose_cpu(X86, "tcg", "linux-unknown").model == "max"


def test_kvm_is_always_the_host_cpu() -> None:
    assert choose_cpu(X86, "kvm", "debian12").model == "host"


def test_other_arches_keep_their_machine_default() -> None:
    assert choose_cpu(Architecture.AARCH64, "tcg", "debian12").model == "max,pauth-impdef=on"
    assert choose_cpu(Architecture.PPC64LE, "tcg", "debian12").model == "power9"


def test_cpu_option_overrides_and_is_checked() -> None:
    assert choose_cpu(X86, "tcg", "debian12", "max").model == "max"
    assert choose_cpu(X86, "kvm", "debian12", "qemu64,+sse4.2").model == "qemu64,+sse4.2"
    with pytest.raises(UsageError, match="not a CPU model"):
        choose_cpu(X86, "tcg", "debian12", "max -device evil")


def test_every_level_model_is_one_qemu_knows() -> None:
    """The models in the table are QEMU's (qemu-system-x86_64 -cpu help)."""
    import shutil
    import subprocess

    from treeboot.prepare.cpumodel import _tables

    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs qemu-system-x86")
    known = subprocess.run(["qemu-system-x86_64", "-cpu", "help"], capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    for model in _tables()["x86_64"].levels.values():
        assert model.split(",")[0] in known, model
