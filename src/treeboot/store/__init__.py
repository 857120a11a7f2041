"""Stage 0, store: the content-addressed cache on disk.

Takes: verified bytes and their sha256. Gives: blobs by hash, an index of where they came
from, locks per artifact, atomic writes, pruning. Used by ``download`` (downloads), ``detect``
(the identification cache) and ``boot`` (the KVM verdict).
May import: the root modules only.
"""
