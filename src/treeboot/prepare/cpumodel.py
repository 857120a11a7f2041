"""The guest's CPU model: the cheapest one that runs the release, as data.

Under TCG every CPU feature is emulated and the rich ones cost time (``rules/cpu_models.toml``
has the measurements), so an identified release gets the model of the x86-64 level it needs;
an unidentified one gets the arch's richest model (``tcg_cpu`` in ``rules/machines.toml``),
which runs anything. KVM always passes the host CPU through. ``--cpu MODEL`` overrides it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from treeboot.arch import Architecture
from treeboot.detect.rules import load_rule_table
from treeboot.errors import MetadataError, UsageError

# A QEMU -cpu value: a model name, then ,prop=value or ,+feature / ,-feature.
_MODEL = re.compile(r"[A-Za-z0-9_.-]+(,[+-]?[A-Za-z0-9_.]+(=[A-Za-z0-9_.]+)?)*")


@dataclass(frozen=True)
class CpuChoice:
    model: str | None  # None: QEMU's default for the machine
    level: str | None  # the x86-64 level the release needs, when the table knows it
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "level": self.level, "reason": self.reason}


@dataclass(frozen=True)
class _Require:
    pattern: re.Pattern[str]
    since: int
    level: str


@dataclass(frozen=True)
class _ArchTable:
    levels: dict[str, str]
    require: tuple[_Require, ...]


@functools.cache
def _tables() -> dict[str, _ArchTable]:
    raw = load_rule_table("cpu_models.toml")
    out: dict[str, _ArchTable] = {}
    for arch, body in raw.items():
        levels = dict(body.get("levels", {}))
        require = []
        for r in body.get("require", []):
            if r["level"] not in levels:
                raise MetadataError(f"rules/cpu_models.toml: {arch}: no model for {r['level']}")
            pattern = re.compile(rf"(?:{r['short_id']})(\d+)")
            require.append(_Require(pattern, int(r["since"]), str(r["level"])))
        out[arch] = _ArchTable(levels, tuple(require))
    return out


def check_model(model: str) -> str:
    """``--cpu MODEL``: refused unless it looks like a QEMU -cpu value."""
    if not _MODEL.fullmatch(model):
        raise UsageError(
            f"--cpu {model!r} is not a CPU model",
            hint="give a QEMU model and properties, e.g. --cpu max or --cpu qemu64,+sse4.2",
        )
    return model


def required_level(arch: Architecture, short_id: str | None) -> str | None:
    """The x86-64 level ``short_id`` needs (None: the arch has no levels, or unknown OS)."""
    table = _tables().get(str(arch))
    if table is None or not short_id or short_id.endswith("-unknown"):
        return None
    best: tuple[int, str] | None = None
    for r in table.require:
        m = r.pattern.match(short_id)
        if m and int(m.group(1)) >= r.since and (best is None or r.since > best[0]):
            best = (r.since, r.level)
    return best[1] if best else next(iter(table.levels))


def choose_cpu(
    arch: Architecture, accel: str, short_id: str | None, override: str | None = None
) -> CpuChoice:
    """The -cpu model for a guest of ``arch`` running ``short_id`` under ``accel``."""
    if override:
        return CpuChoice(check_model(override), None, "--cpu")
    default = arch.cpu(accel)
    if accel == "kvm":
        return CpuChoice(default, None, "KVM: the host's CPU")
    level = required_level(arch, short_id)
    if level is None:
        why = "release not identified" if short_id else "no release"
        if str(arch) in _tables():
            return CpuChoice(default, None, f"{why}: the richest emulated model runs anything")
        return CpuChoice(default, None, f"the {arch} default under TCG")
    model = _tables()[str(arch)].levels[level]
    return CpuChoice(model, level, f"{short_id} needs {level}: the cheapest model with it")
