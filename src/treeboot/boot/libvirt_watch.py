"""The background watcher of ``treeboot install --connect URI --wait 0``.

    python -m treeboot.boot.libvirt_watch STATE_DIR [--phase install]

Started detached (its own session, stdin from /dev/null, output in ``watcher.log``) by
``libvirt_run`` through ``vm.start_background_watcher``, as ``treeboot.boot.watch`` is on QEMU.
It reads the plan and the connection (``plan.json``, ``status.json``: ``connect``, ``pool``)
from the VM's state directory and runs both phases there:

1. uploads kernel, initrd and seed, starts the install domain (``createXML``) and writes
   status "running" with its own PID (which is when ``treeboot install`` returns);
2. waits for that domain to end (lifecycle events; ``isActive()`` polling as the fallback),
   copying its console into the local console log, then deletes the uploaded volumes;
3. unless ``--no-reboot`` or no disk: defines and starts the final (disk-booting) domain and
   watches it until it ends.

Its outcome goes to status.json (``treeboot list``, ``treeboot list --json``), the result of
each phase to ``watcher.log``. SIGTERM destroys the domain it runs and deletes the uploads
(exit 143); ``treeboot stop NAME`` destroys the domain, which the watcher records as "stopped".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from treeboot.boot import libvirt_run
from treeboot.boot.plan import ConsoleMode, Phase
from treeboot.boot.vm import load_plan, read_status, write_status
from treeboot.boot.watch import Outcome, WatchOptions
from treeboot.errors import TreebootError

log = logging.getLogger("treeboot.boot.libvirt_watch")


def watch_in_background(state_dir: Path) -> int:
    """Run both phases of the install saved in ``state_dir``; the exit code of its outcome."""
    plan = load_plan(state_dir)
    status = read_status(state_dir)
    uri, pool = status.get("connect"), status.get("pool")
    write_status(plan.paths, state="starting", watcher_pid=os.getpid())
    if not isinstance(uri, str):
        detail = f"{state_dir / 'status.json'} names no libvirt connection"
        write_status(plan.paths, state="stopped", outcome=str(Outcome.QEMU_FAILED), detail=detail)
        log.error("%s", detail)
        return Outcome.QEMU_FAILED.exit_code
    # Nobody watches a background VM: it runs until it ends by itself or is stopped.
    opts = WatchOptions(ConsoleMode.NONE, None, None)
    try:
        with libvirt_run.connect(uri) as hv:
            result = libvirt_run.run_phases(
                hv, plan, opts, None, pool=pool if isinstance(pool, str) else None,
                watch_firstboot=True,
            )  # fmt: skip
    except TreebootError as e:
        write_status(plan.paths, state="stopped", outcome=str(Outcome.QEMU_FAILED), detail=str(e))
        log.error("%s%s", e, f" ({e.hint})" if e.hint else "")
        return Outcome.QEMU_FAILED.exit_code
    finally:
        for path in plan.temp_files:  # the injected initrd and seed, uploaded by now
            path.unlink(missing_ok=True)
    log.info("%s", json.dumps(result.to_json()))
    return result.exit_code


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m treeboot.boot.libvirt_watch")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--phase", choices=[str(Phase.INSTALL)], default=str(Phase.INSTALL))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return watch_in_background(args.state_dir)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
