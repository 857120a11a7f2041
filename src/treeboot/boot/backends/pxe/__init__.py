"""Network boot for real machines (``treeboot pxe``): pure renderers and thin executors.

- :mod:`.entry` what one client boots (kernel/initrd URLs and the cmdline as a list), or its
  local disk;
- :mod:`.ipxe`, :mod:`.grub`, :mod:`.pxelinux` render it for each loader, each with its own
  quoting of the kernel command line; :mod:`.dnsmasq` renders dnsmasq's proxy-DHCP/TFTP config;
- :mod:`.machines` per-MAC settings, :mod:`.state` boot-once bookkeeping (``--status``);
- :mod:`.server` the HTTP server, :mod:`.supervise` runs dnsmasq as a child.

The orchestration (identify, fetch, prepare with install's steps) is
:mod:`treeboot.boot.netboot`, above this package. Nothing here imports another backend.
"""
