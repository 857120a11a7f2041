"""The command line, on top of everything: the only package that parses arguments, prints
human output and exits. Nothing else imports it.

Takes: argv. Gives: an exit code. One module per group of subcommands (``tree``, ``vm``,
``inspect``), each with ``register(subparsers)``.
"""
