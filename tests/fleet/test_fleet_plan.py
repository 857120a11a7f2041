"""The fleet plan, the files ``--emit`` writes (golden), and what Ansible makes of them.

Regenerate the golden files after an intended change:
TREEBOOT_UPDATE_GOLDEN=1 pytest tests/fleet/test_fleet_plan.py
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from _fleet_helpers import ISSUE_PLAN, ansible, needs_ansible, treeboot
from _paths import DATA
from treeboot.boot.request import InstallRequest
from treeboot.errors import UsageError
from treeboot.fleet.emit import render_config, render_inventory, render_playbook
from treeboot.fleet.plan import MODULE_FILE, load_plan, module_options, parse_plan
from treeboot.fleet.run import MachineResult, collect

GOLDEN = DATA / "golden" / "fleet"

TWO_HOSTS = """\
[hosts.hv1]
ansible_connection = "local"
treeboot_home = "/srv/hv1"

[hosts.hv2]
ansible_host = "192.0.2.7"
ansible_user = "admin"
treeboot_cache = "/var/cache/treeboot"

[[machines]]
name = "web1"
host = "hv1"
location = "http://mirror.example/debian/dists/bookworm/main/installer-amd64/"
disk = "none"
wait_for = "Select a language"

[[machines]]
name = "db1"
host = "hv2"
location = "http://mirror.example/fedora/"
memory = 2048
extra_args = "console=ttyS0 inst.text"
unattended = "profile=minimal,timezone=Europe/Berlin"
admin_password = "{{ vault_root_password }}"
"""


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TREEBOOT_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


def test_issue_plan_parses_as_written(tmp_path: Path) -> None:
    (tmp_path / "plan.toml").write_text(ISSUE_PLAN)
    plan = load_plan(tmp_path / "plan.toml")
    assert plan.hosts == {"hv1": {"ansible_connection": "local"}}
    [web1] = plan.machines
    assert (web1.name, web1.host) == ("web1", "hv1")
    assert web1.options == {
        "location": "http://mirror.example/debian/dists/bookworm/main/installer-amd64/",
        "disk": "none",
        "wait_for": "Select a language",
    }


def test_emitted_files_match_golden() -> None:
    plan = parse_plan(tomllib.loads(TWO_HOSTS))
    inventory = render_inventory(plan, python="/usr/bin/python3")
    playbook = render_playbook(plan, prefetched=["blobs", "index"])
    _check_golden("inventory.yml", yaml.safe_dump(inventory, sort_keys=False))
    _check_golden("playbook.yml", yaml.safe_dump(playbook, sort_keys=False))
    _check_golden("ansible.cfg", render_config(collections_path=Path("/opt/treeboot/collection")))


def test_machine_keys_are_the_module_parameters() -> None:
    """The plan's keys come from the module's DOCUMENTATION: it must match its argument_spec."""
    argspec: dict[str, dict[str, Any]] = _module().ARGUMENT_SPEC
    docs = module_options()
    assert set(argspec) == set(docs)
    for name, entry in argspec.items():
        assert entry.get("type") == docs[name].get("type"), name
        assert bool(entry.get("no_log")) == (name in ("admin_password", "user_password")), name
    # Every install option of the command line has its parameter (with _ for -).
    from treeboot.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    install = sub.choices["install"]
    cli = {o.lstrip("-").replace("-", "_") for a in install._actions for o in a.option_strings}
    cli -= {"h", "help", "n", "c", "dry_run", "json", "console"}  # n, c: --name, --connect
    assert cli <= set(argspec), cli - set(argspec)


@pytest.mark.parametrize(
    ("machine", "message"),
    [
        ({"name": "a", "host": "hv1"}, "needs a location"),
        ({"name": "a", "host": "nope", "location": "x"}, "is not one of"),
        ({"name": "a", "host": "hv1", "location": "x", "wait-for": "y"}, "unknown option"),
        ({"name": "a", "host": "hv1", "location": "x", "memory": "2G"}, "must be a int"),
        ({"name": "a", "host": "hv1", "location": "x", "vcpus": True}, "must be a int"),
        ({"name": "a", "host": "hv1", "location": "x", "home": "/x"}, "unknown option"),
        ({"name": "hv1", "host": "hv1", "location": "x"}, "has the name of a host"),
    ],
)
def test_plan_mistakes_are_usage_errors(machine: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_plan({"hosts": {"hv1": {}}, "machines": [machine]})
    if "wait-for" in machine:
        assert info.value.hint == "write wait_for"


def test_plan_errors_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "plan.toml").write_text('[hosts."hv-1"]\n[[machines]]\nname = "a"\n')
    result = treeboot("fleet", "plan.toml", "--emit", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert "treeboot: error:" in result.stderr and "treeboot: hint:" in result.stderr
    assert not (tmp_path / "out").exists()


def test_summary_from_runner_events() -> None:
    hosts = {"web1": "hv1", "db1": "hv2"}
    ok = {"host": "web1", "task_action": "treeboot.install.vm"}
    events: list[dict[str, Any]] = [
        {"event": "runner_on_start", "event_data": ok},
        {
            "event": "runner_on_ok",
            "event_data": {
                **ok,
                "res": {"changed": True, "outcome": "wait-for-matched", "os": "debian12",
                        "elapsed": 41.5},
            },
        },
        {"event": "runner_on_unreachable",
         "event_data": {"host": "db1", "task_action": "ansible.builtin.copy",
                        "res": {"msg": "ssh: connect refused"}}},
    ]  # fmt: skip
    assert collect(events, hosts) == [
        MachineResult("web1", "hv1", "debian12", "wait-for-matched", "changed", 41.5),
        MachineResult("db1", "hv2", None, "unreachable", "unreachable", None,
                      "ssh: connect refused"),
    ]  # fmt: skip


@needs_ansible
def test_emitted_dir_works_with_ansible_alone(tmp_path: Path) -> None:
    """In the --emit dir, ansible-inventory, ansible-playbook and ansible-doc need nothing else."""
    (tmp_path / "plan.toml").write_text(ISSUE_PLAN)
    result = treeboot("fleet", "plan.toml", "--emit", "out", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["ansible.cfg", "inventory.yml", "playbook.yml"]
    inv = ansible("ansible-inventory", "--list", cwd=out)
    assert inv.returncode == 0, inv.stderr
    listed = json.loads(inv.stdout)
    assert listed["hv1"]["hosts"] == ["web1"]
    web1 = listed["_meta"]["hostvars"]["web1"]
    assert web1["treeboot_vm"]["wait_for"] == "Select a language"
    assert web1["ansible_connection"] == "local"
    syntax = ansible("ansible-playbook", "--syntax-check", "playbook.yml", cwd=out)
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    doc = ansible("ansible-doc", "treeboot.install.vm", cwd=out)
    assert doc.returncode == 0, doc.stderr
    for text in ("treeboot.install.vm", "wait_for", "admin_password", "EXAMPLES", "RETURN"):
        assert text in doc.stdout
    listing = ansible("ansible-doc", "--list", "treeboot.install", cwd=out)
    assert "treeboot.install.vm" in listing.stdout


@needs_ansible
def test_module_failure_gives_the_cli_message_and_hint(tmp_path: Path) -> None:
    """A location that is not a tree: msg is the CLI's error and hint, rc non-zero, no secrets."""
    empty = tmp_path / "empty"
    empty.mkdir()
    plan = (
        f'[hosts.hv1]\nansible_connection = "local"\ntreeboot_home = "{tmp_path / "home"}"\n'
        f'treeboot_cache = "{tmp_path / "cache"}"\n\n'
        f'[[machines]]\nname = "bad1"\nhost = "hv1"\nlocation = "{empty}"\ndisk = "none"\n'
        'unattended = "profile=minimal"\nadmin_password = "s3cret-Pa55"\n'
    )
    (tmp_path / "plan.toml").write_text(plan)
    cli = treeboot("install", str(empty), "--name", "x", "--dry-run", cwd=tmp_path)
    error, _, hint = cli.stderr.strip().partition("\ntreeboot: hint: ")
    message = error.removeprefix("treeboot: error: ")
    assert message and hint
    result = treeboot("fleet", "plan.toml", "--json", cwd=tmp_path)
    assert result.returncode == 14, result.stderr
    [bad1] = json.loads(result.stdout)["machines"]
    assert bad1["status"] == "failed" and bad1["outcome"] == "error"
    assert bad1["msg"] == f"{message} (hint: {hint})"
    assert "s3cret-Pa55" not in result.stdout + result.stderr
    human = treeboot("fleet", "plan.toml", cwd=tmp_path)
    assert human.returncode == 14
    # (rich wraps long notices at the terminal's width)
    assert f"treeboot: bad1: {message} (hint: {hint})".split() == human.stderr.split()[6:]
    assert "bad1" in human.stdout and "failed" in human.stdout


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("treeboot_ansible_vm", MODULE_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _params(module: Any, **given: Any) -> dict[str, Any]:
    params = {k: v.get("default") for k, v in module.ARGUMENT_SPEC.items()}
    return {**params, **given}


def test_module_request_keeps_secrets_in_private_files(tmp_path: Path) -> None:
    vm = _module()
    params = _params(
        vm, name="db1", location="/srv/tree", memory=2048, extra_args=["a b=c"],
        unattended="profile=minimal", admin_password="s3cret", ssh_key="ssh-ed25519 AAAA x",
    )  # fmt: skip
    request = vm.build_request(params, str(tmp_path))
    assert (request.name, request.memory_mib) == ("db1", 2048)
    assert list(request.extra_args) == ["a", "b=c"]
    secret = tmp_path / "admin_password"
    assert request.unattended == (
        f"profile=minimal,admin-password-file={secret},ssh-key={tmp_path / 'ssh_key'}"
    )
    assert secret.read_text() == "s3cret\n" and secret.stat().st_mode & 0o777 == 0o600
    assert "s3cret" not in repr(request)


def test_module_connect_needs_a_treeboot_that_has_it(tmp_path: Path) -> None:
    vm = _module()
    params = _params(vm, name="db1", location="/srv/tree", connect="qemu:///system")
    if "connect" in {f.name for f in dataclasses.fields(InstallRequest)}:
        assert vm.build_request(params, str(tmp_path)).connect == "qemu:///system"
    else:
        with pytest.raises(UsageError, match="no --connect"):
            vm.build_request(params, str(tmp_path))
