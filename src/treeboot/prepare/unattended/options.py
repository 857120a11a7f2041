"""The small set of choices an unattended install is generated from, and its CLI syntax.

The ``--unattended`` value is virt-install's: ``key=value`` pairs separated by commas, with
virt-install's key names where they exist (``profile``, ``user-login``, ``user-password-file``,
``admin-password-file``). Every value that ends up inside a generated file is checked here
against a strict pattern, so no value can inject lines or markup into a template.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from treeboot.errors import UnattendedError

PROFILES = ("minimal", "desktop")
_PROFILE_ALIASES = {"jeos": "minimal"}  # osinfo-db's name for the minimal profile

# CLI key -> dataclass field. Aliases follow virt-install (user-login) and common spelling.
_KEYS = {
    "profile": "profile",
    "admin-user": "admin_user",
    "user-login": "admin_user",
    "user-password-file": "user_password_file",
    "admin-password-file": "admin_password_file",
    "ssh-key": "ssh_key_file",
    "ssh-key-file": "ssh_key_file",
    "timezone": "timezone",
    "locale": "locale",
    "hostname": "hostname",
    "keyboard": "keyboard",
}
_UNSUPPORTED_KEYS = {
    "product-key": "product keys are for Windows installs, which treeboot does not generate",
    "reg-login": "SUSE registration is not generated; write an AutoYaST file and use "
    "--unattended-file",
}
_PATH_FIELDS = {"user_password_file", "admin_password_file", "ssh_key_file"}

_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_LOCALE_RE = re.compile(r"[a-z]{2,3}_[A-Z]{2}(\.[A-Za-z0-9-]+)?(@[a-z]+)?")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_KEYBOARD_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_TZ_RE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+){0,2}")


def _bad(what: str, value: str, expected: str) -> UnattendedError:
    return UnattendedError(f"invalid unattended {what} {value!r}", hint=f"expected {expected}")


def check_hostname(value: str) -> None:
    labels = value.split(".")
    if len(value) > 253 or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
        raise _bad("hostname", value, "letters, digits and '-', dot-separated (RFC 1123)")


def _check_timezone(value: str) -> None:
    known = zoneinfo.available_timezones()
    if not _TZ_RE.fullmatch(value) or (known and value not in known):
        raise _bad("timezone", value, "an IANA time zone name such as UTC or Europe/Berlin")


def _check_user(value: str) -> None:
    if not _USER_RE.fullmatch(value) or value == "root":
        raise _bad(
            "admin-user",
            value,
            "a lower-case login name other than root (root gets admin-password-file=)",
        )


@dataclass(frozen=True)
class UnattendedOptions:
    """What to generate. Password and key *files* are named here; their contents are read only
    when the installer file is rendered, and never stored on this object."""

    profile: str = "minimal"
    admin_user: str | None = None  # the regular (sudo/wheel) user created by the installer
    user_password_file: Path | None = None  # that user's password, first line of the file
    admin_password_file: Path | None = None  # root's password
    ssh_key_file: Path | None = None  # public key(s), authorized_keys format
    timezone: str = "UTC"
    locale: str = "en_US.UTF-8"
    hostname: str | None = None
    keyboard: str = "us"

    def __post_init__(self) -> None:
        profile = _PROFILE_ALIASES.get(self.profile, self.profile)
        if profile not in PROFILES:
            raise _bad("profile", self.profile, "one of " + ", ".join(PROFILES))
        object.__setattr__(self, "profile", profile)
        if self.admin_user is not None:
            _check_user(self.admin_user)
        if self.hostname is not None:
            check_hostname(self.hostname)
        _check_timezone(self.timezone)
        if not _LOCALE_RE.fullmatch(self.locale):
            raise _bad("locale", self.locale, "a locale such as en_US.UTF-8 or de_DE")
        if not _KEYBOARD_RE.fullmatch(self.keyboard):
            raise _bad("keyboard", self.keyboard, "a keyboard layout name such as us or de")
        if self.user_password_file is not None and self.admin_user is None:
            raise UnattendedError(
                "user-password-file= was given but no user to set it for",
                hint="add admin-user=NAME (or virt-install's user-login=NAME)",
            )

    @classmethod
    def parse(cls, spec: str) -> UnattendedOptions:
        """Parse ``profile=desktop,admin-user=alice,user-password-file=/p,...``."""
        values: dict[str, Any] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().lower().replace("_", "-")
            if key in _UNSUPPORTED_KEYS:
                raise UnattendedError(
                    f"--unattended {key}= is not supported", hint=_UNSUPPORTED_KEYS[key]
                )
            if key not in _KEYS:
                raise UnattendedError(
                    f"unknown --unattended key {key!r}",
                    hint="known keys: " + ", ".join(sorted(_KEYS)),
                )
            if not sep or not value:
                raise UnattendedError(f"--unattended {key}= needs a value")
            name = _KEYS[key]
            if name in values:
                raise UnattendedError(f"--unattended {key}= is given more than once")
            values[name] = Path(value).expanduser() if name in _PATH_FIELDS else value
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The options for ``--json``/``--dry-run``: file *names* only, never their contents."""
        return {
            f.name: (str(v) if isinstance(v, Path) else v)
            for f in fields(self)
            if (v := getattr(self, f.name)) is not None
        }
