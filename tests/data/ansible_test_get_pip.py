"""Stand-in for ansible-test's pip bootstrap script ``get_pip_<version>.py``.

ansible-test downloads that script from Ansible's CI file server, which this machine cannot
reach. This one bootstraps pip with ensurepip, makes the new environment's pip trust the
system CA bundle (ansible-test runs pip with a reduced environment), then installs what
ansible-test asked for (``pip==X`` and friends) from the package index.
"""

import ensurepip
import os
import subprocess
import sys

BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# ensurepip clears the PIP_* variables and points PIP_CONFIG_FILE at /dev/null: set ours after.
ensurepip.bootstrap(upgrade=True)
if os.path.exists(BUNDLE):
    config = os.path.join(sys.prefix, "pip.conf")
    with open(config, "w") as f:
        f.write(f"[global]\ncert = {BUNDLE}\n")
    os.environ["PIP_CONFIG_FILE"] = config
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
