"""Unattended installs: generate (or load) the installer's own file and say how to pass it.

Families, by :attr:`treeboot.model.Identification.installer` (installer: kind, kernel arguments,
delivery):

* anaconda: kickstart ``ks.cfg``, ``inst.ks=file:/ks.cfg``, initrd
* debian-installer: preseed ``preseed.cfg``, ``auto=true priority=critical``, initrd
* linuxrc: AutoYaST ``autoinst.xml``, ``autoyast=file:///autoinst.xml``, initrd
* subiquity: autoinstall ``user-data`` + ``meta-data``, ``autoinstall ds=nocloud``, a CIDATA
  volume (:func:`write_seed_iso`)

The table itself lives in ``templates/families.toml``.
"""

from treeboot.prepare.unattended.options import UnattendedOptions
from treeboot.prepare.unattended.render import (
    REDACTED,
    UnattendedPayload,
    find_family,
    load_unattended_file,
    redact,
    render_unattended,
)
from treeboot.prepare.unattended.seed import write_seed_iso
from treeboot.prepare.unattended.validate import KINDS, detect_kind, validate

__all__ = [
    "KINDS",
    "REDACTED",
    "UnattendedOptions",
    "UnattendedPayload",
    "detect_kind",
    "find_family",
    "load_unattended_file",
    "redact",
    "render_unattended",
    "validate",
    "write_seed_iso",
]
