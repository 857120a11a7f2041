from pathlib import Path
from tests._detect_helpers import write_tree, sequential_rounds
from tests._net_helpers import serve_http
from treeboot.detect import identify

def test_dbg(tmp_path: Path) -> None:
    write_tree(tmp_path / "alpine", {".alpine-release": "3.19.1\n", "boot/vmlinuz-lts": b"k","boot/initramfs-lts": b"i", "apks/x86_64/APKINDEX.tar.gz": b""})
    with serve_http(tmp_path, latency=0.2) as srv:
        ident = identify(srv.url + "alpine/")
        log = srv.log
    t=min(r.t0 for r in log)
    for r in sorted(log, key=lambda r:r.t0):
        print(f"{r.t0-t:.3f} {r.t1-t:.3f} {r.method} {r.path} {r.status} conn={r.conn}")
    assert 0
