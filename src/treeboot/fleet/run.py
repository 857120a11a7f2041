"""Run a fleet plan through Ansible (ansible-runner driving ansible-playbook) and collect,
per machine, what the collection's module returned.

The summary comes from ansible-runner's event stream (one ``runner_on_*`` event per task and
host), not from parsing Ansible's text output.
"""

from __future__ import annotations

import locale
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from treeboot.errors import MissingToolError
from treeboot.fleet.emit import CONFIG, INVENTORY, PLAYBOOK, PREFETCH_DIR, emit
from treeboot.fleet.plan import MODULE_FQCN, FleetPlan
from treeboot.fleet.prefetch import prefetch

_RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass(frozen=True)
class MachineResult:
    """One machine's line in the summary."""

    machine: str
    host: str
    os: str | None
    outcome: str  # the install's outcome (wait-for-matched, ...), "planned", or Ansible's status
    status: str  # Ansible's: ok, changed, failed, unreachable, skipped, not-run
    elapsed: float | None
    msg: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "unreachable", "not-run")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FleetResult:
    machines: list[MachineResult]
    ansible_rc: int
    stdout: str  # Ansible's own output, for --debug and failures the summary cannot explain

    @property
    def failed(self) -> bool:
        return self.ansible_rc != 0 or any(m.failed for m in self.machines)

    def to_json(self) -> dict[str, Any]:
        return {
            "failed": self.failed,
            "ansible_rc": self.ansible_rc,
            "machines": [m.to_json() for m in self.machines],
        }


def run_fleet(
    plan: FleetPlan,
    *,
    limit: str | None = None,
    forks: int | None = None,
    check: bool = False,
    prefetch_cache: bool = False,
    workdir: Path | None = None,
    on_result: Callable[[MachineResult], None] | None = None,
) -> FleetResult:
    """Emit the plan into ``workdir`` (a temporary directory if None) and run the playbook.

    ``on_result`` is called as each machine finishes. ``check`` is Ansible's check mode
    (each machine's install is a dry run; nothing starts).
    """
    try:
        import ansible_runner
    except ImportError as e:
        raise MissingToolError(
            "treeboot fleet needs ansible-core and ansible-runner",
            hint="pip install 'treeboot[fleet]'",
        ) from e
    with tempfile.TemporaryDirectory(prefix="treeboot-fleet-") as tmp:
        base = workdir or Path(tmp)
        if prefetch_cache:
            prefetch(plan, base / PREFETCH_DIR)
        emit(plan, base)
        private = Path(tmp) / "runner"
        private.mkdir()
        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(base),
            playbook=str(base / PLAYBOOK),
            inventory=str(base / INVENTORY),
            envvars=_environment(base),
            cmdline="--check" if check else None,
            limit=limit,
            forks=forks,
            quiet=True,
            suppress_env_files=True,
            event_handler=_handler(plan, on_result),
        )
        results = collect(runner.events, {m.name: m.host for m in plan.machines})
        stdout = runner.stdout.read()
    seen = {r.machine for r in results}
    missing = [
        MachineResult(m.name, m.host, None, "not-run", "not-run", None, "Ansible did not run it")
        for m in plan.machines
        if m.name not in seen and _selected(m.name, m.host, limit)
    ]
    order = {m.name: i for i, m in enumerate(plan.machines)}
    ordered = sorted(results + missing, key=lambda r: order.get(r.machine, len(order)))
    return FleetResult(ordered, int(runner.rc or 0), stdout)


def _environment(base: Path) -> dict[str, str]:
    # ansible-playbook from this treeboot's environment, whatever PATH says.
    bindir = str(Path(sys.executable).parent)
    env = {
        "ANSIBLE_CONFIG": str(base / CONFIG),
        "PATH": bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
    }
    if locale.nl_langinfo(locale.CODESET).lower().replace("-", "") != "utf8":
        env["LC_ALL"] = "C.UTF-8"  # Ansible refuses to run without a UTF-8 locale
    return env


def _handler(
    plan: FleetPlan, on_result: Callable[[MachineResult], None] | None
) -> Callable[[dict[str, Any]], bool]:
    hosts = {m.name: m.host for m in plan.machines}

    def handle(event: dict[str, Any]) -> bool:
        result = machine_result(event, hosts)
        if on_result is not None and result is not None:
            on_result(result)
        return True  # keep the event

    return handle


def collect(events: Iterable[dict[str, Any]], hosts: dict[str, str]) -> list[MachineResult]:
    """Each machine's last result from an ansible-runner event stream."""
    results: dict[str, MachineResult] = {}
    for event in events:
        result = machine_result(event, hosts)
        if result is not None:
            results[result.machine] = result
    return list(results.values())


def machine_result(event: dict[str, Any], hosts: dict[str, str]) -> MachineResult | None:
    """The summary line in one ``runner_on_*`` event: the install task's, or any task's
    failure (a failed prefetch copy, an unreachable host) since the install then never runs.
    """
    status = _RESULT_EVENTS.get(event.get("event", ""))
    data = event.get("event_data", {})
    ours = data.get("task_action") == MODULE_FQCN
    if status is None or not (ours or status in ("failed", "unreachable")):
        return None
    res: dict[str, Any] = data.get("res") or {}
    machine = str(data.get("host", "?"))
    if status == "ok" and res.get("changed"):
        status = "changed"
    elapsed = res.get("elapsed", data.get("duration"))
    msg = res.get("msg") if status in ("failed", "unreachable") else None
    return MachineResult(
        machine=machine,
        host=hosts.get(machine, ""),
        os=res.get("os"),
        outcome=str(res.get("outcome") or status),
        status=status,
        elapsed=float(elapsed) if isinstance(elapsed, int | float) else None,
        msg=str(msg) if msg else None,
    )


def _selected(name: str, host: str, limit: str | None) -> bool:
    """Whether a plain ``--limit a,b`` (names of machines or hosts) picks the machine."""
    if not limit:
        return True
    words = {w.strip() for w in limit.replace(":", ",").split(",")}
    if any(set(w) & set("*?![]&~@") for w in words):
        return False  # an Ansible pattern: report only what ran
    return name in words or host in words
