"""Stage 2, identify (``detect``): what OS a tree or ISO holds and where its kernel and initrd are.

Takes: a Location. Gives: an :class:`~treeboot.model.Identification` (osinfo-db short-id,
version, arch, installer family, kernel/initrd paths, checksums, evidence). Knowledge is data:
osinfo-db's XML plus ``rules/*.toml``, loaded by :mod:`~treeboot.detect.rules`.
May import: ``trust``, ``locate``, ``artifacts``, ``store`` and the root modules.
"""
