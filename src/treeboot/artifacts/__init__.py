"""Stage 0, artifacts: what boot files are, byte for byte.

Takes: kernel images and initrds (paths or bytes). Gives: their headers and facts (x86
bzImage setup header, arm64/riscv Image, EFI PE, zboot, ELF; initrd segments and
compression), newc cpio archives, and text reports of those facts.
May import: the root modules only.
"""
