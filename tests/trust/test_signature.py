"""gpgv chains: the real Debian InRelease with the real keyring, and every link of a chain signed
with a throwaway key, tampered one at a time."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _hostile_server import HostileServer
from _signature_helpers import DebianTree, DirReader, TestKey, make_debian_tree, make_key
from treeboot.errors import ChecksumMismatch, MetadataError, SignatureError
from treeboot.model import Identification, Media, Verified
from treeboot.trust.gpgv import _parse_status, verify_clearsigned, verify_detached
from treeboot.trust.signature import (
    ChainResult,
    ReleaseRef,
    find_release_path,
    parse_release,
    parse_sha256sums,
    verify_debian_chain,
)

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
BOOKWORM_AUTOMATIC = "4CB50190207B4758A3F73A796ED0E7B82643E131"  # 12/bookworm archive key


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestKey]:
    k = make_key(tmp_path_factory.mktemp("key"))
    yield k
    k.close()


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestKey]:
    k = make_key(tmp_path_factory.mktemp("otherkey"), name="an attacker")
    yield k
    k.close()


def real_inrelease() -> Path:
    found = sorted(glob.glob("/var/lib/apt/lists/*_dists_bookworm_InRelease"))
    if not found or not DEBIAN_KEYRING.is_file():
        pytest.skip("no bookworm InRelease in /var/lib/apt/lists or no debian-archive-keyring")
    return Path(found[0])


def ident_for(tree: DebianTree, **kw: object) -> Identification:
    fields: dict[str, object] = {
        "location": str(tree.location) + "/",
        "media": Media.TREE,
        "os": "debian12",
        "family": "debian",
        "name": "Debian 12",
        "version": "12",
        "arch": "x86_64",
        "installer": "debian-installer",
        "kernel": tree.kernel,
        "initrd": tree.initrd,
    }
    fields.update(kw)
    return Identification(**fields)  # type: ignore[arg-type]


def chain(tree: DebianTree, keyring: Path | None, **kw: object) -> ChainResult:
    loc = DirReader(tree.location)
    return verify_debian_chain(
        loc, ident_for(tree, **kw), keyring=keyring, open_dists=lambda url: DirReader(url)
    )


# --- find_release_path ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "dists", "suite", "subpath"),
    [
        (
            "http://m/debian/dists/bookworm/main/installer-amd64/",
            "http://m/debian/dists/bookworm/",
            "bookworm",
            "main/installer-amd64/",
        ),
        (
            "https://m:8080/ubuntu/dists/focal-updates/main/installer-amd64/current/legacy-images/",
            "https://m:8080/ubuntu/dists/focal-updates/",
            "focal-updates",
            "main/installer-amd64/current/legacy-images/",
        ),
        ("ftp://m/dists/sid", "ftp://m/dists/sid/", "sid", ""),
        (
            "http://m/d/dists/bookworm/main/installer-arm64/current/images/netboot/x/linux",
            "http://m/d/dists/bookworm/",
            "bookworm",
            "main/installer-arm64/current/images/netboot/x/",
        ),
        ("/srv/mirror/dists/stable/main/", "/srv/mirror/dists/stable/", "stable", "main/"),
        # the last dists/ wins: a mirror that lives under a directory called dists
        ("http://m/dists/d/dists/sid/main/", "http://m/dists/d/dists/sid/", "sid", "main/"),
    ],
)  # fmt: skip
def test_find_release_path(url: str, dists: str, suite: str, subpath: str) -> None:
    assert find_release_path(url) == ReleaseRef(dists, suite, subpath)


@pytest.mark.parametrize(
    "url",
    [
        "http://m/fedora/releases/42/Everything/x86_64/os/",
        "http://m/dists/",
        "http://m/dists/../x/",
    ],
)
def test_find_release_path_none(url: str) -> None:
    assert find_release_path(url) is None


# --- the real Debian archive ----------------------------------------------------------------


def test_real_bookworm_inrelease_verifies_with_debian_keyring() -> None:
    signed = verify_clearsigned(real_inrelease().read_bytes(), DEBIAN_KEYRING)
    fingerprints = {s.fingerprint for s in signed.signatures}
    assert BOOKWORM_AUTOMATIC in fingerprints
    release = parse_release(signed.text)
    assert "bookworm" in release.names
    assert release.origin == "Debian"
    assert "main/installer-amd64/current/images/SHA256SUMS" in release.sha256


def test_real_inrelease_with_one_changed_byte_fails() -> None:
    data = real_inrelease().read_bytes()
    at = data.index(b"main/installer-amd64/current/images/SHA256SUMS")
    tampered = data[: at - 3] + (b"0" if data[at - 3 : at - 2] != b"0" else b"1") + data[at - 2 :]
    with pytest.raises(SignatureError, match="does not verify"):
        verify_clearsigned(tampered, DEBIAN_KEYRING)


def test_real_inrelease_with_the_wrong_keyring_fails(key: TestKey) -> None:
    with pytest.raises(SignatureError, match="not in the keyring"):
        verify_clearsigned(real_inrelease().read_bytes(), key.keyring)


# --- a chain signed with a throwaway key ----------------------------------------------------


@pytest.mark.parametrize("mode", ["inrelease", "detached"])
def test_signed_chain_verifies(tmp_path: Path, key: TestKey, mode: str) -> None:
    tree = make_debian_tree(tmp_path, key, mode=mode)
    result = chain(tree, key.keyring)
    assert result.verified is Verified.SIGNED_CHAIN
    assert result.suite == "bookworm"
    assert [s.primary_fingerprint for s in result.signatures] == [key.fingerprint]
    kernel = (tree.location / tree.kernel).read_bytes()
    initrd = (tree.location / tree.initrd).read_bytes()
    assert result.checksums == {
        tree.kernel: "sha256:" + hashlib.sha256(kernel).hexdigest(),
        tree.initrd: "sha256:" + hashlib.sha256(initrd).hexdigest(),
    }
    assert result.sums_sha256 == hashlib.sha256(tree.sums.read_bytes()).hexdigest()
    assert result.to_json()["verified"] == "signed-chain"


def test_armored_keyring_is_accepted(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key)
    assert chain(tree, key.armored).verified is Verified.SIGNED_CHAIN


def test_chain_from_the_mirror_root(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key)
    prefix = "dists/bookworm/main/installer-amd64/"
    ident = ident_for(tree, kernel=prefix + tree.kernel, initrd=prefix + tree.initrd)
    result = verify_debian_chain(
        DirReader(tmp_path / "debian"), ident, keyring=key.keyring, open_dists=DirReader
    )
    assert result.verified is Verified.SIGNED_CHAIN
    assert set(result.checksums) == {prefix + tree.kernel, prefix + tree.initrd}


def test_tampered_inrelease_text_is_caught(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key)
    inrelease = tree.dists / "InRelease"
    inrelease.write_bytes(
        inrelease.read_bytes().replace(b"Codename: bookworm", b"Codename: bookwurm")
    )
    with pytest.raises(SignatureError, match="does not verify"):
        chain(tree, key.keyring)


def test_tampered_release_gpg_is_caught(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key, mode="detached")
    sig = tree.dists / "Release.gpg"
    lines = sig.read_bytes().splitlines(keepends=True)
    body = next(i for i, line in enumerate(lines) if len(line) > 40)  # a base64 line
    line = lines[body]
    lines[body] = line[:10] + (b"A" if line[10:11] != b"A" else b"B") + line[11:]
    sig.write_bytes(b"".join(lines))
    with pytest.raises(SignatureError):
        chain(tree, key.keyring)


def test_tampered_detached_release_is_caught(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key, mode="detached")
    release = tree.dists / "Release"
    release.write_bytes(release.read_bytes() + b"Valid-Until: Sat, 01 Jan 2000 00:00:00 UTC\n")
    with pytest.raises(SignatureError, match="does not verify"):
        chain(tree, key.keyring)


def test_tampered_sha256sums_is_caught(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key)
    evil = hashlib.sha256(b"evil kernel").hexdigest()
    text = tree.sums.read_bytes().decode().splitlines()
    text[0] = evil + text[0][64:]
    tree.sums.write_bytes(("\n".join(text) + "\n").encode())
    with pytest.raises(SignatureError, match="does not match the signed Release"):
        chain(tree, key.keyring)


def test_tampered_kernel_does_not_match_the_chain(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key)
    result = chain(tree, key.keyring)
    (tree.location / tree.kernel).write_bytes(b"evil kernel")
    served = hashlib.sha256((tree.location / tree.kernel).read_bytes()).hexdigest()
    assert result.checksums[tree.kernel] != f"sha256:{served}"


def test_signed_by_another_key_is_refused(tmp_path: Path, key: TestKey, other_key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, other_key)
    with pytest.raises(SignatureError, match="not in the keyring"):
        chain(tree, key.keyring)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda d: b"Origin: Evil\n" + d,
        lambda d: d + b"\nSHA256:\n " + b"0" * 64 + b" 1 main/x\n",
        lambda d: d + d,
    ],
    ids=["text-before", "text-after", "two-messages"],
)
def test_inrelease_with_data_outside_the_signature(
    tmp_path: Path, key: TestKey, wrap: object
) -> None:
    tree = make_debian_tree(tmp_path, key)
    inrelease = tree.dists / "InRelease"
    inrelease.write_bytes(wrap(inrelease.read_bytes()))  # type: ignore[operator]
    with pytest.raises(SignatureError, match=r"clearsigned|more than one"):
        chain(tree, key.keyring)


def test_release_of_another_suite_is_a_replay(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key, suite="bookworm")
    # Serve bullseye's (validly signed) Release under dists/bookworm/.
    other = make_debian_tree(tmp_path / "old", key, suite="bullseye")
    (tree.dists / "InRelease").write_bytes((other.dists / "InRelease").read_bytes())
    with pytest.raises(SignatureError, match="not for bookworm"):
        chain(tree, key.keyring)


def test_expired_valid_until_is_refused(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(
        tmp_path, key, release_extra="Valid-Until: Sat, 01 Jan 2000 00:00:00 UTC"
    )
    with pytest.raises(SignatureError, match="expired"):
        chain(tree, key.keyring)


def test_future_valid_until_is_fine(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(
        tmp_path, key, release_extra="Valid-Until: Fri, 01 Jan 2100 00:00:00 UTC"
    )
    assert chain(tree, key.keyring).verified is Verified.SIGNED_CHAIN


def test_unsigned_release_is_refused(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key, mode="unsigned")
    with pytest.raises(SignatureError, match="not signed"):
        chain(tree, key.keyring)


def test_no_release_is_none_with_a_reason(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key, mode="none")
    result = chain(tree, key.keyring)
    assert result.verified is Verified.NONE
    assert result.reason and "no InRelease" in result.reason


def test_no_keyring_for_the_family_is_none(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key)
    result = chain(tree, None, family="someotherdistro", os="someotherdistro1")
    assert result.verified is Verified.NONE
    assert result.reason and "--keyring" in result.reason


def test_debian_family_defaults_to_the_debian_keyring(tmp_path: Path, key: TestKey) -> None:
    if not DEBIAN_KEYRING.is_file():
        pytest.skip("debian-archive-keyring is not installed")
    tree = make_debian_tree(tmp_path, key)
    with pytest.raises(SignatureError, match=str(DEBIAN_KEYRING)):
        chain(tree, None)  # signed by the throwaway key, not by Debian


def test_missing_sha256sums_is_refused(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key)
    tree.sums.unlink()
    with pytest.raises(SignatureError, match="missing"):
        chain(tree, key.keyring)


def test_artifact_not_in_sha256sums_is_none(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key)
    result = chain(tree, key.keyring, initrd=tree.kernel.replace("linux", "other.gz"))
    assert result.verified is Verified.NONE
    assert result.reason and "does not list" in result.reason


def test_contradicting_tree_checksum_is_refused(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key)
    bad = {tree.kernel: "sha256:" + "0" * 64}
    with pytest.raises(SignatureError, match="contradicts"):
        chain(tree, key.keyring, checksums=bad)


def test_artifact_path_leaving_the_tree_is_refused(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path, key)
    with pytest.raises(SignatureError, match="leaves the tree"):
        chain(tree, key.keyring, kernel="../../../../etc/passwd")


def test_not_below_dists_is_none(tmp_path: Path) -> None:
    ident = Identification(
        "/srv/fedora/", Media.TREE, "fedora42", "fedora", None, "42", "x86_64", "anaconda",
        "images/pxeboot/vmlinuz", "images/pxeboot/initrd.img",
    )  # fmt: skip
    result = verify_debian_chain(DirReader(tmp_path), ident, keyring=None)
    assert result.verified is Verified.NONE


def test_detached_signature_over_other_data(key: TestKey) -> None:
    sig = key.detach_sign(b"one text\n")
    with pytest.raises(SignatureError):
        verify_detached(b"another text\n", sig, key.keyring)


def test_unreadable_keyring(tmp_path: Path, key: TestKey) -> None:
    with pytest.raises(SignatureError, match="cannot read keyring"):
        verify_clearsigned(key.clearsign(b"x\n"), tmp_path / "nope.gpg")


# --- status and file parsers ----------------------------------------------------------------


def test_weak_digest_does_not_count() -> None:
    status = (
        "[GNUPG:] GOODSIG ABCD someone\n"
        "[GNUPG:] VALIDSIG " + "A" * 40 + " 2020-01-01 1577836800 0 4 0 1 2 00 " + "B" * 40 + "\n"
    )
    good, problems = _parse_status(status)
    assert good == []
    assert "SHA-1" in problems[0]


def test_expired_key_is_a_problem() -> None:
    good, problems = _parse_status("[GNUPG:] EXPKEYSIG ABCD someone\n")
    assert good == [] and problems[0].startswith("EXPKEYSIG")


@pytest.mark.parametrize(
    "text",
    [
        b"0" * 64 + b"  ../etc/passwd\n",
        b"0" * 64 + b"  /etc/passwd\n",
        b"0" * 64 + b"  ./a\n" + b"1" * 64 + b"  a\n",
    ],
)
def test_parse_sha256sums_rejects(text: bytes) -> None:
    with pytest.raises(MetadataError):
        parse_sha256sums(text)


@pytest.mark.parametrize(
    "junk", [b"nothex  ./linux\n", b"0" * 63 + b"  ./linux\n", b"\xff\xfe\n"]
)
def test_parse_sha256sums_skips_junk_lines(junk: bytes) -> None:
    """Issue 10: lines in another form are skipped (``sha256sum --check`` does the same);
    the file they would name stays unverified."""
    good = b"ab" * 32 + b"  ./initrd.gz\n"
    assert parse_sha256sums(junk + good) == {"initrd.gz": "ab" * 32}


def test_parse_sha256sums_forms() -> None:
    h = "ab" * 32
    sums = parse_sha256sums(f"{h}  ./netboot/linux\n{h.upper()} *initrd.gz\n\n".encode())
    assert sums == {"netboot/linux": h, "initrd.gz": h}


@pytest.mark.parametrize(
    "text",
    [b" leading continuation\n", b"no colon here\n", b"SHA256:\n zz 12 path\n", b"\xff\n"],
)
def test_parse_release_rejects(text: bytes) -> None:
    with pytest.raises(MetadataError):
        parse_release(text)


# --- end to end: served over loopback HTTP, through the CLI ---------------------------------


@pytest.fixture
def served(tmp_path: Path, key: TestKey) -> Iterator[tuple[DebianTree, HostileServer]]:
    tree = make_debian_tree(tmp_path / "srv", key)
    server = HostileServer(tmp_path / "srv").start()
    try:
        yield tree, server
    finally:
        server.close()


def tree_url(tree: DebianTree, server: HostileServer) -> str:
    return server.url("ok", str(tree.location.relative_to(tree.root)) + "/")


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TREEBOOT_CACHE=str(cache))
    return subprocess.run(
        [sys.executable, "-m", "treeboot", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_cli_identify_reports_the_chain(
    served: tuple[DebianTree, HostileServer], key: TestKey, tmp_path: Path
) -> None:
    tree, server = served
    proc = cli("identify", tree_url(tree, server), "--keyring", str(key.keyring), "--json",
               cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verified"] == "signed-chain"
    chain_json = out["extra"]["signature"]
    assert chain_json["suite"] == "bookworm"
    assert chain_json["signed_by"][0]["primary"] == key.fingerprint
    assert out["checksums"][tree.kernel] == chain_json["checksums"][tree.kernel]


@pytest.mark.timeout(120)
def test_cli_fetch_require_signature(
    served: tuple[DebianTree, HostileServer], key: TestKey, tmp_path: Path
) -> None:
    tree, server = served
    proc = cli("fetch", tree_url(tree, server), "--keyring", str(key.keyring),
               "--require-signature", "--json", cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verified"] == "signed-chain"
    assert Path(out["kernel"]).read_bytes() == (tree.location / tree.kernel).read_bytes()


@pytest.mark.timeout(120)
def test_cli_explain_passes_the_keyring_through(
    served: tuple[DebianTree, HostileServer], key: TestKey, tmp_path: Path
) -> None:
    """explain fetches through the same path as install: --keyring and --require-signature
    reach the signed chain, and a keyring that did not sign the Release is refused."""
    tree, server = served
    proc = cli("explain", tree_url(tree, server), "--keyring", str(key.keyring),
               "--require-signature", "--json", cache=tmp_path / "c1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    verified = {a["role"]: a["verified"] for a in json.loads(proc.stdout)["artifacts"]}
    assert verified == {"kernel": "signed-chain", "initrd": "signed-chain"}
    (tmp_path / "other").mkdir()
    other = make_key(tmp_path / "other")
    other.close()  # its keyring file is all this test needs: stop the gpg-agent gpg started
    proc = cli("explain", tree_url(tree, server), "--keyring", str(other.keyring),
               "--require-signature", cache=tmp_path / "c2")  # fmt: skip
    assert proc.returncode == SignatureError.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(120)
def test_cli_require_signature_refuses_an_unsigned_tree(tmp_path: Path, key: TestKey) -> None:
    tree = make_debian_tree(tmp_path / "srv", key, mode="none")
    server = HostileServer(tmp_path / "srv").start()
    try:
        proc = cli("fetch", tree_url(tree, server), "--keyring", str(key.keyring),
                   "--require-signature", cache=tmp_path / "cache")  # fmt: skip
    finally:
        server.close()
    assert proc.returncode == SignatureError.exit_code, proc.stderr
    assert "treeboot: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(r.path.endswith("/linux") for r in server.state.log)  # refused before download


@pytest.mark.timeout(120)
def test_cli_tampered_kernel_is_caught_by_fetch(
    served: tuple[DebianTree, HostileServer], key: TestKey, tmp_path: Path
) -> None:
    tree, server = served
    (tree.location / tree.kernel).write_bytes(b"an evil kernel\n" * 100)
    proc = cli("fetch", tree_url(tree, server), "--keyring", str(key.keyring),
               cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == ChecksumMismatch.exit_code, proc.stderr
    assert "treeboot: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(
        (tmp_path / "cache" / "blobs" / "sha256").glob(
            hashlib.sha256(b"an evil kernel\n" * 100).hexdigest()
        )
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("link", ["InRelease", "SHA256SUMS"])
def test_cli_tampered_link_fails_identify(
    served: tuple[DebianTree, HostileServer], key: TestKey, tmp_path: Path, link: str
) -> None:
    tree, server = served
    target = tree.dists / "InRelease" if link == "InRelease" else tree.sums
    target.write_bytes(target.read_bytes().replace(b"amd64", b"arm64", 1))
    proc = cli("identify", tree_url(tree, server), "--keyring", str(key.keyring),
               cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == SignatureError.exit_code, proc.stderr
    assert "treeboot: error:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.timeout(120)
def test_cli_debian_tree_signed_by_a_stranger_fails_with_the_default_keyring(
    served: tuple[DebianTree, HostileServer], tmp_path: Path
) -> None:
    if not DEBIAN_KEYRING.is_file():
        pytest.skip("debian-archive-keyring is not installed")
    tree, server = served
    proc = cli("identify", tree_url(tree, server), cache=tmp_path / "cache")
    assert proc.returncode == SignatureError.exit_code, proc.stderr
    assert "not in the keyring" in proc.stderr


@pytest.mark.timeout(120)
def test_cli_install_dry_run_takes_the_keyring(
    served: tuple[DebianTree, HostileServer], key: TestKey, tmp_path: Path
) -> None:
    """`install --keyring --require-signature` walks the same chain as fetch before planning."""
    tree, server = served
    url = tree_url(tree, server)
    signed = cli("install", url, "--name", "sig", "--disk", "none", "--accel", "tcg",
                 "--keyring", str(key.keyring), "--require-signature", "--dry-run", "--json",
                 cache=tmp_path / "cache")  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["identification"]["verified"] == "signed-chain"
    (tmp_path / "other").mkdir()
    other = make_key(tmp_path / "other", "someone else")
    try:
        refused = cli("install", url, "--name", "sig2", "--disk", "none", "--accel", "tcg",
                      "--keyring", str(other.keyring), "--require-signature", "--dry-run",
                      cache=tmp_path / "cache2")  # fmt: skip
    finally:
        other.close()
    assert refused.returncode == SignatureError.exit_code, refused.stderr
    assert "Traceback" not in refused.stderr
