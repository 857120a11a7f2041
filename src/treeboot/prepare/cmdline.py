"""The installer's kernel command line: per-installer arguments as data, quoting, limits.

The command line stays a ``list[str]`` until the edge (:func:`join_cmdline`, like virtme's
``quote_karg``). What each installer family needs (``inst.repo=``, ``install=``,
``archiso_http_srv=``, ...) lives in ``rules/installers.toml`` with its references.

Order of the result::

    medium's own args (minus dropped keys) | installer args | serial extras | console=
    | unattended args | --extra-args | the medium's "---"/"--" tail

A later argument replaces an earlier one with the same key (``inst.repo=...`` from
``--extra-args`` wins), except for repeatable keys such as ``console``.
"""

from __future__ import annotations

import functools
import logging
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from treeboot.detect.rules import load_rule_table
from treeboot.errors import BootError, MetadataError, UsageError
from treeboot.model import Identification, Media

log = logging.getLogger("treeboot.prepare.cmdline")

MODES = ("repo", "stage2", "cdrom", "local")
PLACEHOLDERS = frozenset(
    {"repo", "repo_host", "repo_path", "mirror_host", "mirror_dir", "iso_url", "volid", "flavor"}
)
# init/main.c: envp_init[] holds MAX_INIT_ENVS (32) + 2 slots and starts with HOME=/ and
# TERM=linux; argv_init[] holds MAX_INIT_ARGS (32) + 2 and starts with "init". One more than
# these panics the kernel ("Too many boot env vars" / "Too many boot init vars").
KERNEL_MAX_INIT_ENVS = 31
KERNEL_MAX_INIT_ARGS = 32
SEPARATORS = ("---", "--")  # d-i/casper: the rest is for the installed system; kernel: init


# -- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeRule:
    """How to point an installer at its source in one mode (see installers.toml)."""

    args: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstallerRule:
    name: str
    aliases: tuple[str, ...] = ()
    base: tuple[str, ...] = ()
    serial: tuple[str, ...] = ()
    max_options: int = 0
    space_warning: bool = False
    modes: Mapping[str, ModeRule] = field(default_factory=dict)


@dataclass(frozen=True)
class CmdlineRules:
    drop: frozenset[str]
    repeatable: frozenset[str]
    kernel_params: frozenset[str]
    cmdline_size: int
    installers: Mapping[str, InstallerRule]

    def installer(self, name: str | None) -> InstallerRule | None:
        """The rule for an installer name or alias (None: unknown installer)."""
        if not name:
            return None
        rule = self.installers.get(name)
        if rule is not None:
            return rule
        return next((r for r in self.installers.values() if name in r.aliases), None)


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MetadataError(f"installers.toml: {where} must be a list of strings")
    return tuple(value)


def _check_keys(where: str, table: Any, allowed: Iterable[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise MetadataError(f"installers.toml: {where} must be a table")
    unknown = set(table) - set(allowed)
    if unknown:
        raise MetadataError(f"installers.toml: {where} has unknown keys {sorted(unknown)}")
    return table


def _check_templates(where: str, templates: Iterable[str]) -> None:
    for t in templates:
        names = set(_fields(t))
        if not names <= PLACEHOLDERS:
            raise MetadataError(
                f"installers.toml: {where}: unknown placeholder(s) {sorted(names - PLACEHOLDERS)}"
                f" in {t!r}"
            )


def _parse_mode(where: str, table: Any) -> ModeRule:
    t = _check_keys(where, table, ("args", "requires", "drop"))
    mode = ModeRule(
        args=_strings(f"{where}.args", t.get("args", [])),
        requires=_strings(f"{where}.requires", t.get("requires", [])),
        drop=_strings(f"{where}.drop", t.get("drop", [])),
    )
    _check_templates(where, mode.args)
    if not set(mode.requires) <= PLACEHOLDERS:
        raise MetadataError(f"installers.toml: {where}.requires names unknown placeholders")
    return mode


def _parse_installer(name: str, table: Any) -> InstallerRule:
    where = f"installers.{name}"
    plain = ("aliases", "base", "serial", "max_options", "space_warning")
    t = _check_keys(where, table, (*plain, *MODES))
    max_options = t.get("max_options", 0)
    if not isinstance(max_options, int) or max_options < 0:
        raise MetadataError(f"installers.toml: {where}.max_options must be an integer >= 0")
    rule = InstallerRule(
        name=name,
        aliases=_strings(f"{where}.aliases", t.get("aliases", [])),
        base=_strings(f"{where}.base", t.get("base", [])),
        serial=_strings(f"{where}.serial", t.get("serial", [])),
        max_options=max_options,
        space_warning=bool(t.get("space_warning", False)),
        modes={m: _parse_mode(f"{where}.{m}", t[m]) for m in MODES if m in t},
    )
    _check_templates(where, (*rule.base, *rule.serial))
    return rule


def parse_rules(data: Mapping[str, Any]) -> CmdlineRules:
    """Check and convert the TOML data; MetadataError names the offending entry."""
    top = _check_keys("top level", dict(data), ("defaults", "installers"))
    d = _check_keys("defaults", top.get("defaults", {}),
                    ("drop", "repeatable", "kernel_params", "cmdline_size"))  # fmt: skip
    size = d.get("cmdline_size", 2047)
    if not isinstance(size, int) or size <= 0:
        raise MetadataError("installers.toml: defaults.cmdline_size must be a positive integer")
    installers = top.get("installers", {})
    if not isinstance(installers, dict):
        raise MetadataError("installers.toml: installers must be a table")
    return CmdlineRules(
        drop=frozenset(_strings("defaults.drop", d.get("drop", []))),
        repeatable=frozenset(_strings("defaults.repeatable", d.get("repeatable", []))),
        kernel_params=frozenset(
            _norm(k) for k in _strings("defaults.kernel_params", d.get("kernel_params", []))
        ),
        cmdline_size=size,
        installers={n: _parse_installer(n, t) for n, t in installers.items()},
    )


@functools.cache
def load_rules() -> CmdlineRules:
    """The packaged ``rules/installers.toml`` (parsed once)."""
    return parse_rules(load_rule_table("installers.toml"))


# -- small helpers --------------------------------------------------------------------------


def arg_key(arg: str) -> str:
    """``"inst.repo=http://x/"`` -> ``"inst.repo"``; a bare word is its own key."""
    return arg.partition("=")[0]


def _norm(key: str) -> str:
    return key.replace("-", "_")  # the kernel treats - and _ in parameter names alike


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def guest_iso_name(location: str) -> str:
    """The file name an ISO image is served under for the guest (casper wants ``*.iso``)."""
    name = unquote(urlsplit(location).path).rstrip("/").rsplit("/", 1)[-1] or "image.iso"
    name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
    return name if name.lower().endswith(".iso") else name + ".iso"


def volume_id(ident: Identification) -> str | None:
    iso = ident.extra.get("iso")
    vid = iso.get("volume_id") if isinstance(iso, dict) else ident.extra.get("volume_id")
    return vid if isinstance(vid, str) and vid else None


def _flavor(kernel: str | None) -> str | None:
    name = (kernel or "").rsplit("/", 1)[-1]
    base, sep, flavor = name.partition("-")
    return flavor if sep and base in ("vmlinuz", "vmlinux") and flavor else None


def placeholder_values(ident: Identification, repo_url: str | None) -> dict[str, str | None]:
    """The values of the installers.toml placeholders (None: unknown)."""
    vid = volume_id(ident)
    values: dict[str, str | None] = dict.fromkeys(PLACEHOLDERS)
    if vid:
        # Only media with a volume id need the ISO stack (pycdlib and the volume-id rules):
        # a tree install does not pay for importing it, on the path to QEMU's start.
        from treeboot.detect.iso import udev_label

        values["volid"] = udev_label(vid)
    values["flavor"] = _flavor(ident.kernel)
    if not repo_url:
        return values
    parts = urlsplit(repo_url)
    path = parts.path or "/"
    is_iso = path.lower().endswith(".iso")
    repo = repo_url if is_iso or repo_url.endswith("/") else repo_url + "/"
    values.update(repo=repo, repo_host=parts.netloc, repo_path=path.rstrip("/") or "/")
    if is_iso:
        values["iso_url"] = repo_url
    elif ident.media is Media.ISO:
        values["iso_url"] = repo + guest_iso_name(ident.location)
    if "/dists/" in path:
        values["mirror_dir"] = path.split("/dists/", 1)[0] or "/"
    elif ident.media is Media.ISO and not is_iso:  # a served ISO carries dists/ at its root
        values["mirror_dir"] = path.rstrip("/") or "/"
    if values["mirror_dir"]:
        values["mirror_host"] = parts.netloc
    return values


def _fill(templates: Iterable[str], values: Mapping[str, str | None]) -> list[str]:
    out = []
    for t in templates:
        missing = [f for f in _fields(t) if values.get(f) is None]
        if missing:
            log.debug("left out %r: %s unknown", t, ", ".join(missing))
            continue
        out.append(t.format(**values))
    return out


def _checked(args: Iterable[str], what: str) -> list[str]:
    out = []
    for a in args:
        if not a:
            continue
        if '"' in a or any(c in a for c in "\n\r\t\0"):
            raise UsageError(
                f"{what} argument {a!r} cannot be passed on a kernel command line",
                hint="kernel arguments cannot contain double quotes, tabs or newlines",
            )
        out.append(a)
    return out


def _split_tail(args: list[str]) -> tuple[list[str], list[str]]:
    """Split at the first "---"/"--": the tail goes last, untouched."""
    for i, a in enumerate(args):
        if a in SEPARATORS:
            return args[:i], args[i:]
    return args, []


def _merge(groups: Iterable[Iterable[str]], repeatable: frozenset[str]) -> list[str]:
    """Concatenate; a later argument replaces an earlier one with the same key."""
    out: list[str] = []
    for group in groups:
        for a in group:
            if a in out:
                continue
            key = arg_key(a)
            if key not in repeatable:
                out = [b for b in out if arg_key(b) != key]
            out.append(a)
    return out


# -- building -------------------------------------------------------------------------------


def select_mode(
    ident: Identification, repo_url: str | None, *, medium_attached: bool | None = None
) -> str:
    """Which installers.toml mode applies: repo, stage2, cdrom or local.

    ``medium_attached`` None means: an ISO that needs its medium and is a local file is
    attached as a CD-ROM (what the install pipeline does).
    """
    if medium_attached is None:
        scheme = urlsplit(ident.location).scheme
        medium_attached = (
            ident.media is Media.ISO and "cdrom" in ident.needs and scheme in ("", "file")
        )
    if medium_attached:
        return "cdrom"
    if repo_url:
        return "stage2" if "stage2" in ident.needs else "repo"
    if "repo-url" in ident.needs:
        raise BootError(
            f"the {ident.installer or 'installer'} of {ident.location} needs the tree's URL on"
            " its command line, but no URL the guest can reach was given",
            hint="serve the tree to the guest (treeboot.boot.serve.GuestServer) and pass its URL",
        )
    return "cdrom" if ident.media is Media.ISO else "local"


def _console_arg(console: str, arch: str) -> str:
    if console == "auto":
        from treeboot.arch import Architecture

        console = Architecture.from_name(arch).default_console()
    return console if console.startswith("console=") else f"console={console}"


def _installer_args(
    rule: InstallerRule, mode: str, values: Mapping[str, str | None], medium_keys: set[str]
) -> tuple[list[str], tuple[str, ...]]:
    """(args for this installer and mode, medium keys this mode drops)."""
    ours = [a for a in _fill(rule.base, values) if arg_key(a) not in medium_keys]
    m = rule.modes.get(mode)
    if m is None:
        return ours, ()
    unknown = [r for r in m.requires if values.get(r) is None]
    if unknown:
        log.info("%s: %s mode adds nothing: %s unknown", rule.name, mode, ", ".join(unknown))
        return ours, ()
    mode_args = _fill(m.args, values)
    if mode in ("cdrom", "local"):  # the medium's own args were written for it: fill gaps only
        mode_args = [a for a in mode_args if arg_key(a) not in medium_keys]
    return ours + mode_args, m.drop


def build_cmdline(
    ident: Identification,
    *,
    arch: str,
    repo_url: str | None,
    console: str | None,
    extra_args: Sequence[str] = (),
    unattended_args: Sequence[str] = (),
    medium_attached: bool | None = None,
) -> list[str]:
    """The installer's kernel arguments as a list (join with :func:`join_cmdline`).

    ``repo_url`` is the URL *the guest* uses (see treeboot.boot.serve.rewrite_for_guest);
    ``console`` a device ("ttyS0"), "auto" (the serial console of ``arch``) or None.
    """
    rules = load_rules()
    rule = rules.installer(ident.installer)
    extra = _checked(extra_args, "--extra-args")
    unattended = _checked(unattended_args, "unattended")
    medium, tail = _split_tail(_checked(ident.boot_args, "the medium's boot"))
    mode = select_mode(ident, repo_url, medium_attached=medium_attached)
    values = placeholder_values(ident, repo_url)
    ours: list[str] = []
    mode_drop: tuple[str, ...] = ()
    if rule is not None:
        ours, mode_drop = _installer_args(rule, mode, values, {arg_key(a) for a in medium})
        if console:
            ours += _fill(rule.serial, values)
    elif repo_url and mode == "repo" and not extra:
        raise BootError(
            f"treeboot does not know how to tell the {ident.installer or 'unknown'} installer"
            f" to install from {repo_url}",
            hint="pass the installer's own argument with --extra-args",
        )
    if console and not any(arg_key(a) == "console" for a in extra):
        ours.append(_console_arg(console, arch))
    drop = rules.drop | set(mode_drop)
    kept = [a for a in medium if arg_key(a) not in drop]
    return _merge([kept, ours, unattended, extra], rules.repeatable) + tail


# -- quoting --------------------------------------------------------------------------------


def quote_karg(arg: str) -> str:
    """One argument as the kernel parses it: a value with spaces goes in double quotes.

    ``key="a b"`` is the documented form (Documentation/admin-guide/kernel-parameters.rst).
    """
    if '"' in arg or any(c in arg for c in "\n\r\t\0"):
        raise UsageError(
            f"kernel argument {arg!r} cannot be quoted",
            hint="kernel arguments cannot contain double quotes, tabs or newlines",
        )
    if " " not in arg:
        return arg
    key, sep, value = arg.partition("=")
    if sep and " " not in key:
        return f'{key}="{value}"'
    return f'"{arg}"'


def join_cmdline(args: Iterable[str]) -> str:
    """The command line string for ``-append``."""
    return " ".join(quote_karg(a) for a in args if a)


# -- limits ---------------------------------------------------------------------------------


def init_counts(args: Sequence[str], kernel_params: Iterable[str] = ()) -> tuple[int, int]:
    """(environment variables, arguments) the kernel hands to init for these arguments.

    Mirrors init/main.c ``unknown_bootoption``: keys with a "." (module parameters) and the
    kernel's own parameters are consumed; ``key=value`` becomes one environment variable per
    key, a bare word an argument; everything after "--" is an argument.
    """
    known = {_norm(k) for k in kernel_params}
    envs: set[str] = set()
    argv = 0
    after_dashes = False
    for a in args:
        if after_dashes:
            argv += 1
            continue
        if a == "--":
            after_dashes = True
            continue
        key, sep, _ = a.partition("=")
        if "." in key or _norm(key) in known:
            continue
        if sep:
            envs.add(key)
        else:
            argv += 1
    return len(envs), argv


def cmdline_warnings(args: Sequence[str], *, installer: str | None) -> list[str]:
    """Problems that do not stop the boot but may surprise (for notices)."""
    rule = load_rules().installer(installer)
    if rule is None or not rule.space_warning:
        return []
    spaced = [a for a in args if " " in a]
    if not spaced:
        return []
    return [
        f"the {rule.name} reads its answers from /proc/cmdline itself and may split values"
        f" with spaces: {', '.join(repr(a) for a in spaced)}; put such answers in the"
        " preseed file instead"
    ]


def _check_size(args: Sequence[str], cmdline_size: int | None, default: int) -> None:
    limit = cmdline_size if cmdline_size is not None else default
    text = join_cmdline(args)
    n = len(text.encode())
    if n > limit:
        where = "the kernel header's cmdline_size" if cmdline_size is not None else "the default"
        raise BootError(
            f"the kernel command line is {n} bytes, but the kernel takes at most {limit}"
            f" ({where}, without the final NUL) and would silently cut it after"
            f" {text.encode()[:limit][-40:].decode(errors='replace')!r}",
            hint="drop --extra-args, or move answers into the unattended file (injected into"
            " the initrd, it needs no command line)",
        )


def _check_kernel_init(args: Sequence[str], kernel_params: frozenset[str]) -> None:
    envs, argv = init_counts(args, kernel_params)
    for what, n, limit in (("environment variables", envs, KERNEL_MAX_INIT_ENVS),
                           ("arguments", argv, KERNEL_MAX_INIT_ARGS)):  # fmt: skip
        if n > limit:
            raise BootError(
                f"the command line would hand {n} {what} to init; Linux panics past {limit}"
                " (init/main.c MAX_INIT_ENVS/MAX_INIT_ARGS)",
                hint="drop arguments, or move answers into the unattended file",
            )


def _check_installer_limit(args: Sequence[str], rule: InstallerRule) -> None:
    envs = sum(1 for a in args if "=" in a)
    words = len(args) - envs
    for what, n in (("environment options (key=value)", envs), ("command line options", words)):
        if n > rule.max_options:
            raise BootError(
                f"{n} {what} on the command line: the {rule.name} documents a maximum of"
                f" {rule.max_options}, counting its default options, and the kernel panics"
                " past it",
                hint="drop arguments such as vga=, or preseed the answers in a file injected"
                " into the initrd instead of on the command line",
            )


def check_cmdline(args: Sequence[str], *, installer: str | None, cmdline_size: int | None) -> None:
    """Raise BootError when the kernel or installer would cut, reject or panic on ``args``.

    ``cmdline_size`` is the x86 bzImage header's limit without the NUL (None: the default
    from installers.toml, x86's 2047). Warnings are logged (see :func:`cmdline_warnings`).
    """
    rules = load_rules()
    _checked(args, "kernel")
    _check_size(args, cmdline_size, rules.cmdline_size)
    _check_kernel_init(args, rules.kernel_params)
    rule = rules.installer(installer)
    if rule is not None and rule.max_options:
        _check_installer_limit(args, rule)
    for w in cmdline_warnings(args, installer=installer):
        log.warning("%s", w)
