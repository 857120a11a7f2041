"""The Ansible collection itself: `ansible-galaxy collection build` and `ansible-test sanity`.

ansible-test runs each sanity check in a virtual environment of its own, into which it
bootstraps pip with a script from Ansible's CI file server. That server is not reachable
here, so the test puts a stand-in (tests/data/ansible_test_get_pip.py: ensurepip, then pip
from the package index) where ansible-test caches that script, under a HOME of its own.
Everything else (pylint, pycodestyle, voluptuous, ...) comes from the package index, at the
versions ansible-test pins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from _fleet_helpers import BIN, needs_ansible
from _paths import DATA
from treeboot.fleet.plan import COLLECTION_ROOT

pytestmark = needs_ansible
# Kept between runs (it holds ansible-test's virtual environments); inside .venv, not in git.
ANSIBLE_TEST_HOME = Path(sys.prefix) / "ansible-test-home"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["LC_ALL"] = "C.UTF-8"  # Ansible refuses to run without a UTF-8 locale
    env.update(extra)
    return env


def _ansible_test_pip_version() -> str:
    """The pip version ansible-test bootstraps (it names the script it looks for)."""
    code = (
        "import inspect, re, ansible_test._internal.python_requirements as r;"
        "print(re.search(r\"pip='([0-9.]+)'\", inspect.getsource(r.get_venv_packages))[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_galaxy_builds_the_collection(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION_ROOT),
         "--output-path", str(tmp_path)],
        env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    [tarball] = tmp_path.glob("treeboot-install-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "plugins/modules/vm.py" in names and "MANIFEST.json" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/output")]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ansible_test_sanity_passes(tmp_path: Path) -> None:
    # ansible-test wants the collection under ansible_collections/NS/NAME and writes
    # tests/output into it: run it on a copy.
    copy = tmp_path / "ansible_collections" / "treeboot" / "install"
    shutil.copytree(COLLECTION_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    cache = ANSIBLE_TEST_HOME / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    pip = _ansible_test_pip_version().replace(".", "_")
    shutil.copyfile(DATA / "ansible_test_get_pip.py", cache / f"get_pip_{pip}.py")
    result = subprocess.run(
        [str(BIN / "ansible-test"), "sanity", "--python",
         f"{sys.version_info.major}.{sys.version_info.minor}", "--color", "no"],
        cwd=copy, env=_env(HOME=str(ANSIBLE_TEST_HOME)), capture_output=True, text=True,
        timeout=1700, check=False,
    )  # fmt: skip
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
    assert result.returncode == 0, tail
