"""Per-MAC settings: ``--machine MAC[,key=value,...]`` (repeatable) and ``--machines FILE``.

Keys: ``loader=ipxe|shim`` (``shim``: the tree's Secure Boot chain), ``max-boots=N``,
``extra-args=ARGS``; every other key is an unattended option for that machine
(``profile=``, ``hostname=``, ...), added to ``--unattended``. The TOML file::

    [machines."52:54:00:12:34:56"]
    loader = "shim"
    max-boots = 2
    extra-args = "quiet"
    unattended = { hostname = "web1", profile = "minimal" }
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from treeboot.errors import UsageError

_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.IGNORECASE)


class Loader(StrEnum):
    IPXE = "ipxe"  # firmware -> iPXE (undionly.kpxe / snponly.efi) -> HTTP
    SHIM = "shim"  # UEFI Secure Boot: the tree's signed shim -> signed GRUB -> HTTP


def normalize_mac(value: str) -> str:
    """``52-54-00-AB-CD-EF`` -> ``52:54:00:ab:cd:ef``; UsageError for anything else."""
    value = value.strip()
    if not _MAC.match(value):
        raise UsageError(f"{value!r} is not a MAC address", hint="write it as 52:54:00:12:34:56")
    return value.lower().replace("-", ":")


@dataclass(frozen=True)
class Machine:
    mac: str
    loader: Loader = Loader.IPXE
    max_boots: int | None = None
    extra_args: str | None = None
    unattended: Mapping[str, str] = field(default_factory=dict)


def parse_machine(spec: str) -> Machine:
    mac, _, rest = spec.partition(",")
    values: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--machine {spec}: {item!r} is not key=value")
        values[key.strip()] = value
    return _machine(normalize_mac(mac), values, f"--machine {spec}")


def _machine(mac: str, values: Mapping[str, Any], where: str) -> Machine:
    values = dict(values)
    unattended = {k: str(v) for k, v in dict(values.pop("unattended", {})).items()}
    try:
        loader = Loader(values.pop("loader", "ipxe"))
    except ValueError as e:
        raise UsageError(f"{where}: loader must be ipxe or shim") from e
    max_boots = values.pop("max-boots", None)
    try:
        max_boots = int(max_boots) if max_boots is not None else None
    except ValueError as e:
        raise UsageError(f"{where}: max-boots must be a number") from e
    if max_boots is not None and max_boots < 0:
        raise UsageError(f"{where}: max-boots must be 0 or more")
    extra = values.pop("extra-args", None)
    unattended.update({k: str(v) for k, v in values.items()})
    return Machine(mac, loader, max_boots, str(extra) if extra else None, unattended)


def load_machines(path: Path) -> list[Machine]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(
            f"--machines {path}: {e}", hint='give a TOML file with [machines."MAC"] tables'
        ) from e
    table = data.get("machines")
    if not isinstance(table, dict):
        raise UsageError(f'--machines {path}: no [machines."MAC"] tables')
    out = []
    for mac, values in table.items():
        if not isinstance(values, dict):
            raise UsageError(f"--machines {path}: machines.{mac} must be a table")
        out.append(_machine(normalize_mac(mac), values, f"--machines {path} [{mac}]"))
    return out


def merge_machines(specs: Sequence[str], files: Sequence[Path]) -> dict[str, Machine]:
    machines: dict[str, Machine] = {}
    for m in [*(m for f in files for m in load_machines(f)), *map(parse_machine, specs)]:
        machines[m.mac] = m
    return machines
