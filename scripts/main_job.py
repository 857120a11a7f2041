"""`make run`: network-install Debian 12 from a local mirror up to the installer's first prompt.

1. Lay out a Debian mirror's installer tree (``dists/bookworm/main/installer-amd64/``) from the
   installed debian-installer-12-netboot-amd64 package (treeboot.devtree.build_debian_tree).
2. Serve it over HTTP on 127.0.0.1 (a thread in this process).
3. Run ``treeboot install http://127.0.0.1:PORT/dists/bookworm/main/installer-amd64/ --name
   demo --accel auto --disk none --console attach --wait-for 'Select a language'``: treeboot
   identifies the tree, fetches and verifies kernel and initrd (SHA256SUMS), boots the
   installer on QEMU with the tree forwarded to the guest, and shows the serial console until
   the "Select a language" prompt, then stops the VM cleanly.

Exit status: treeboot's (0 when the prompt appeared). Under TCG this takes about 20-40 s.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from treeboot.devtree import build_debian_tree  # noqa: E402

PROMPT = "Select a language"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(root: Path) -> ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="demo")
    parser.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"])
    parser.add_argument("--wait", default="600", help="time limit in seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="treeboot-main-job-") as tmp:
        tree = build_debian_tree(Path(tmp))
        server = serve(Path(tmp))
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/{tree.relative_to(tmp)}/"
            argv = [
                sys.executable, "-m", "treeboot", "install", url,
                "--name", args.name,
                "--accel", args.accel,
                "--disk", "none",
                "--console", "attach",
                "--wait-for", PROMPT,
                "--wait", args.wait,
            ]  # fmt: skip
            print(f"main job: {' '.join(argv[2:])}", file=sys.stderr, flush=True)
            env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
            started = time.monotonic()
            rc = subprocess.call(argv, env=env)
            elapsed = time.monotonic() - started
        finally:
            server.shutdown()
            server.server_close()
    sys.stdout.write("\x1b[0m\n")
    verdict = f"reached {PROMPT!r}" if rc == 0 else f"failed (exit status {rc})"
    print(f"main job: the Debian installer {verdict} in {elapsed:.1f} s", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
