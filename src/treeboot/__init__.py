"""treeboot: network-install an OS from an install tree or ISO.

The Python API mirrors the command line::

    import treeboot
    ident = treeboot.identify("http://127.0.0.1:8000/debian/dists/bookworm/main/installer-amd64/")
    result = treeboot.fetch(ident)
    run = treeboot.install(treeboot.InstallRequest(ident.location, name="demo", disk="none"))

The package is laid out as the pipeline, one subpackage per stage (see README "Layout"):
``locate``, ``artifacts``, ``store`` -> ``trust`` -> ``detect`` -> ``download`` / ``prepare``
-> ``boot`` -> ``explain`` -> ``cli``. Nothing inside the package imports this module. (The
identify and fetch stages are the packages ``detect`` and ``download``, so that they do not
shadow the functions ``treeboot.identify`` and ``treeboot.fetch``.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from treeboot._version import __version__

__all__ = ["InstallRequest", "__version__", "fetch", "identify", "install"]

if TYPE_CHECKING:
    from treeboot.boot.install import install
    from treeboot.boot.request import InstallRequest
    from treeboot.detect.identify import identify
    from treeboot.download.fetch import fetch

_API = {
    "identify": ("treeboot.detect.identify", "identify"),
    "fetch": ("treeboot.download.fetch", "fetch"),
    "install": ("treeboot.boot.install", "install"),
    "InstallRequest": ("treeboot.boot.request", "InstallRequest"),
}


def __getattr__(name: str) -> Any:
    # Lazy so `import treeboot` stays cheap (the CLI pays only for what it uses).
    if name not in _API:
        raise AttributeError(name)
    import importlib

    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)
