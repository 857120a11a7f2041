"""The accelerator probe: KVM only when a canary guest proves it works; never hangs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from treeboot.arch import Architecture
from treeboot.boot import accel
from treeboot.boot.accel import Accel, canary_image, choose_accel, run_canary
from treeboot.errors import BootError, UsageError


def _gone(pid: int | None) -> bool:
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_canary_image_layout() -> None:
    image = canary_image()
    assert len(image) == 0x10000
    assert image[0xFFF0:0xFFF5] == bytes([0xEA, 0, 0, 0, 0xF0])  # ljmp $0xf000,$0
    assert image[0] == 0xFA  # cli


def test_canary_reaches_long_mode_under_tcg() -> None:
    """The canary itself is right: under emulation it walks real -> protected -> long mode."""
    choice = run_canary(Accel.TCG, timeout=20.0)
    assert choice.accel is Accel.TCG
    assert "reached long mode" in choice.reason
    assert _gone(choice.canary_pid)


@pytest.mark.timeout(60)  # the probe has its own 3 s limit: a hang fails here, not forever
@pytest.mark.skipif(not Path("/dev/kvm").exists(), reason="needs /dev/kvm")
def test_auto_probe_answers_and_reaps_its_canary() -> None:
    """Where KVM guests hang (this CI host), auto falls back to tcg and says why."""
    choice = choose_accel("auto", Architecture.X86_64, use_cache=False, timeout=3.0)
    assert choice.canary_pid is not None and _gone(choice.canary_pid)
    if choice.accel is Accel.TCG:
        assert "kvm canary guest" in choice.reason
    else:
        assert "reached long mode" in choice.reason


def test_explicit_tcg_runs_nothing() -> None:
    choice = choose_accel("tcg", Architecture.X86_64)
    assert choice == accel.AccelChoice(Accel.TCG, "requested")


def test_unknown_accel_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        choose_accel("hvf", Architecture.X86_64)


def test_no_kvm_device_means_tcg_without_probe(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setattr(accel, "KVM_DEVICE", tmp_path / "kvm")
    monkeypatch.setattr(accel, "run_canary", _must_not_run)
    choice = choose_accel("auto", Architecture.X86_64)
    assert choice.accel is Accel.TCG and "does not exist" in choice.reason
    with pytest.raises(BootError, match="does not exist"):
        choose_accel("kvm", Architecture.X86_64)


def test_foreign_guest_arch_means_tcg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "run_canary", _must_not_run)
    monkeypatch.setattr(Architecture, "native", classmethod(lambda cls: Architecture.X86_64))
    choice = choose_accel("auto", Architecture.AARCH64)
    assert choice.accel is Accel.TCG and "emulation" in choice.reason


@pytest.mark.skipif(not Path("/dev/kvm").exists(), reason="needs /dev/kvm")
def test_verdict_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TREEBOOT_CACHE", str(tmp_path))
    monkeypatch.setattr("treeboot.boot.accel.os.access", lambda *a: True)
    calls: list[Accel] = []

    def fake_canary(a: Accel, *, timeout: float) -> accel.AccelChoice:
        calls.append(a)
        return accel.AccelChoice(Accel.TCG, "kvm canary guest hung after real mode")

    monkeypatch.setattr(accel, "run_canary", fake_canary)
    first = choose_accel("auto", Architecture.X86_64)
    second = choose_accel("auto", Architecture.X86_64)
    assert calls == [Accel.KVM]
    assert not first.cached and second.cached and second.accel is Accel.TCG
    # A stale verdict is probed again.
    entry = json.loads((tmp_path / "accel-probe.json").read_text())
    entry["time"] -= accel.CACHE_TTL + 1
    (tmp_path / "accel-probe.json").write_text(json.dumps(entry))
    choose_accel("auto", Architecture.X86_64)
    assert len(calls) == 2


def _must_not_run(*args: object, **kwargs: object) -> accel.AccelChoice:
    raise AssertionError("the canary must not run")
