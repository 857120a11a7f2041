"""Stage 3, prepare: what the installer is given besides its kernel.

Takes: an Identification and the user's options. Gives: the kernel command line for the
installer family (``rules/installers.toml``), unattended files (kickstart, preseed, AutoYaST,
autoinstall) and an initrd with files injected.
May import: ``detect`` and everything below it (not ``download``: it works on local files).
"""
