#!/usr/bin/python
# Copyright: treeboot developers
# GNU General Public License v2.0+ (see https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt)
"""Ansible module ``treeboot.install.vm``: ``treeboot install`` as an idempotent task."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vm
short_description: Install an operating system into a VM with treeboot
description:
  - Runs treeboot's Python API (C(treeboot.install)) on the target host, like
    C(treeboot install LOCATION --name NAME ...) would there.
  - It identifies the install tree or ISO, fetches and verifies its kernel and initrd into the
    host's cache (C(TREEBOOT_CACHE)), boots the installer under QEMU and watches it until the
    install ends, O(wait_for) matches or O(wait) runs out.
  - Idempotent. A VM whose install already finished (its state in C(TREEBOOT_HOME) says
    installer-finished, wait-for-matched or powered-off) or that is running reports C(ok),
    not C(changed).
  - Parameters are named after the command line options, with C(_) for C(-).
version_added: 0.1.0
author:
  - treeboot developers (@treeboot)
requirements:
  - treeboot (for the Python interpreter Ansible uses on the target host)
  - QEMU on the target host
attributes:
  check_mode:
    support: full
    description: Check mode is C(--dry-run); the plan is returned and nothing is started.
  diff_mode:
    support: none
    description: There is nothing to diff; the result shows the plan.
options:
  name:
    description: VM name; its state lives in C(TREEBOOT_HOME/vms/NAME).
    type: str
    required: true
  location:
    description: Install tree URL (http, https, ftp), directory or ISO on the target host.
    type: str
    required: true
  memory:
    description: RAM in MiB (default osinfo-db's minimum for the OS).
    type: int
  vcpus:
    description: Virtual CPUs (default 2).
    type: int
  cpu:
    description: QEMU CPU model (default host under KVM; under TCG the cheapest model that
      runs the release).
    type: str
  disk:
    description: C(size=GiB), C(path=FILE[,size=GiB]) or C(none).
    type: str
  force:
    description: Replace an existing disk image.
    type: bool
    default: false
  arch:
    description: Guest architecture (default the tree's).
    type: str
  accel:
    description: Accelerator; C(auto) uses KVM only after a canary guest proves it works.
    type: str
    choices: [auto, kvm, tcg]
    default: auto
  extra_args:
    description: More kernel arguments, each split as a shell would.
    type: list
    elements: str
    default: []
  network:
    description:
      - C(user) is a restricted user-mode network that reaches only the tree.
      - C(none) gives the guest no NIC.
    type: str
    default: user
  console_log:
    description: Serial log file (default in the VM's state directory).
    type: path
  wait:
    description:
      - Time limit in seconds (default until the install ends).
      - C(0) leaves the VM running in the background.
    type: float
  wait_for:
    description: Stop the VM and succeed when this regular expression appears on the serial console.
    type: str
  no_reboot:
    description: Stop after the installer ends (do not boot the installed disk).
    type: bool
    default: false
  initrd_inject:
    description: Files on the target host to add to the initrd's root.
    type: list
    elements: path
    default: []
  unattended:
    description:
      - Generate an unattended install, C(key=value,...) as for C(--unattended)
        (C(profile=minimal,timezone=Europe/Berlin,...)).
      - Give passwords with O(admin_password) and O(user_password), not in this string.
    type: str
  unattended_file:
    description: Your own kickstart, preseed, AutoYaST or autoinstall file on the target host.
    type: path
  admin_password:
    description:
      - Root's password for the unattended install. It is written to a file only the module
        can read for the run (C(admin-password-file=)) and never shown in output or logs.
    type: str
  user_password:
    description:
      - The password of C(admin-user=) in O(unattended); kept secret like O(admin_password).
    type: str
  ssh_key:
    description: Public key(s) in authorized_keys format for the installed system (C(ssh-key=)).
    type: str
  kernel:
    description: Kernel, a path in the tree or a file on the target host.
    type: str
  initrd:
    description: Initrd, a path in the tree or a file on the target host.
    type: str
  trace_boot:
    description: Trace fw_cfg and compare what QEMU loaded to the prediction.
    type: bool
    default: false
  insecure:
    description: Do not verify TLS certificates.
    type: bool
    default: false
  require_signature:
    description: Refuse artifacts not covered by a verified signature.
    type: bool
    default: false
  keyring:
    description: OpenPGP keyring for the signed chain (default the distribution's archive keyring).
    type: path
  connect:
    description:
      - Hypervisor URI (C(--connect)), for a treeboot whose install takes one (libvirt).
        With a treeboot that has no such option the task fails and says so.
    type: str
  pool:
    description: libvirt storage pool for the disk and the uploaded artifacts (C(--pool)).
    type: str
  boot:
    description: Firmware family where the machine has several (C(--boot)).
    type: str
    choices: [bios, uefi, direct]
  boot_form:
    description: How the kernel enters the guest (C(--boot-form)); auto follows treeboot's rules.
    type: str
    choices: [auto, classic, fast]
    default: auto
  home:
    description: treeboot's state directory on the target host (C(TREEBOOT_HOME)).
    type: path
  cache:
    description:
      - treeboot's download cache on the target host (C(TREEBOOT_CACHE)). Machines that share
        a host and a cache fetch a tree once.
    type: path
"""

EXAMPLES = r"""
- name: Install Debian 12 up to its first prompt
  treeboot.install.vm:
    name: web1
    location: http://mirror.example/debian/dists/bookworm/main/installer-amd64/
    disk: none
    accel: tcg
    wait_for: Select a language

- name: Unattended install into a 20 GiB disk
  treeboot.install.vm:
    name: db1
    location: http://mirror.example/debian/dists/bookworm/main/installer-amd64/
    disk: size=20
    unattended: profile=minimal,timezone=Europe/Berlin
    admin_password: "{{ vault_root_password }}"
"""

RETURN = r"""
install:
  description: The result of C(treeboot install --json) (in check mode, of C(--dry-run --json)).
  returned: when the module ran an install or a dry run
  type: dict
status:
  description: The VM's state as C(treeboot list --json) shows it.
  returned: when the VM already existed
  type: dict
outcome:
  description:
    - How the install ended (installer-finished, wait-for-matched, timed-out, ...).
    - C(planned) in check mode.
  returned: always
  type: str
  sample: wait-for-matched
os:
  description: The osinfo-db short id of the installed OS.
  returned: when known
  type: str
  sample: debian12
elapsed:
  description: Seconds the module took.
  returned: always
  type: float
hint:
  description: What to do about a failure (the command line's C(hint:) line).
  returned: on failure, when treeboot has a hint
  type: str
exit_code:
  description: The exit code C(treeboot install) would have returned.
  returned: always
  type: int
ansible_facts:
  description: The result, also as the host fact C(treeboot_install).
  returned: always
  type: dict
"""

import dataclasses
import logging
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from treeboot.boot.install import install
    from treeboot.boot.request import InstallRequest
    from treeboot.boot.steps import split_extra_args
    from treeboot.boot.vm import vm_dir, vm_status
    from treeboot.errors import TreebootError, UsageError
except ImportError:
    HAS_TREEBOOT = False
    TREEBOOT_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_TREEBOOT = True
    TREEBOOT_IMPORT_ERROR = ""

# Outcomes after which the VM's install is done: a second run reports ok.
FINISHED = ("installer-finished", "wait-for-matched", "powered-off")
# Module options that InstallRequest takes under the same name.
SAME_NAME = (
    "location", "name", "vcpus", "cpu", "disk", "arch", "accel", "network", "wait", "wait_for",
    "no_reboot", "unattended_file", "trace_boot", "kernel", "initrd", "insecure",
    "require_signature", "force", "pool", "boot", "boot_form",
)  # fmt: skip
PATHS = ("console_log", "keyring")
SECRETS = (("admin_password", "admin-password-file"), ("user_password", "user-password-file"))

ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    location=dict(type="str", required=True),
    memory=dict(type="int"),
    vcpus=dict(type="int"),
    cpu=dict(type="str"),
    disk=dict(type="str"),
    force=dict(type="bool", default=False),
    arch=dict(type="str"),
    accel=dict(type="str", choices=["auto", "kvm", "tcg"], default="auto"),
    extra_args=dict(type="list", elements="str", default=[]),
    network=dict(type="str", default="user"),
    console_log=dict(type="path"),
    wait=dict(type="float"),
    wait_for=dict(type="str"),
    no_reboot=dict(type="bool", default=False),
    initrd_inject=dict(type="list", elements="path", default=[]),
    unattended=dict(type="str"),
    unattended_file=dict(type="path"),
    admin_password=dict(type="str", no_log=True),
    user_password=dict(type="str", no_log=True),
    ssh_key=dict(type="str", no_log=False),
    kernel=dict(type="str"),
    initrd=dict(type="str"),
    trace_boot=dict(type="bool", default=False),
    insecure=dict(type="bool", default=False),
    require_signature=dict(type="bool", default=False),
    keyring=dict(type="path"),
    connect=dict(type="str"),
    pool=dict(type="str"),
    boot=dict(type="str", choices=["bios", "uefi", "direct"]),
    boot_form=dict(type="str", choices=["auto", "classic", "fast"], default="auto"),
    home=dict(type="path"),
    cache=dict(type="path"),
)


class _Notices(logging.Handler):
    """treeboot's one-line notices become Ansible warnings (a module must not print)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _secret_file(tmpdir: str, name: str, value: str) -> str:
    path = os.path.join(tmpdir, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return path


def build_request(params: dict[str, Any], tmpdir: str) -> InstallRequest:
    """The InstallRequest for the module's parameters; secrets go to files in ``tmpdir``."""
    kwargs: dict[str, Any] = {k: params[k] for k in SAME_NAME if params[k] is not None}
    kwargs.update((key, _path(params[key])) for key in PATHS if params[key])
    kwargs["memory_mib"] = params["memory"]
    kwargs["extra_args"] = split_extra_args(params["extra_args"])
    kwargs["initrd_inject"] = [_path(p) for p in params["initrd_inject"]]
    kwargs["console"] = "none"
    unattended: list[str] = [params["unattended"]] if params["unattended"] else []
    for option, key in SECRETS:
        if params[option] is not None:
            unattended.append(f"{key}={_secret_file(tmpdir, option, params[option])}")
    if params["ssh_key"]:
        unattended.append(f"ssh-key={_secret_file(tmpdir, 'ssh_key', params['ssh_key'])}")
    if unattended:
        kwargs["unattended"] = ",".join(unattended)
    if params["connect"] is not None:
        if "connect" not in [f.name for f in dataclasses.fields(InstallRequest)]:
            raise UsageError(
                "connect: this treeboot has no --connect (libvirt) backend",
                hint="upgrade treeboot on the target host, or leave connect out for QEMU",
            )
        kwargs["connect"] = params["connect"]
    return InstallRequest(**kwargs)


def _path(value: str) -> Path:
    return Path(value).resolve()


def existing(name: str) -> dict[str, Any] | None:
    """The VM's status as a dict, or None when treeboot has no VM of that name."""
    if not os.path.isdir(str(vm_dir(name))):
        return None
    return vm_status(name).to_json()


def run(module: AnsibleModule) -> dict[str, Any]:
    """Install (or plan) the VM; return the module's result dict or raise TreebootError."""
    params = module.params
    status = existing(params["name"])
    if status is not None and (status["state"] == "running" or status["outcome"] in FINISHED):
        outcome = status["outcome"] or "running"
        return dict(changed=False, status=status, outcome=outcome, os=status["os"], exit_code=0)
    tmpdir = tempfile.mkdtemp(prefix="treeboot-ansible-")
    try:
        request = build_request(params, tmpdir)
        result = install(request, dry_run=module.check_mode)
    finally:
        for entry in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, entry))
        os.rmdir(tmpdir)
    data = result.to_json()
    outcome = "planned" if result.run is None else str(result.run.outcome)
    return dict(
        changed=True,
        install=data,
        outcome=outcome,
        os=result.identification.os,
        exit_code=result.exit_code,
    )


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if not HAS_TREEBOOT:
        module.fail_json(msg=missing_required_lib("treeboot"), exception=TREEBOOT_IMPORT_ERROR)
    for option, variable in (("home", "TREEBOOT_HOME"), ("cache", "TREEBOOT_CACHE")):
        if module.params[option]:
            os.environ[variable] = module.params[option]
    notices = _Notices()
    logging.getLogger("treeboot.notice").addHandler(notices)
    logging.getLogger("treeboot.notice").propagate = False
    start = time.monotonic()
    try:
        result = run(module)
    except TreebootError as e:
        msg = e.message if not e.hint else f"{e.message} (hint: {e.hint})"
        extra = dict(hint=e.hint) if e.hint else {}
        elapsed = round(time.monotonic() - start, 3)
        module.fail_json(msg=msg, exit_code=e.exit_code, outcome="error", elapsed=elapsed, **extra)
    for message in notices.messages:
        module.warn(message)
    result["elapsed"] = round(time.monotonic() - start, 3)
    facts = dict((k, v) for k, v in result.items() if k != "changed")
    result["ansible_facts"] = dict(treeboot_install=facts)
    if result["exit_code"] != 0:
        name, outcome, code = module.params["name"], result["outcome"], result["exit_code"]
        result["msg"] = f"{name}: the install ended with {outcome} (exit code {code})"
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
