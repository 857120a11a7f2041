"""Boot-once bookkeeping: what each MAC was offered, and whether its install called back.

The state lives in one JSON file (``treeboot pxe --status`` reads it), rewritten atomically
after each change, so a restarted server still knows which machines are done.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from treeboot.boot.backends.pxe.entry import BootEntry, Choice, LocalBoot


class MachineState(StrEnum):
    OFFERED = "offered"  # got the installer's boot script
    BOOTED = "booted installer"  # fetched the installer's initrd
    DONE = "done"  # the install called back: local boot from now on
    LOCAL = "local boot"  # max-boots used up without a callback


@dataclass
class MachineRecord:
    mac: str
    state: MachineState
    boots: int = 0
    ip: str | None = None
    updated: float = 0.0


class BootState:
    """Thread-safe per-MAC state, saved to ``path``."""

    def __init__(self, path: Path, *, max_boots: int = 1) -> None:
        self.path = path
        self.max_boots = max_boots
        self._lock = threading.Lock()
        self._records: dict[str, MachineRecord] = {}
        for mac, rec in load_status(path).items():
            self._records[mac] = MachineRecord(
                mac, MachineState(rec["state"]), int(rec.get("boots", 0)), rec.get("ip"),
                float(rec.get("updated", 0)),
            )  # fmt: skip

    def choose(self, mac: str, entry: BootEntry, ip: str | None, max_boots: int | None) -> Choice:
        """The installer (counted as one boot) or local boot for ``mac``."""
        limit = self.max_boots if max_boots is None else max_boots
        with self._lock:
            rec = self._records.get(mac) or MachineRecord(mac, MachineState.OFFERED)
            if rec.state is MachineState.DONE:
                return LocalBoot("install done")
            if rec.boots >= limit:
                self._update(rec, MachineState.LOCAL, ip)
                return LocalBoot(f"booted the installer {rec.boots} times (--max-boots {limit})")
            rec.boots += 1
            self._update(rec, MachineState.OFFERED, ip)
            return entry

    def mark(self, mac: str, state: MachineState, ip: str | None = None) -> None:
        with self._lock:
            rec = self._records.get(mac) or MachineRecord(mac, state)
            if rec.state is MachineState.DONE and state is not MachineState.DONE:
                return
            self._update(rec, state, ip)

    def records(self) -> list[MachineRecord]:
        with self._lock:
            return [MachineRecord(**asdict(r)) for r in self._records.values()]

    def _update(self, rec: MachineRecord, state: MachineState, ip: str | None) -> None:
        rec.state, rec.updated = state, time.time()
        rec.ip = ip or rec.ip
        self._records[rec.mac] = rec
        data = {m: {**asdict(r), "state": str(r.state)} for m, r in self._records.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"machines": data}, indent=1) + "\n")
        os.replace(tmp, self.path)


def load_status(path: Path) -> dict[str, dict[str, Any]]:
    """The saved state: ``{mac: {"state": ..., "boots": N, "ip": ..., "updated": t}}``."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}
    machines = data.get("machines") if isinstance(data, dict) else None
    return machines if isinstance(machines, dict) else {}
