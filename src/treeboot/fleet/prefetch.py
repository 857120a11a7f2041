"""``--prefetch``: fetch each tree of the plan once on the controller, into a cache to push.

For sites where the hosts cannot download from the mirror themselves (or should not all do
so): the cache written here is treeboot's own layout (see :mod:`treeboot.store.cache`), which
the playbook copies into each host's ``TREEBOOT_CACHE``; a host then finds the kernel and
initrd there, verified, and transfers none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treeboot.download.fetch import fetch
from treeboot.fleet.plan import FleetPlan
from treeboot.model import FetchResult
from treeboot.store.cache import Cache

# Machine options that change what is fetched.
_FETCH_KEYS = ("arch", "kernel", "initrd", "insecure", "require_signature", "keyring")


def prefetch(plan: FleetPlan, root: Path) -> list[FetchResult]:
    """Fetch (and verify) the kernel and initrd of every distinct tree into the cache ``root``."""
    cache = Cache(root)
    done: dict[tuple[Any, ...], FetchResult] = {}
    for machine in plan.machines:
        opts = machine.options
        key = (machine.location, *(opts.get(k) for k in _FETCH_KEYS))
        if key in done:
            continue
        keyring = opts.get("keyring")
        done[key] = fetch(
            machine.location,
            arch=opts.get("arch"),
            kernel=opts.get("kernel"),
            initrd=opts.get("initrd"),
            insecure=bool(opts.get("insecure", False)),
            require_signature=bool(opts.get("require_signature", False)),
            keyring=Path(keyring) if keyring else None,
            cache=cache,
            progress=False,
        )
    return list(done.values())
