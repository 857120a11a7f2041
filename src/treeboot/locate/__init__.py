"""Stage 0, locate: read an install tree or ISO wherever it lives.

Takes: what the user typed (a directory, a ``file://``, ``http(s)://`` or ``ftp://`` URL, an
ISO file or an ISO's URL). Gives: a :class:`~treeboot.locate.base.Location`, one reader
interface (``read``, ``read_many``, ``stat``, ``download``) over all of them
(:func:`~treeboot.locate.open.open_location` picks the reader).
May import: the root modules only (errors, model, arch, run).
"""
