"""Generate an installer's own unattended file from :class:`UnattendedOptions`, or load one.

The result is an :class:`UnattendedPayload`: files to inject into the initrd (or, for
subiquity, to put on a CIDATA volume), the kernel arguments that make the installer read them,
and every secret value (plaintext passwords and their hashes) so callers can redact logs and
console output. Generated files hold SHA-512 crypt hashes only, never plaintext passwords;
files that can hold secrets get mode 0600.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import yaml

from treeboot.artifacts.cpio import InjectFile
from treeboot.errors import UnattendedError
from treeboot.model import Identification
from treeboot.prepare.unattended._crypt import sha512_crypt
from treeboot.prepare.unattended._template import fill, load_families
from treeboot.prepare.unattended.options import UnattendedOptions, check_hostname
from treeboot.prepare.unattended.validate import detect_kind, extract_secrets, validate

log = logging.getLogger("treeboot.prepare.unattended")

REDACTED = "********"
_SECRET_MODE = 0o600
_MAX_USER_FILE = 1 << 20
_MAX_SECRET_FILE = 4096
_SSH_KEY_RE = re.compile(
    r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [A-Za-z0-9@._:+=/ -]*)?"
)
_KIND_NAMES = {
    "kickstart": "a kickstart",
    "preseed": "a d-i preseed",
    "autoyast": "an AutoYaST XML",
    "autoinstall": "an autoinstall cloud-config",
}
_KIND_LOOKS = {
    "kickstart": "kickstart commands such as 'lang', 'rootpw', 'autopart' and '%packages'",
    "preseed": "lines like 'd-i debian-installer/locale string en_US.UTF-8'",
    "autoyast": f'<profile xmlns="{"http://www.suse.com/1.0/yast2ns"}"> XML',
    "autoinstall": "'#cloud-config' YAML with an 'autoinstall:' section",
}


@dataclass(frozen=True)
class UnattendedPayload:
    """What an unattended install adds to the boot.

    ``delivery`` is "initrd" (inject ``files`` into a private copy of the initrd) or "cidata"
    (put ``files`` on a volume labelled CIDATA, see :func:`write_seed_iso`). ``repr`` and
    :meth:`to_json` never show file contents or ``secret_values``.
    """

    kind: str  # "kickstart" | "preseed" | "autoyast" | "autoinstall"
    files: list[InjectFile] = field(repr=False)
    kernel_args: list[str]
    secret_values: list[str] = field(repr=False)
    delivery: str = "initrd"
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "delivery": self.delivery,
            "kernel_args": list(self.kernel_args),
            "files": [
                {"name": f.archive_name, "mode": f"{f.mode:04o}", "size": _size(f.data)}
                for f in self.files
            ],
            "warnings": [redact(w, self.secret_values) for w in self.warnings],
        }

    def redact(self, text: str) -> str:
        return redact(text, self.secret_values)


def _size(data: bytes | Path) -> int:
    return len(data) if isinstance(data, bytes) else data.stat().st_size


def redact(text: str, secrets: Sequence[str]) -> str:
    """Replace every occurrence of each secret (longest first, also JSON-escaped) with
    ``********``."""
    forms = {s for s in secrets if s}
    forms |= {json.dumps(s)[1:-1] for s in forms}  # as it appears inside JSON strings
    for secret in sorted(forms, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


# --- family ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    installer: str
    kind: str
    kernel_args: list[str]
    delivery: str


def find_family(ident: Identification) -> _Family:
    """The unattended mechanism of ``ident.installer``, from ``templates/families.toml``."""
    installers: dict[str, dict[str, Any]] = load_families()["installer"]
    entry = installers.get(ident.installer or "")
    if entry is None:
        raise UnattendedError(
            f"unattended installs are not supported for {ident.installer or 'this tree'}; "
            f"supported: {', '.join(installers)}",
            hint="install interactively (without --unattended), or pass the installer's own "
            "kernel arguments with --extra-args",
        )
    return _Family(
        installer=ident.installer or "",
        kind=entry["kind"],
        kernel_args=list(entry["kernel_args"]),
        delivery=entry.get("delivery", "initrd"),
    )


def _kickstart_version(ident: Identification) -> str | None:
    from pykickstart.version import versionMap

    prefix = load_families()["kickstart_versions"].get(ident.family or "")
    major = re.match(r"\d+", ident.version or "")
    name = f"{prefix}{major.group()}" if prefix and major else None
    return name if name in versionMap else None  # newer than pykickstart knows: DEVEL


# --- credentials -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Credentials:
    root_hash: str | None
    user_hash: str | None
    ssh_keys: list[str]
    secrets: list[str]


def _read_small(path: Path, what: str, limit: int) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise UnattendedError(
            f"cannot read the {what} {path}: {e.strerror}", hint="check the path and permissions"
        ) from e
    if len(raw) > limit:
        raise UnattendedError(f"the {what} {path} is larger than {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnattendedError(f"the {what} {path} is not UTF-8 text") from e


def _read_password(path: Path, what: str) -> str:
    """The first line of a password file, like virt-install's ``*-password-file=``."""
    text = _read_small(path, f"{what} file", _MAX_SECRET_FILE)
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise UnattendedError(
            f"the {what} file {path} is empty", hint="write the password on its first line"
        )
    return password


def _read_ssh_keys(path: Path) -> list[str]:
    text = _read_small(path, "ssh key file", 64 * 1024)
    if "PRIVATE KEY" in text:
        raise UnattendedError(
            f"{path} holds a private key", hint="give the public key (the .pub file)"
        )
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    for number, key in enumerate(keys, 1):
        if not _SSH_KEY_RE.fullmatch(key):
            raise UnattendedError(
                f"key {number} in {path} is not a plain OpenSSH public key",
                hint="one 'TYPE BASE64 [comment]' per line, no authorized_keys options; the "
                "comment may use letters, digits, spaces and @._:+=/-",
            )
    if not keys:
        raise UnattendedError(f"no public key found in {path}", hint="give a .pub file")
    return keys


def read_credentials(opts: UnattendedOptions) -> _Credentials:
    secrets: list[str] = []
    hashes: list[str | None] = []
    for path, what in ((opts.admin_password_file, "admin (root) password"),
                       (opts.user_password_file, "user password")):  # fmt: skip
        if path is None:
            hashes.append(None)
            continue
        password = _read_password(path, what)
        hashed = sha512_crypt(password)
        secrets += [password, hashed]
        hashes.append(hashed)
    keys = _read_ssh_keys(opts.ssh_key_file) if opts.ssh_key_file else []
    if not (hashes[0] or hashes[1] or keys):
        raise UnattendedError(
            "the installed system would have no way to log in",
            hint="give admin-password-file=, admin-user= with user-password-file=, or ssh-key=",
        )
    return _Credentials(root_hash=hashes[0], user_hash=hashes[1], ssh_keys=keys, secrets=secrets)


# --- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    ident: Identification
    opts: UnattendedOptions
    creds: _Credentials
    hostname: str
    packages: list[str]

    def values(self) -> dict[str, str]:
        o, c = self.opts, self.creds
        return {
            "profile": o.profile,
            "os_name": self.ident.name or self.ident.os or "an unidentified OS",
            "locale": o.locale,
            "keyboard": o.keyboard,
            "timezone": o.timezone,
            "hostname": self.hostname,
            "user": o.admin_user or "",
            "root_hash": c.root_hash or "",
            "user_hash": c.user_hash or "",
        }

    def flags(self) -> dict[str, bool]:
        return {
            "root_password": self.creds.root_hash is not None,
            "user": self.opts.admin_user is not None,
            "user_password": self.creds.user_hash is not None,
            "ssh_keys": bool(self.creds.ssh_keys),
        }

    @property
    def key_owner(self) -> str:
        """Keys go to the regular user when there is one, else to root."""
        return self.opts.admin_user or "root"


def _default_hostname(ident: Identification) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", (ident.os or ident.family or "linux").lower())
    return base.strip("-")[:63] or "linux"


def _packages(kind: str, ident: Identification, profile: str) -> list[str]:
    table: dict[str, list[str]] = load_families()["packages"][kind][profile]
    return list(table.get(ident.family or "", table["default"]))


def _render_kickstart(ctx: _Context) -> dict[str, str]:
    sshkeys = [f'sshkey --username={ctx.key_owner} "{k}"' for k in ctx.creds.ssh_keys]
    values = ctx.values() | {
        "sshkey_lines": "\n".join(sshkeys),
        "packages": "\n".join(ctx.packages),
    }
    return {"ks.cfg": fill("kickstart.ks", values, ctx.flags())}


def preseed_mirror(location: str) -> tuple[str, str, str] | None:
    """(scheme, host, directory) of a Debian-style mirror location (".../dists/..."), or None."""
    url = urlsplit(location)
    if url.scheme not in ("http", "https", "ftp") or "/dists/" not in url.path or not url.hostname:
        return None
    host = url.hostname + (f":{url.port}" if url.port else "")
    directory = url.path.split("/dists/", 1)[0] or "/"
    if not re.fullmatch(r"[A-Za-z0-9._~%/+-]+", directory):
        return None
    return url.scheme, host, directory


def _preseed_key_command(keys: list[str], owner: str) -> str:
    # base64 keeps the keys out of shell quoting; late_command runs in the installer's shell.
    home = "/root" if owner == "root" else f"/home/{owner}"
    blob = base64.b64encode(("\n".join(keys) + "\n").encode()).decode()
    return (
        f"in-target sh -c 'mkdir -p -m 700 {home}/.ssh && echo {blob} | base64 -d >> "
        f"{home}/.ssh/authorized_keys && chmod 600 {home}/.ssh/authorized_keys && "
        f"chown -R {owner}: {home}/.ssh'"
    )


def _render_preseed(ctx: _Context) -> dict[str, str]:
    mirror = preseed_mirror(ctx.ident.location)
    scheme, host, directory = mirror or ("http", "", "")
    values = ctx.values() | {
        "mirror_scheme": scheme,
        "mirror_host": host,
        "mirror_dir": directory,
        "packages": ", ".join(ctx.packages),
        "late_command": _preseed_key_command(ctx.creds.ssh_keys, ctx.key_owner),
    }
    flags = ctx.flags() | {"mirror": mirror is not None}
    return {"preseed.cfg": fill("preseed.cfg", values, flags)}


def _render_autoyast(ctx: _Context) -> dict[str, str]:
    keymaps: dict[str, str] = load_families()["autoyast_keymaps"]
    values = {k: escape(v) for k, v in ctx.values().items()} | {
        "language": ctx.opts.locale.split(".")[0].split("@")[0],
        "keymap": keymaps.get(ctx.opts.keyboard, ctx.opts.keyboard),
        "patterns": "\n".join(f"      <pattern>{escape(p)}</pattern>" for p in ctx.packages),
        "key_lines": "\n".join(
            f"        <listentry>{escape(k)}</listentry>" for k in ctx.creds.ssh_keys
        ),
    }
    flags = ctx.flags()
    keys, to_root = flags["ssh_keys"], ctx.key_owner == "root"
    flags |= {
        "root_keys": keys and to_root,
        "user_keys": keys and not to_root,
        "root_entry": flags["root_password"] or (keys and to_root),
    }
    return {"autoinst.xml": fill("autoyast.xml", values, flags)}


def _render_autoinstall(ctx: _Context) -> dict[str, str]:
    if ctx.opts.admin_user is None:
        raise UnattendedError(
            "Ubuntu autoinstall needs a user to create (autoinstall identity)",
            hint="add admin-user=NAME to --unattended",
        )
    values = {k: json.dumps(v) for k, v in ctx.values().items()} | {
        "profile": ctx.opts.profile,
        "os_name": ctx.values()["os_name"],
        "user_hash": json.dumps(ctx.creds.user_hash or "!"),
        "allow_pw": json.dumps(ctx.creds.user_hash is not None),
        "ssh_keys": json.dumps(ctx.creds.ssh_keys),
        "packages": json.dumps(ctx.packages),
    }
    flags = ctx.flags() | {"packages": bool(ctx.packages)}
    user_data = fill("user-data.yaml", values, flags)
    return {"user-data": user_data, "meta-data": _meta_data(user_data, ctx.hostname)}


def _meta_data(user_data: str, hostname: str) -> str:
    instance = "treeboot-" + hashlib.sha256(user_data.encode()).hexdigest()[:16]
    values = {"instance_id": json.dumps(instance), "hostname": json.dumps(hostname)}
    return fill("meta-data.yaml", values, {})


_RENDERERS = {
    "kickstart": _render_kickstart,
    "preseed": _render_preseed,
    "autoyast": _render_autoyast,
    "autoinstall": _render_autoinstall,
}


def _inject_files(texts: dict[str, str]) -> list[InjectFile]:
    return [
        InjectFile(data=text.encode(), name=name, mode=0o644 if name == "meta-data" else 0o600)
        for name, text in texts.items()
    ]


def render_unattended(ident: Identification, opts: UnattendedOptions) -> UnattendedPayload:
    """Generate the installer's unattended file for ``ident`` and validate it."""
    family = find_family(ident)
    hostname = opts.hostname or _default_hostname(ident)
    check_hostname(hostname)
    creds = read_credentials(opts)
    ctx = _Context(ident, opts, creds, hostname, _packages(family.kind, ident, opts.profile))
    texts = _RENDERERS[family.kind](ctx)
    main = next(iter(texts.values()))
    warnings = validate(family.kind, main, kickstart_version=_kickstart_version(ident))
    if warnings:  # our templates must be clean for every supported release
        raise UnattendedError(
            f"the generated {family.kind} file has warnings: "
            + redact("; ".join(warnings), creds.secrets),
            hint="this is a treeboot bug; please report it, or use --unattended-file",
        )
    return UnattendedPayload(
        kind=family.kind,
        files=_inject_files(texts),
        kernel_args=family.kernel_args,
        secret_values=list(creds.secrets),
        delivery=family.delivery,
    )


# --- user-written files ----------------------------------------------------------------------


def _wrap_bare_autoinstall(text: str) -> str:
    """An ``autoinstall.yaml`` (top-level ``version: 1``) becomes cloud-config user-data."""
    if text.startswith("#cloud-config"):
        return text
    data = yaml.safe_load(text)  # detect_kind() parsed it already
    if isinstance(data, dict) and "autoinstall" not in data:
        return "#cloud-config\n" + yaml.safe_dump({"autoinstall": data}, sort_keys=False)
    return "#cloud-config\n" + text


def _check_kind(ident: Identification, family: _Family, path: Path, kind: str | None) -> None:
    expected = f"{ident.name or ident.os or 'this tree'} uses {family.installer}, which reads "
    expected += f"{_KIND_NAMES[family.kind]} file"
    if kind is None:
        raise UnattendedError(
            f"cannot tell what kind of unattended file {path} is; {expected}",
            hint=f"a {family.kind} file has {_KIND_LOOKS[family.kind]}",
        )
    if kind != family.kind:
        raise UnattendedError(
            f"{path} is {_KIND_NAMES[kind]} file, but {expected}",
            hint=f"give {_KIND_NAMES[family.kind]} file, or let treeboot generate one with "
            "--unattended",
        )


def load_unattended_file(ident: Identification, path: Path) -> UnattendedPayload:
    """Use a file the user wrote: check that it is the installer's kind, validate it."""
    family = find_family(ident)
    text = _read_small(path, "unattended file", _MAX_USER_FILE)
    kind = detect_kind(text)
    _check_kind(ident, family, path, kind)
    secrets = extract_secrets(family.kind, text)
    texts = {load_families()["kind"][family.kind]["file"]: text}
    try:
        if family.kind == "autoinstall":
            text = _wrap_bare_autoinstall(text)
            hostname = _autoinstall_hostname(text) or _default_hostname(ident)
            texts = {"user-data": text, "meta-data": _meta_data(text, hostname)}
        warnings = validate(family.kind, text, kickstart_version=_kickstart_version(ident))
    except UnattendedError as e:
        e.message = redact(f"{path}: {e.message}", secrets)
        e.args = (e.message,)
        raise
    for warning in warnings:
        log.warning("%s: %s", path, redact(warning, secrets))
    return UnattendedPayload(
        kind=family.kind,
        files=_inject_files(texts),
        kernel_args=family.kernel_args,
        secret_values=secrets,
        delivery=family.delivery,
        warnings=warnings,
    )


def _autoinstall_hostname(text: str) -> str | None:
    try:
        data = yaml.safe_load(text)
        hostname = data["autoinstall"]["identity"]["hostname"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    return hostname if isinstance(hostname, str) and hostname else None
