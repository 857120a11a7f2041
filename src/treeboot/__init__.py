"""treeboot: network-install an OS from an install tree or ISO.

The Python API mirrors the command line::

    import treeboot
    ident = treeboot.identify("http://127.0.0.1:8000/debian/dists/bookworm/main/installer-amd64/")
    result = treeboot.fetch(ident.location)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "fetch", "identify"]

if TYPE_CHECKING:
    from treeboot.detect import identify
    from treeboot.fetch import fetch


def __getattr__(name: str) -> Any:
    # Lazy so `import treeboot` stays cheap (the CLI pays only for what it uses).
    if name == "identify":
        from treeboot.detect import identify

        return identify
    if name == "fetch":
        from treeboot.fetch import fetch

        return fetch
    if name == "install":
        from treeboot.install import install

        return install
    raise AttributeError(name)
