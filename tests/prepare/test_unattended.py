"""Unattended files: options, generation per family, secrets, user-written files, seed image."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pycdlib
import pytest

from _unattended_helpers import (
    PUBKEY,
    ROOT_TOKEN,
    USER_TOKEN,
    make_ident,
    make_secret_files,
)
from treeboot.errors import UnattendedError
from treeboot.prepare.unattended import (
    KINDS,
    REDACTED,
    UnattendedOptions,
    UnattendedPayload,
    load_unattended_file,
    redact,
    render_unattended,
    validate,
    write_seed_iso,
)
from treeboot.prepare.unattended._crypt import sha512_crypt
from treeboot.prepare.unattended._template import load_families, load_template
from treeboot.prepare.unattended.options import PROFILES
from treeboot.prepare.unattended.validate import validate_kickstart

INSTALLERS = {
    "anaconda": ("kickstart", ["ks.cfg"], ["inst.ks=file:/ks.cfg"]),
    "debian-installer": ("preseed", ["preseed.cfg"], ["auto=true", "priority=critical"]),
    "linuxrc": ("autoyast", ["autoinst.xml"], ["autoyast=file:///autoinst.xml"]),
    "subiquity": ("autoinstall", ["user-data", "meta-data"], ["autoinstall", "ds=nocloud"]),
}


def _text(payload: UnattendedPayload, index: int = 0) -> str:
    data = payload.files[index].data
    assert isinstance(data, bytes)
    return data.decode()


# --- options ---------------------------------------------------------------------------------


def test_parse_full_spec() -> None:
    opts = UnattendedOptions.parse(
        "profile=desktop,admin-user=alice,user-password-file=/p,admin-password-file=/r,"
        "ssh-key=/k,timezone=Europe/Berlin,locale=de_DE.UTF-8,hostname=h,keyboard=de"
    )
    assert opts == UnattendedOptions(
        profile="desktop",
        admin_user="alice",
        user_password_file=Path("/p"),
        admin_password_file=Path("/r"),
        ssh_key_file=Path("/k"),
        timezone="Europe/Berlin",
        locale="de_DE.UTF-8",
        hostname="h",
        keyboard="de",
    )
    assert opts.to_json()["user_password_file"] == "/p"


def test_parse_virt_install_names_and_defaults() -> None:
    opts = UnattendedOptions.parse("profile=jeos,user-login=bob,ssh_key_file=/k")
    assert (opts.profile, opts.admin_user, opts.ssh_key_file) == ("minimal", "bob", Path("/k"))
    assert UnattendedOptions.parse("") == UnattendedOptions()
    assert UnattendedOptions().timezone == "UTC"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("colour=red", "unknown --unattended key 'colour'"),
        ("product-key=ABC", "product-key= is not supported"),
        ("hostname=", "needs a value"),
        ("hostname=a,hostname=b", "more than once"),
        ("profile=server", "invalid unattended profile"),
        ("timezone=Mars/Olympus", "invalid unattended timezone"),
        ("locale=english", "invalid unattended locale"),
        ("hostname=bad_host!", "invalid unattended hostname"),
        ("admin-user=root", "invalid unattended admin-user"),
        ("admin-user=Alice Smith", "invalid unattended admin-user"),
        ("keyboard=us\nrootpw", "invalid unattended keyboard"),
        ("user-password-file=/p", "no user to set it for"),
    ],
)
def test_parse_rejects(spec: str, fragment: str) -> None:
    with pytest.raises(UnattendedError) as e:
        UnattendedOptions.parse(spec)
    assert fragment in e.value.message
    assert e.value.exit_code == 2


def test_unknown_key_hint_lists_keys() -> None:
    with pytest.raises(UnattendedError) as e:
        UnattendedOptions.parse("colour=red")
    assert e.value.hint is not None and "admin-password-file" in e.value.hint


# --- generation ------------------------------------------------------------------------------


@pytest.mark.parametrize("installer", sorted(INSTALLERS))
@pytest.mark.parametrize("profile", ["minimal", "desktop"])
def test_render_each_family(installer: str, profile: str, tmp_path: Path) -> None:
    files = make_secret_files(tmp_path)
    payload = render_unattended(
        make_ident(installer), UnattendedOptions.parse(files.spec(profile=profile, hostname="h1"))
    )
    kind, names, kargs = INSTALLERS[installer]
    assert payload.kind == kind
    assert [f.archive_name for f in payload.files] == names
    assert payload.kernel_args == kargs
    assert payload.delivery == ("cidata" if installer == "subiquity" else "initrd")
    assert payload.files[0].mode == 0o600
    text = _text(payload)
    assert validate(kind, text) == []
    assert "h1" in text
    assert (PUBKEY in text) == (kind != "preseed")  # preseed carries it base64-encoded
    # Only crypt hashes go into the file; both hashes verify against the plaintext.
    assert ROOT_TOKEN not in text and USER_TOKEN not in text
    hashes = re.findall(r"\$6\$[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}", text)
    assert len(hashes) == 2
    for token, hashed in zip((ROOT_TOKEN, USER_TOKEN), _ordered(hashes, kind), strict=True):
        assert sha512_crypt(token, hashed.split("$")[2]) == hashed
        assert {token, hashed} <= set(payload.secret_values)


def _ordered(hashes: list[str], kind: str) -> list[str]:
    # autoinstall writes the user (identity) before root (user-data chpasswd)
    return hashes[::-1] if kind == "autoinstall" else hashes


@pytest.mark.parametrize("installer", sorted(INSTALLERS))
def test_secrets_stay_out_of_args_json_and_repr(installer: str, tmp_path: Path) -> None:
    payload = render_unattended(
        make_ident(installer), UnattendedOptions.parse(make_secret_files(tmp_path).spec())
    )
    public = " ".join(payload.kernel_args) + json.dumps(payload.to_json()) + repr(payload)
    for secret in payload.secret_values:
        assert secret not in public
    assert len(payload.secret_values) == 4


def test_payload_json_describes_files_only(tmp_path: Path) -> None:
    payload = render_unattended(
        make_ident("subiquity"), UnattendedOptions.parse(make_secret_files(tmp_path).spec())
    )
    doc = payload.to_json()
    assert doc["delivery"] == "cidata"
    assert [(f["name"], f["mode"]) for f in doc["files"]] == [
        ("user-data", "0600"),
        ("meta-data", "0644"),
    ]
    assert doc["files"][0]["size"] == len(_text(payload).encode())


@pytest.mark.parametrize(
    ("family", "version", "handler"),
    [("fedora", "40", "F40"), ("rhel", "9.4", "RHEL9"), ("centos", "8", "RHEL8"),
     ("fedora", "999", None)],
)  # fmt: skip
def test_kickstart_parses_with_the_release_handler(
    family: str, version: str, handler: str | None, tmp_path: Path
) -> None:
    opts = UnattendedOptions.parse(make_secret_files(tmp_path).spec(profile="desktop"))
    payload = render_unattended(make_ident("anaconda", family, version), opts)
    assert validate_kickstart(_text(payload), handler) == []
    packages = _text(payload).split("%packages\n")[1]
    expected = "workstation-product" if family == "fedora" else "graphical-server"
    assert expected in packages


def test_profiles_select_packages(tmp_path: Path) -> None:
    spec = make_secret_files(tmp_path).spec
    tasks = {
        (fam, prof): _text(
            render_unattended(
                make_ident("debian-installer", fam), UnattendedOptions.parse(spec(profile=prof))
            )
        )
        for fam in ("debian", "ubuntu")
        for prof in ("minimal", "desktop")
    }
    line = "tasksel tasksel/first multiselect "
    assert line + "standard, ssh-server\n" in tasks["debian", "minimal"]
    assert "gnome-desktop" in tasks["debian", "desktop"]
    assert "ubuntu-desktop" in tasks["ubuntu", "desktop"]


def test_preseed_mirror_from_location(tmp_path: Path) -> None:
    spec = make_secret_files(tmp_path).spec()
    text = _text(render_unattended(make_ident("debian-installer"), UnattendedOptions.parse(spec)))
    assert "d-i mirror/http/hostname string deb.debian.org\n" in text
    assert "d-i mirror/http/directory string /debian\n" in text
    local = make_ident("debian-installer", location="/usr/lib/debian-installer/images/12/amd64")
    text = _text(render_unattended(local, UnattendedOptions.parse(spec)))
    assert "mirror/http/hostname" not in text and "mirror/http/proxy string\n" in text


def test_ssh_key_only_goes_to_root(tmp_path: Path) -> None:
    files = make_secret_files(tmp_path)
    opts = UnattendedOptions(ssh_key_file=files.key)
    ks = _text(render_unattended(make_ident("anaconda"), opts))
    assert f'sshkey --username=root "{PUBKEY}"' in ks and "rootpw --lock" in ks
    preseed = _text(render_unattended(make_ident("debian-installer"), opts))
    blob = re.search(r"echo (\S+) \| base64 -d >> /root/\.ssh/authorized_keys", preseed)
    assert blob is not None and base64.b64decode(blob.group(1)).decode() == PUBKEY + "\n"
    assert "d-i passwd/make-user boolean false" in preseed
    ay = _text(render_unattended(make_ident("linuxrc"), opts))
    assert "<username>root</username>" in ay and PUBKEY in ay and "user_password" not in ay


def test_no_way_to_log_in_is_refused() -> None:
    with pytest.raises(UnattendedError, match="no way to log in"):
        render_unattended(make_ident("anaconda"), UnattendedOptions(admin_user="alice"))


def test_autoinstall_needs_a_user(tmp_path: Path) -> None:
    opts = UnattendedOptions(admin_password_file=make_secret_files(tmp_path).root)
    with pytest.raises(UnattendedError, match="identity") as e:
        render_unattended(make_ident("subiquity"), opts)
    assert e.value.hint is not None and "admin-user=" in e.value.hint


@pytest.mark.parametrize("installer", ["archiso", "alpine", None])
def test_unsupported_installer(installer: str | None, tmp_path: Path) -> None:
    ident = make_ident("anaconda")
    ident = type(ident)(**{**ident.__dict__, "installer": installer})
    with pytest.raises(UnattendedError) as e:
        render_unattended(ident, UnattendedOptions.parse(make_secret_files(tmp_path).spec()))
    assert "unattended installs are not supported for" in e.value.message
    assert "supported: anaconda, debian-installer, linuxrc, subiquity" in e.value.message


def test_bad_credential_files(tmp_path: Path) -> None:
    files = make_secret_files(tmp_path)
    ident = make_ident("anaconda")
    with pytest.raises(UnattendedError, match="cannot read the admin"):
        render_unattended(ident, UnattendedOptions(admin_password_file=tmp_path / "missing"))
    empty = tmp_path / "empty.pw"
    empty.write_text("\nnot-the-first-line\n")
    with pytest.raises(UnattendedError, match="is empty"):
        render_unattended(ident, UnattendedOptions(admin_password_file=empty))
    private = tmp_path / "id"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxyz\n")
    with pytest.raises(UnattendedError, match="private key"):
        render_unattended(ident, UnattendedOptions(ssh_key_file=private))
    options = tmp_path / "opts.pub"
    options.write_text('command="rm -rf /" ' + PUBKEY + "\n")
    with pytest.raises(UnattendedError, match="not a plain OpenSSH public key"):
        render_unattended(ident, UnattendedOptions(ssh_key_file=options))
    assert files.root.read_text().startswith(ROOT_TOKEN)


def test_redact() -> None:
    text = "pw=abc hash=$6$s$abcdef and abc again"
    assert (
        redact(text, ["abc", "$6$s$abcdef", ""]) == f"pw={REDACTED} hash={REDACTED} and "
        f"{REDACTED} again"
    )
    assert redact("nothing", []) == "nothing"
    assert redact(json.dumps({"k": 'a"b\\c'}), ['a"b\\c']) == f'{{"k": "{REDACTED}"}}'


def test_families_table_is_complete() -> None:
    families = load_families()
    assert sorted(families["installer"]) == sorted(INSTALLERS)
    for entry in families["installer"].values():
        assert entry["kind"] in KINDS
        assert entry.get("delivery", "initrd") in ("initrd", "cidata")
        assert all(a and " " not in a for a in entry["kernel_args"])
    for kind in KINDS:
        assert load_template(families["kind"][kind]["template"])
        for profile in PROFILES:
            assert "default" in families["packages"][kind][profile]


def test_preseed_passes_debconf_checkonly(tmp_path: Path) -> None:
    tool = shutil.which("debconf-set-selections")
    if tool is None:
        pytest.skip("apt-get install debconf")
    files = make_secret_files(tmp_path)
    for fam in ("debian", "ubuntu"):
        payload = render_unattended(
            make_ident("debian-installer", fam), UnattendedOptions.parse(files.spec())
        )
        out = tmp_path / "preseed.cfg"
        out.write_bytes(payload.files[0].data)  # type: ignore[arg-type]
        proc = subprocess.run([tool, "--checkonly", str(out)], capture_output=True, check=False)
        assert proc.returncode == 0 and proc.stderr == b""


# --- user-written files ----------------------------------------------------------------------

USER_FILES = {
    "kickstart": ("ks.cfg", "text\nlang en_US.UTF-8\nrootpw --plaintext S3cret-KS\n"
                  "%packages\n@core\n%end\n"),
    "preseed": ("preseed.cfg", "# hi\nd-i debian-installer/locale string en_US\n"
                "d-i passwd/root-password password S3cret-PS\n"
                "d-i passwd/root-password-again password S3cret-PS\n"),
    "autoyast": ("autoinst.xml", '<?xml version="1.0"?>\n<profile xmlns='
                 '"http://www.suse.com/1.0/yast2ns" xmlns:config="http://www.suse.com/1.0/configns">'
                 '<users config:type="list"><user><username>root</username>'
                 "<user_password>S3cret-AY</user_password></user></users></profile>\n"),
    "autoinstall": ("user-data", "#cloud-config\nautoinstall:\n  version: 1\n  identity:\n"
                    "    hostname: box\n    username: u\n    password: S3cret-AI\n"),
}  # fmt: skip
KIND_INSTALLER = {kind: inst for inst, (kind, _, _) in INSTALLERS.items()}


@pytest.mark.parametrize("kind", sorted(USER_FILES))
def test_load_user_file(kind: str, tmp_path: Path) -> None:
    name, text = USER_FILES[kind]
    path = tmp_path / "file"
    path.write_text(text)
    payload = load_unattended_file(make_ident(KIND_INSTALLER[kind]), path)
    assert payload.kind == kind
    assert payload.files[0].archive_name == name and payload.files[0].mode == 0o600
    assert payload.files[0].data == text.encode()
    token = {"kickstart": "KS", "preseed": "PS", "autoyast": "AY", "autoinstall": "AI"}[kind]
    assert payload.secret_values == [f"S3cret-{token}"]
    assert payload.kernel_args == INSTALLERS[KIND_INSTALLER[kind]][2]


@pytest.mark.parametrize("kind", sorted(USER_FILES))
@pytest.mark.parametrize("installer", sorted(INSTALLERS))
def test_load_user_file_of_the_wrong_kind(kind: str, installer: str, tmp_path: Path) -> None:
    expected = INSTALLERS[installer][0]
    if kind == expected:
        return
    path = tmp_path / "file"
    path.write_text(USER_FILES[kind][1])
    with pytest.raises(UnattendedError) as e:
        load_unattended_file(make_ident(installer), path)
    word = {"autoyast": "AutoYaST"}.get(expected, expected)
    assert f"uses {installer}, which reads " in e.value.message
    assert word in e.value.message.split("which reads")[1]
    assert e.value.hint is not None and word in e.value.hint


def test_load_unrecognised_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n")
    with pytest.raises(UnattendedError, match="cannot tell what kind") as e:
        load_unattended_file(make_ident("anaconda"), path)
    assert "kickstart" in e.value.message


def test_invalid_user_file_error_is_redacted(tmp_path: Path) -> None:
    path = tmp_path / "ks.cfg"
    path.write_text("text\nrootpw --plaintext LEAKY-PW extra-arg\n")
    with pytest.raises(UnattendedError) as e:
        load_unattended_file(make_ident("anaconda"), path)
    assert "line 2" in e.value.message and "LEAKY-PW" not in str(e.value)
    bad = tmp_path / "preseed.cfg"
    bad.write_text("d-i passwd/root-password password LEAKY-PW\nd-i x/y boolean perhaps\n")
    with pytest.raises(UnattendedError, match="line 2: x/y: a boolean") as e:
        load_unattended_file(make_ident("debian-installer"), bad)
    assert "LEAKY-PW" not in str(e.value)


def test_bare_autoinstall_yaml_is_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "autoinstall.yaml"
    path.write_text("version: 1\nidentity: {hostname: box, username: u, password: 'x$6$y'}\n")
    payload = load_unattended_file(make_ident("subiquity"), path)
    user_data = _text(payload)
    assert user_data.startswith("#cloud-config\nautoinstall:\n")
    assert validate("autoinstall", user_data) == []
    assert b'local-hostname: "box"' in payload.files[1].data  # type: ignore[operator]
    assert payload.secret_values == ["x$6$y"]


# --- seed image ------------------------------------------------------------------------------


def test_seed_iso_round_trip(tmp_path: Path) -> None:
    payload = render_unattended(
        make_ident("subiquity"), UnattendedOptions.parse(make_secret_files(tmp_path).spec())
    )
    iso_path = write_seed_iso(payload.files, tmp_path / "seed.iso")
    assert iso_path.stat().st_mode & 0o777 == 0o600
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "CIDATA"
        for f in payload.files:
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{f.archive_name}")
            assert buf.getvalue() == f.data
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, joliet_path=f"/{f.archive_name}")
            assert buf.getvalue() == f.data
    finally:
        iso.close()
