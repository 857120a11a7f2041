"""SHA-512 crypt (``$6$``), the password hash every Linux installer accepts.

Implements Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" specification
(https://www.akkadia.org/drepper/SHA-crypt.txt), so no deprecated ``crypt`` module and no
subprocess that could expose the password. The test checks it against the specification's
vectors and against ``openssl passwd -6``.
"""

from __future__ import annotations

import hashlib
import secrets

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ROUNDS_DEFAULT = 5000
# Byte order of the final digest in the encoded hash (spec step 22, SHA-512 part).
_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54),
    (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60),
    (40, 61, 19), (62, 20, 41),
)  # fmt: skip


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def _b64(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_ITOA64[w & 0x3F])
        w >>= 6
    return "".join(out)


def _digest(password: bytes, salt: bytes, rounds: int) -> bytes:
    b = hashlib.sha512(password + salt + password).digest()
    a = hashlib.sha512(password + salt + _repeat(b, len(password)))
    i = len(password)
    while i > 0:
        a.update(b if i & 1 else password)
        i >>= 1
    c = a.digest()
    p = _repeat(hashlib.sha512(password * len(password)).digest(), len(password))
    s = _repeat(hashlib.sha512(salt * (16 + c[0])).digest(), len(salt))
    for r in range(rounds):
        h = hashlib.sha512(p if r & 1 else c)
        if r % 3:
            h.update(s)
        if r % 7:
            h.update(p)
        h.update(c if r & 1 else p)
        c = h.digest()
    return c


def sha512_crypt(password: str, salt: str | None = None, rounds: int = _ROUNDS_DEFAULT) -> str:
    """Return the ``$6$`` crypt hash of ``password`` (random 16-character salt by default)."""
    if salt is None:
        salt = "".join(secrets.choice(_ITOA64) for _ in range(16))
    salt = salt[:16]
    rounds = max(1000, min(rounds, 999_999_999))
    c = _digest(password.encode(), salt.encode(), rounds)
    encoded = "".join(_b64(c[x], c[y], c[z], 4) for x, y, z in _ORDER) + _b64(0, 0, c[63], 2)
    prefix = "$6$" if rounds == _ROUNDS_DEFAULT else f"$6$rounds={rounds}$"
    return f"{prefix}{salt}${encoded}"
