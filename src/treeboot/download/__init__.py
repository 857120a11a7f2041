"""Stage 3, fetch (``download``): the kernel and initrd, downloaded and verified into the cache.

Takes: an Identification (or a location). Gives: a :class:`~treeboot.model.FetchResult` with
cached, checksum- or signature-verified files; downloads are parallel and resumable.
May import: ``detect`` and everything below it.
"""
