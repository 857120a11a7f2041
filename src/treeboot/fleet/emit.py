"""Write what Ansible runs: ``inventory.yml``, ``playbook.yml`` and ``ansible.cfg``.

The inventory has one group per plan host (its variables are the host's) holding one
inventory host per machine, so Ansible's forks install machines side by side, ``--limit hv1``
picks a host's machines and ``--limit web1`` one machine. All of them share their host's
``TREEBOOT_CACHE``, so a tree is fetched once per host. ``ansible.cfg`` points
``collections_path`` at the collection inside this treeboot, so ``ansible-playbook`` and
``ansible-doc treeboot.install.vm`` run in that directory find it with no other set-up.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from treeboot.fleet.plan import COLLECTION_PATH, MODULE_FQCN, FleetPlan

INVENTORY = "inventory.yml"
PLAYBOOK = "playbook.yml"
CONFIG = "ansible.cfg"
PREFETCH_DIR = "cache"  # under the emitted directory: what --prefetch pushes to each host
# What a host's cache needs to skip the download: the blobs and what each source held.
PREFETCH_PARTS = ("blobs", "index", "ident")
DEFAULT_CACHE = "~/.cache/treeboot"


def render_inventory(plan: FleetPlan, *, python: str = sys.executable) -> dict[str, Any]:
    """The YAML inventory as data; a local host runs the module with this treeboot's Python."""
    groups: dict[str, Any] = {}
    for host, variables in plan.hosts.items():
        group_vars = dict(variables)
        if group_vars.get("ansible_connection") == "local":
            group_vars.setdefault("ansible_python_interpreter", python)
        members = {
            m.name: {"treeboot_host": host, "treeboot_vm": m.options}
            for m in plan.machines_on(host)
        }
        groups[host] = {"vars": group_vars, "hosts": members}
    return {"all": {"children": groups}}


def render_playbook(plan: FleetPlan, *, prefetched: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The playbook as data: one task per machine-host, only the options the plan uses.

    ``prefetched`` names the parts of the prefetched cache (:data:`PREFETCH_PARTS`) that a
    first play copies to each host.
    """
    used = sorted({key for m in plan.machines for key in m.options})
    args: dict[str, str] = {"name": "{{ inventory_hostname }}"}
    for key in used:
        args[key] = f"{{{{ treeboot_vm.{key} | default(omit) }}}}"
    args["home"] = "{{ treeboot_home | default(omit) }}"
    args["cache"] = "{{ treeboot_cache | default(omit) }}"
    install = {
        "name": "Install with treeboot",
        "hosts": "all",
        "gather_facts": False,
        "tasks": [{"name": "Install {{ inventory_hostname }}", MODULE_FQCN: args}],
    }
    return [_prefetch_play(prefetched), install] if prefetched else [install]


def _prefetch_play(parts: Sequence[str]) -> dict[str, Any]:
    # One machine per host (the first one the play runs on) copies, so each host gets one copy.
    first = (
        "inventory_hostname == (groups[treeboot_host] | intersect(ansible_play_hosts_all) | first)"
    )
    copy = {
        "name": "Copy the prefetched {{ item }} into the host's cache",
        "ansible.builtin.copy": {
            "src": f"{{{{ playbook_dir }}}}/{PREFETCH_DIR}/{{{{ item }}}}",
            "dest": f"{{{{ treeboot_cache | default('{DEFAULT_CACHE}') }}}}/",
            "mode": "preserve",
        },
        "loop": list(parts),
        "when": first,
        # The cache is no change to the machines; check mode's dry runs then plan from it.
        "check_mode": False,
    }
    return {
        "name": "Push the controller's prefetched cache to each host",
        "hosts": "all",
        "gather_facts": False,
        "tasks": [copy],
    }


def render_config(*, collections_path: Path = COLLECTION_PATH) -> str:
    return (
        "# Written by `treeboot fleet --emit`.\n"
        "[defaults]\n"
        f"collections_path = {collections_path}\n"
        f"inventory = {INVENTORY}\n"
        "retry_files_enabled = False\n"
        "interpreter_python = auto_silent\n"
        "\n"
        "[ssh_connection]\n"
        "pipelining = True\n"
    )


def emit(plan: FleetPlan, dest: Path) -> list[Path]:
    """Write the three files into ``dest`` (created); return their paths.

    A cache prefetched into ``dest/cache`` (:func:`treeboot.fleet.prefetch.prefetch`) is
    pushed to each host by the playbook's first play.
    """
    dest.mkdir(parents=True, exist_ok=True)
    prefetched = [p for p in PREFETCH_PARTS if (dest / PREFETCH_DIR / p).is_dir()]
    files = {
        INVENTORY: _yaml(render_inventory(plan)),
        PLAYBOOK: _yaml(render_playbook(plan, prefetched=prefetched)),
        CONFIG: render_config(),
    }
    written = []
    for name, text in files.items():
        path = dest / name
        path.write_text(text)
        written.append(path)
    return written


def _yaml(data: Any) -> str:
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)
    return "# Written by `treeboot fleet --emit`.\n---\n" + body
