"""Helpers for the fleet tests: plans, Ansible's own commands, and a throwaway sshd.

:func:`sshd` starts Debian's ``openssh-server`` on 127.0.0.1 (a free port) with its own
config, a host key and a user key made for the test, and kills it by PID afterwards.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"

needs_ansible = pytest.mark.skipif(
    not (BIN / "ansible-playbook").exists(), reason="needs ansible-core (the test extra)"
)
needs_sshd = pytest.mark.skipif(not SSHD.exists(), reason="needs openssh-server")

ISSUE_PLAN = """\
[hosts.hv1]
ansible_connection = "local"

[[machines]]
name = "web1"
host = "hv1"
location = "http://mirror.example/debian/dists/bookworm/main/installer-amd64/"
disk = "none"
wait_for = "Select a language"
"""


def ansible(
    tool: str, *args: str, cwd: Path, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    """Run one of ansible-core's commands in ``cwd`` with only what the emitted dir sets up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["LC_ALL"] = "C.UTF-8"  # Ansible refuses to run without a UTF-8 locale
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def treeboot(*args: str, cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treeboot", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def local_host(name: str, base: Path) -> str:
    return (
        f'[hosts.{name}]\nansible_connection = "local"\n'
        f'treeboot_home = "{base / name / "home"}"\ntreeboot_cache = "{base / name / "cache"}"\n\n'
    )


def machine(name: str, host: str, location: str, **extra: str | int) -> str:
    lines = [
        "[[machines]]",
        f'name = "{name}"',
        f'host = "{host}"',
        f'location = "{location}"',
        'disk = "none"',
        'accel = "tcg"',
        'network = "none"',
        'wait_for = "Select a language"',
        "wait = 1000",  # a bound far above a loaded machine's TCG boot, never hit normally
    ]
    for key, value in extra.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    return "\n".join(lines) + "\n\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class SSHServer:
    port: int
    user: str
    key: Path  # the client's private key
    known_hosts: Path

    def host_vars(self, name: str, base: Path) -> str:
        ssh_args = f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes"
        # No ControlPersist master: nothing of ours outlives the test.
        no_master = "-o ControlMaster=no -o ControlPath=none"
        return (
            f"[hosts.{name}]\n"
            'ansible_host = "127.0.0.1"\n'
            f"ansible_port = {self.port}\n"
            f'ansible_user = "{self.user}"\n'
            f'ansible_ssh_private_key_file = "{self.key}"\n'
            f'ansible_ssh_common_args = "{ssh_args}"\n'
            f'ansible_ssh_args = "{no_master}"\n'
            f'ansible_python_interpreter = "{sys.executable}"\n'
            f'treeboot_home = "{base / name / "home"}"\n'
            f'treeboot_cache = "{base / name / "cache"}"\n\n'
        )


@contextlib.contextmanager
def sshd(base: Path) -> Iterator[SSHServer]:
    """An sshd of our own on 127.0.0.1, for the current user and a key made here."""
    base.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "user_key"):
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(base / key)], check=True
        )
    (base / "authorized_keys").write_text((base / "user_key.pub").read_text())
    port, user = free_port(), getpass.getuser()
    host_pub = (base / "host_key.pub").read_text().split()[:2]
    (base / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_pub)}\n")
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {base / 'host_key'}\n"
        f"PidFile {base / 'sshd.pid'}\nAuthorizedKeysFile {base / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nSubsystem sftp internal-sftp\n"
        f"AllowUsers {user}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation dir (packaged sshd wants it)
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(base / "sshd.log").open("wb"),
    )
    try:
        _wait_listening(port, proc)
        yield SSHServer(port, user, base / "user_key", base / "known_hosts")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("sshd never listened")
