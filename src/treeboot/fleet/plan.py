"""The fleet plan: one TOML file listing hosts and the machines to install on them.

    [hosts.hv1]                       # an Ansible host; its keys are Ansible host variables
    ansible_connection = "local"
    treeboot_home = "/srv/treeboot"   # TREEBOOT_HOME there (optional; also treeboot_cache)

    [[machines]]
    name = "web1"                     # the VM's name (and its Ansible inventory name)
    host = "hv1"
    location = "http://mirror.example/debian/dists/bookworm/main/installer-amd64/"
    disk = "none"                     # any `treeboot install` option, with _ for -
    wait_for = "Select a language"

The machine keys are the parameters of the collection's module ``treeboot.install.vm``, read
from its own DOCUMENTATION so the plan, the module and ``ansible-doc`` cannot disagree.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from treeboot.errors import UsageError

COLLECTION_PATH = Path(__file__).resolve().parent / "collection"
COLLECTION_ROOT = COLLECTION_PATH / "ansible_collections" / "treeboot" / "install"
MODULE_FILE = COLLECTION_ROOT / "plugins" / "modules" / "vm.py"
MODULE_FQCN = "treeboot.install.vm"

# Module parameters a plan's machine may not set: they come from the machine's name and host.
_NOT_MACHINE_KEYS = {"name", "home", "cache"}
# Ansible group names: the host becomes the group of its machines.
_HOST_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TOML_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "path": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list, str),
}


@cache
def module_options() -> dict[str, dict[str, Any]]:
    """The module's options (name -> its DOCUMENTATION entry), read without importing it."""
    tree = ast.parse(MODULE_FILE.read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "DOCUMENTATION"
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            options: dict[str, dict[str, Any]] = yaml.safe_load(node.value.value)["options"]
            return options
    raise AssertionError(f"{MODULE_FILE} has no DOCUMENTATION")  # pragma: no cover


@dataclass(frozen=True)
class Machine:
    name: str
    host: str
    options: dict[str, Any]  # module parameters (location, disk, wait_for, ...)

    @property
    def location(self) -> str:
        return str(self.options["location"])


@dataclass(frozen=True)
class FleetPlan:
    hosts: dict[str, dict[str, Any]]  # host name -> Ansible host variables
    machines: list[Machine] = field(default_factory=list)
    source: Path | None = None

    def machines_on(self, host: str) -> list[Machine]:
        return [m for m in self.machines if m.host == host]


def load_plan(path: Path) -> FleetPlan:
    """Read and check a plan file; every mistake is a UsageError naming the key."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"cannot read the plan {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from e
    return parse_plan(data, source=path)


def parse_plan(data: dict[str, Any], *, source: Path | None = None) -> FleetPlan:
    where = str(source or "plan")
    unknown = set(data) - {"hosts", "machines"}
    if unknown:
        raise UsageError(
            f"{where}: unknown top-level key {sorted(unknown)[0]!r}",
            hint="a plan has [hosts.NAME] tables and [[machines]] entries",
        )
    hosts = data.get("hosts", {})
    if not isinstance(hosts, dict) or not all(isinstance(v, dict) for v in hosts.values()):
        raise UsageError(f"{where}: [hosts.NAME] must be tables of Ansible host variables")
    for name in hosts:
        _check_host_name(where, name)
    raw = data.get("machines", [])
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{where}: no [[machines]]", hint="add at least one [[machines]] entry")
    machines = [_machine(where, i, m, hosts) for i, m in enumerate(raw)]
    _check_unique(where, machines, hosts)
    return FleetPlan(hosts=hosts, machines=machines, source=source)


def _check_host_name(where: str, name: str) -> None:
    if not _HOST_RE.fullmatch(name):
        raise UsageError(
            f"{where}: host name {name!r} cannot be an Ansible group name",
            hint="use letters, digits and '_' (set the address with ansible_host = \"...\")",
        )


def _machine(where: str, index: int, entry: Any, hosts: dict[str, Any]) -> Machine:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: machines[{index}] must be a table")
    name, host = entry.get("name"), entry.get("host")
    label = f"{where}: machine {name!r}" if name else f"{where}: machines[{index}]"
    if not isinstance(name, str) or not name:
        raise UsageError(f"{label}: needs a name")
    if not isinstance(host, str) or host not in hosts:
        raise UsageError(
            f"{label}: host {host!r} is not one of [hosts.*]",
            hint=f"known hosts: {', '.join(sorted(hosts)) or 'none'}",
        )
    options = {k: v for k, v in entry.items() if k not in ("name", "host")}
    allowed = module_options()
    for key, value in options.items():
        if key not in allowed or key in _NOT_MACHINE_KEYS:
            hint = "machine keys are `treeboot install` options with _ for -"
            if "-" in key and key.replace("-", "_") in allowed:
                hint = f"write {key.replace('-', '_')}"
            raise UsageError(f"{label}: unknown option {key!r}", hint=hint)
        kind = allowed[key].get("type", "str")
        if not isinstance(value, _TOML_TYPES[kind]) or (kind != "bool" and isinstance(value, bool)):
            raise UsageError(f"{label}: {key} must be a {kind}, not {value!r}")
    if "location" not in options:
        raise UsageError(f"{label}: needs a location")
    if isinstance(options.get("extra_args"), str):
        options["extra_args"] = [options["extra_args"]]
    return Machine(name=name, host=host, options=options)


def _check_unique(where: str, machines: list[Machine], hosts: dict[str, Any]) -> None:
    seen: set[str] = set()
    for m in machines:
        if m.name in seen:
            raise UsageError(f"{where}: two machines are named {m.name!r}")
        if m.name in hosts:
            raise UsageError(
                f"{where}: machine {m.name!r} has the name of a host",
                hint="Ansible cannot tell a machine from a host of the same name: rename one",
            )
        seen.add(m.name)
