"""Check unattended files with each family's own tooling, tell their kinds apart, find secrets.

* kickstart: pykickstart's ``KickstartParser`` with the handler of the target release.
* preseed: the line syntax of ``debconf-set-selections`` (``owner question type value``,
  backslash continuation, debconf's known types), stricter about booleans.
* AutoYaST: well-formed XML, root ``profile`` in ``http://www.suse.com/1.0/yast2ns``,
  ``config:type`` attributes in ``http://www.suse.com/1.0/configns`` with known types.
* autoinstall: ``#cloud-config`` YAML (PyYAML ``safe_load``) with an ``autoinstall`` mapping
  holding ``version: 1`` and ``identity`` (or ``user-data``), as subiquity requires.

Every validator returns a list of warnings and raises :class:`UnattendedError` on an error.
Error messages name lines and keys, never values, so they cannot leak a password.
"""

from __future__ import annotations

import re
import shlex
import tomllib
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import yaml

from treeboot.errors import UnattendedError
from treeboot.prepare.unattended._template import load_template

KINDS = ("kickstart", "preseed", "autoyast", "autoinstall")
YAST_NS = "http://www.suse.com/1.0/yast2ns"
CONFIG_NS = "http://www.suse.com/1.0/configns"

_SYNTAX = tomllib.loads(load_template("syntax.toml"))
PRESEED_TYPES: tuple[str, ...] = tuple(_SYNTAX["preseed_types"])
PRESEED_FLAGS: tuple[str, ...] = tuple(_SYNTAX["preseed_flags"])
_CONFIG_TYPES = ("boolean", "integer", "list", "symbol")
_KS_WORDS = frozenset(_SYNTAX["kickstart_words"])
_AUTOINSTALL_KEYS = frozenset(_SYNTAX["autoinstall_keys"])
_SECRET_KEYS = frozenset(_SYNTAX["autoinstall_secret_keys"])
_SECRET_TAGS = frozenset(_SYNTAX["autoyast_secret_tags"])


def _fail(kind: str, problems: list[str], hint: str) -> UnattendedError:
    shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
    return UnattendedError(f"invalid {kind} file:\n  " + "\n  ".join(shown), hint=hint)


# --- kickstart -------------------------------------------------------------------------------


def _without_includes(text: str) -> str:
    # %include/%ksappend name files in the *guest*; pykickstart would open them on this host.
    return "".join(
        "#" + line if line.lstrip().startswith(("%include", "%ksappend")) else line
        for line in text.splitlines(keepends=True)
    )


def validate_kickstart(text: str, version: str | None = None) -> list[str]:
    """Parse with pykickstart; ``version`` is a handler name ("F40", "RHEL9"), default DEVEL."""
    from pykickstart.errors import KickstartError
    from pykickstart.parser import KickstartParser
    from pykickstart.version import makeVersion

    handler = makeVersion(version) if version else makeVersion()
    parser = KickstartParser(handler, missingIncludeIsFatal=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser.readKickstartFromString(_without_includes(text))
        except KickstartError as e:
            raise _fail(
                f"kickstart ({version or 'DEVEL'} syntax)",
                [_kickstart_problem(e)],
                "see https://pykickstart.readthedocs.io/en/latest/kickstart-docs.html; "
                "check it with ksvalidator from pykickstart",
            ) from e
    return [str(w.message) for w in caught]


def _kickstart_problem(e: Exception) -> str:
    lineno = getattr(e, "lineno", None)
    message = str(getattr(e, "message", None) or e).strip().splitlines()[-1]
    return f"line {lineno}: {message}" if lineno else message


# --- preseed ---------------------------------------------------------------------------------


def preseed_lines(text: str) -> Iterator[tuple[int, str]]:
    """Logical lines (backslash continuation joined), without blanks and comments."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        full, pending = pending + line, ""
        if full.strip() and not full.lstrip().startswith("#"):
            yield start, full
    if pending.strip():
        yield start, pending


def parse_preseed_line(line: str) -> tuple[str, str, str, str] | None:
    m = re.match(r"\s*(\S+)\s+(\S+)\s+(\S+)(?:\s(.*))?$", line)
    if m is None:
        return None
    owner, question, qtype, value = m.groups()
    return owner, question, qtype, (value or "").strip()


def validate_preseed(text: str) -> list[str]:
    """The ``debconf-set-selections --checkonly`` syntax, plus type-specific value checks."""
    problems: list[str] = []
    for number, line in preseed_lines(text):
        parsed = parse_preseed_line(line)
        if parsed is None:
            problems.append(f"line {number}: expected 'owner question type value'")
            continue
        _owner, question, qtype, value = parsed
        if qtype not in PRESEED_TYPES + PRESEED_FLAGS:
            problems.append(f"line {number}: {question}: unknown type {qtype!r}")
        elif "/" not in question:
            problems.append(f"line {number}: {question!r} is not a debconf question name")
        elif qtype == "boolean" and value not in ("true", "false"):
            problems.append(f"line {number}: {question}: a boolean must be true or false")
    if problems:
        raise _fail(
            "preseed",
            problems,
            "each line is 'owner question type value' with type one of "
            + ", ".join(PRESEED_TYPES)
            + " (installation guide, appendix B)",
        )
    return []


# --- AutoYaST --------------------------------------------------------------------------------


def validate_autoyast(text: str) -> list[str]:
    """Well-formed profile in the yast2ns namespace with valid ``config:type`` attributes."""
    hint = (
        f'the root element must be <profile xmlns="{YAST_NS}" xmlns:config="{CONFIG_NS}">; '
        "check it with xmllint or 'yast2 autoyast check-profile'"
    )
    if "<!ENTITY" in text:
        raise _fail("AutoYaST", ["entity declarations are not accepted"], hint)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        line, col = e.position
        reason = str(e).split(":")[0]
        raise _fail("AutoYaST", [f"line {line}, column {col}: {reason}"], hint) from e
    if root.tag != f"{{{YAST_NS}}}profile":
        raise _fail("AutoYaST", [f"root element is {root.tag!r}, not profile in {YAST_NS}"], hint)
    problems: list[str] = []
    for elem in root.iter():
        for attr, value in elem.attrib.items():
            name = elem.tag.rpartition("}")[2]
            if attr.endswith("}type") and attr != f"{{{CONFIG_NS}}}type":
                problems.append(f"<{name}>: type attribute in namespace {attr[1:].split('}')[0]}")
            elif attr == f"{{{CONFIG_NS}}}type":
                problems.extend(_config_type_problems(name, value, (elem.text or "").strip()))
    if problems:
        raise _fail("AutoYaST", problems, hint)
    return []


def _config_type_problems(name: str, ctype: str, text: str) -> list[str]:
    if ctype not in _CONFIG_TYPES:
        return [f"<{name}>: unknown config:type {ctype!r}"]
    if ctype == "boolean" and text not in ("true", "false"):
        return [f"<{name}>: config:type boolean must be true or false"]
    if ctype == "integer" and not re.fullmatch(r"-?\d+", text):
        return [f"<{name}>: config:type integer must be a number"]
    return []


# --- autoinstall -----------------------------------------------------------------------------


def load_cloud_config(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise _fail("autoinstall", [where + str(problem)], "fix the YAML syntax") from e
    if not isinstance(data, dict):
        raise _fail("autoinstall", ["the document is not a YAML mapping"], "see subiquity docs")
    return data


def validate_autoinstall(text: str) -> list[str]:
    """Cloud-init user-data carrying subiquity's ``autoinstall:`` section."""
    hint = (
        "user-data starts with '#cloud-config' and has 'autoinstall:' with 'version: 1' and "
        "'identity:' (autoinstall reference in subiquity's documentation)"
    )
    if not text.startswith("#cloud-config"):
        raise _fail("autoinstall", ["the first line is not '#cloud-config'"], hint)
    data = load_cloud_config(text)
    config = data.get("autoinstall")
    if not isinstance(config, dict):
        raise _fail("autoinstall", ["no 'autoinstall:' mapping at the top level"], hint)
    return check_autoinstall_config(config, hint)


def check_autoinstall_config(config: dict[str, Any], hint: str) -> list[str]:
    problems: list[str] = []
    if config.get("version") != 1:
        problems.append("autoinstall.version must be 1")
    interactive = config.get("interactive-sections") or []
    if "identity" not in config and "user-data" not in config and "identity" not in interactive:
        problems.append("autoinstall needs 'identity' (or 'user-data')")
    identity = config.get("identity")
    if identity is not None:
        if not isinstance(identity, dict):
            problems.append("autoinstall.identity must be a mapping")
        else:
            for key in ("username", "hostname", "password"):
                if not isinstance(identity.get(key), str) or not identity[key]:
                    problems.append(f"autoinstall.identity.{key} must be a non-empty string")
    if config.get("shutdown") not in (None, "reboot", "poweroff"):
        problems.append("autoinstall.shutdown must be reboot or poweroff")
    for key in ("packages", "late-commands", "early-commands", "snaps"):
        if key in config and not isinstance(config[key], list):
            problems.append(f"autoinstall.{key} must be a list")
    if problems:
        raise _fail("autoinstall", problems, hint)
    unknown = sorted(k for k in config if k not in _AUTOINSTALL_KEYS)
    return [f"unknown autoinstall key {k!r} (subiquity may reject it)" for k in unknown]


def validate(kind: str, text: str, *, kickstart_version: str | None = None) -> list[str]:
    """Validate ``text`` as ``kind`` (one of :data:`KINDS`); return warnings."""
    if kind == "kickstart":
        return validate_kickstart(text, kickstart_version)
    if kind == "preseed":
        return validate_preseed(text)
    if kind == "autoyast":
        return validate_autoyast(text)
    if kind == "autoinstall":
        return validate_autoinstall(text)
    raise ValueError(f"unknown unattended kind {kind!r}")


# --- kind detection --------------------------------------------------------------------------


def _is_autoinstall_yaml(text: str) -> bool:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and ("autoinstall" in data or data.get("version") == 1)


def detect_kind(text: str) -> str | None:
    """Tell kickstart, preseed, AutoYaST and autoinstall apart by content; None if none fits."""
    head = text.lstrip("\ufeff \t\r\n")
    if head.startswith("<"):
        return "autoyast" if "<profile" in head else None
    if head.startswith("#cloud-config") or _is_autoinstall_yaml(text):
        return "autoinstall"
    preseed = kickstart = 0
    for _, line in preseed_lines(text):
        parsed = parse_preseed_line(line)
        if parsed and parsed[2] in PRESEED_TYPES and "/" in parsed[1]:
            preseed += 1
        if line.split()[0] in _KS_WORDS:
            kickstart += 1
    if preseed and preseed >= kickstart:
        return "preseed"
    return "kickstart" if kickstart else None


# --- secrets ---------------------------------------------------------------------------------


def _kickstart_secrets(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        if not words or words[0] not in ("rootpw", "user", "sshpw", "bootloader", "part",
                                         "partition", "logvol", "raid", "autopart"):  # fmt: skip
            continue
        positional = words[0] in ("rootpw", "sshpw")
        it = iter(words[1:])
        for word in it:
            opt, eq, value = word.partition("=")
            if opt in ("--password", "--passphrase"):
                found.append(value if eq else next(it, ""))
            elif positional and not word.startswith("--"):
                found.append(word)
    return found


def _preseed_secrets(text: str) -> list[str]:
    found = []
    for _, line in preseed_lines(text):
        parsed = parse_preseed_line(line)
        if parsed and (parsed[2] == "password" or parsed[1].endswith("-crypted")):
            found.append(parsed[3])
    return found


def _autoyast_secrets(text: str) -> list[str]:
    found = re.findall(r"<(?:\w+:)?(\w+)[^>]*>([^<]*)</", text)
    return [value.strip() for tag, value in found if tag in _SECRET_TAGS]


def _walk_secrets(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _SECRET_KEYS and isinstance(value, str | int):
                yield str(value)
            else:
                yield from _walk_secrets(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_secrets(item)


def extract_secrets(kind: str, text: str) -> list[str]:
    """Best-effort list of password/hash/token values in a user-written file, for redaction."""
    if kind == "kickstart":
        found = _kickstart_secrets(text)
    elif kind == "preseed":
        found = _preseed_secrets(text)
    elif kind == "autoyast":
        found = _autoyast_secrets(text)
    else:
        try:
            found = list(_walk_secrets(yaml.safe_load(text)))
        except yaml.YAMLError:
            found = []
    return sorted({s for s in found if s and s not in ("!", "*")}, key=len, reverse=True)
