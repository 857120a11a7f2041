"""Stage 1, trust: signed chains.

Takes: a location and a keyring. Gives: a gpgv-verified ``InRelease`` (or ``Release`` +
``Release.gpg``), the ``SHA256SUMS`` hash it vouches for, and the per-file hashes that follow.
Detection starts the Release read in its first round so the chain costs no extra round trip.
May import: ``locate``, ``store`` and the root modules.
"""
