"""gpgv: the one place that checks OpenPGP signatures, against a keyring file.

The text treeboot trusts is the text ``gpgv`` says it verified (``--output``), never its own
split of the file; an ``InRelease`` must be exactly one clearsigned message, as apt requires.
Weak digests (MD5, SHA-1, RIPEMD-160), expired or revoked keys do not count as good.
"""

from __future__ import annotations

import base64
import binascii
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from treeboot.errors import SignatureError
from treeboot.run import find_binary

# OpenPGP hash algorithm ids (RFC 4880 9.4) that no longer count as a signature.
WEAK_HASH_ALGOS = {"1": "MD5", "2": "SHA-1", "3": "RIPEMD-160"}
GPGV_TIMEOUT = 60.0

_CLEARSIGN_HEAD = b"-----BEGIN PGP SIGNED MESSAGE-----"
_SIG_HEAD = b"-----BEGIN PGP SIGNATURE-----"
_SIG_TAIL = b"-----END PGP SIGNATURE-----"


@dataclass(frozen=True)
class GoodSignature:
    fingerprint: str  # the signing (sub)key
    primary_fingerprint: str  # the key as it appears in the keyring
    user_id: str
    created: int  # unix time


@dataclass(frozen=True)
class SignedText:
    text: bytes  # exactly the bytes gpgv verified
    signatures: list[GoodSignature]


def _dearmor(data: bytes) -> bytes:
    """Turn an ASCII-armored public key block into the binary form gpgv reads."""
    lines = data.decode("ascii", errors="replace").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN PGP"))
        end = next(i for i, line in enumerate(lines) if line.startswith("-----END PGP"))
        body_start = lines.index("", start) + 1
    except (StopIteration, ValueError) as e:
        raise SignatureError("the keyring is ASCII-armored but malformed") from e
    body = [line for line in lines[body_start:end] if not line.startswith("=")]
    try:
        return base64.b64decode("".join(body), validate=True)
    except binascii.Error as e:
        raise SignatureError("the keyring is ASCII-armored but its base64 is invalid") from e


def _keyring_file(keyring: Path, workdir: Path) -> Path:
    try:
        data = keyring.read_bytes()
    except OSError as e:
        raise SignatureError(
            f"cannot read keyring {keyring}: {e.strerror}",
            hint="name an OpenPGP keyring file (binary .gpg or armored .asc) with --keyring",
        ) from e
    if data.lstrip().startswith(b"-----BEGIN PGP"):
        out = workdir / "keyring.gpg"
        out.write_bytes(_dearmor(data))
        return out
    return keyring.resolve()  # gpgv takes a bare name as relative to its homedir


def _parse_status(status: str) -> tuple[list[GoodSignature], list[str]]:
    """Good signatures and the problems gpgv reported, from ``--status-fd`` lines."""
    good: list[GoodSignature] = []
    problems: list[str] = []
    uid = ""
    for line in status.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "[GNUPG:]":
            continue
        kw, args = words[1], words[2:]
        if kw == "GOODSIG":
            uid = " ".join(args[1:])
        elif kw == "VALIDSIG" and len(args) >= 9:
            algo = args[7]
            if algo in WEAK_HASH_ALGOS:
                problems.append(
                    f"signature by {args[0]} uses the weak digest {WEAK_HASH_ALGOS[algo]}"
                )
                continue
            primary = args[9] if len(args) >= 10 else args[0]
            created = int(args[2]) if args[2].isdigit() else 0
            good.append(GoodSignature(args[0], primary, uid, created))
        elif kw in ("BADSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG"):
            problems.append(f"{kw} {' '.join(args)}")
        elif kw == "NO_PUBKEY" and args:
            problems.append(f"signed by key {args[0]}, which is not in the keyring")
        elif kw == "ERRSIG" and args:
            problems.append(f"cannot check signature by key {args[0]}")
    return good, problems


def _gpgv(args: list[str], keyring: Path, workdir: Path) -> tuple[list[GoodSignature], list[str]]:
    gpgv = find_binary("gpgv")
    ring = _keyring_file(keyring, workdir)
    argv = [gpgv, "--homedir", str(workdir), "--status-fd", "1", "--keyring", str(ring), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=GPGV_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as e:
        raise SignatureError(f"gpgv did not finish within {GPGV_TIMEOUT:.0f} s") from e
    good, problems = _parse_status(proc.stdout.decode("utf-8", errors="replace"))
    if not good and not problems:
        err = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
        problems.append(err[-1] if err else f"gpgv exited with status {proc.returncode}")
    return good, problems


def _judge(good: list[GoodSignature], problems: list[str], what: str, keyring: Path) -> None:
    # A bad signature anywhere spoils the file (apt does the same); a signature by a key that is
    # not in the keyring is ignored when another one is good (Debian signs with several keys).
    bad = [p for p in problems if p.split()[0] in ("BADSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG")]
    if bad or not good:
        raise SignatureError(
            f"{what} does not verify with keyring {keyring}: "
            + "; ".join(problems or ["no signature"]),
            hint="the tree was modified or is signed by another key; check the mirror, or name "
            "the distribution's archive keyring with --keyring FILE",
        )


def check_clearsigned_shape(data: bytes, what: str = "InRelease") -> None:
    """Refuse anything but one clearsigned message: no text before it, none after it."""
    body = data.strip()
    if not body.startswith(_CLEARSIGN_HEAD) or not body.endswith(_SIG_TAIL):
        raise SignatureError(f"{what} is not a single clearsigned message (data outside it)")
    if body.count(_CLEARSIGN_HEAD) != 1 or body.count(_SIG_HEAD) != 1 or body.count(_SIG_TAIL) != 1:
        raise SignatureError(f"{what} holds more than one signed message")


def verify_clearsigned(data: bytes, keyring: Path, *, what: str = "InRelease") -> SignedText:
    """Verify a clearsigned file with gpgv; return the text gpgv verified and who signed it."""
    check_clearsigned_shape(data, what)
    with tempfile.TemporaryDirectory(prefix="treeboot-gpgv-") as tmp:
        work = Path(tmp)
        (work / "in").write_bytes(data)
        good, problems = _gpgv(["--output", str(work / "out"), str(work / "in")], keyring, work)
        _judge(good, problems, what, keyring)
        return SignedText((work / "out").read_bytes(), good)


def verify_detached(
    data: bytes, signature: bytes, keyring: Path, *, what: str = "Release"
) -> SignedText:
    """Verify ``data`` against a detached signature (``Release`` + ``Release.gpg``)."""
    with tempfile.TemporaryDirectory(prefix="treeboot-gpgv-") as tmp:
        work = Path(tmp)
        (work / "data").write_bytes(data)
        (work / "sig").write_bytes(signature)
        good, problems = _gpgv([str(work / "sig"), str(work / "data")], keyring, work)
        _judge(good, problems, what, keyring)
        return SignedText(data, good)
