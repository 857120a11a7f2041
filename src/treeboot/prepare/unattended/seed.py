"""A cloud-init NoCloud seed volume: an ISO9660 image labelled CIDATA.

cloud-init's NoCloud datasource looks for a filesystem labelled ``cidata`` (any case) holding
``user-data`` and ``meta-data``. Subiquity's cloud-init runs in casper's live root, so this is
how an autoinstall reaches it without a network server (virt-install's ``--cloud-init`` builds
the same kind of image with genisoimage). Names are given in Rock Ridge and Joliet so Linux
sees ``user-data`` and not the 8.3 ISO9660 name.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import pycdlib

from treeboot.artifacts.cpio import InjectFile
from treeboot.errors import UnattendedError

SEED_LABEL = "CIDATA"


def _iso_name(name: str, used: set[str]) -> str:
    stem = "".join(c for c in name.upper() if c.isalnum())[:8] or "FILE"
    candidate, n = stem, 0
    while candidate in used:
        n += 1
        candidate = f"{stem[:6]}{n:02d}"
    used.add(candidate)
    return f"/{candidate}.;1"


def _data(file: InjectFile) -> bytes:
    return file.data if isinstance(file.data, bytes) else file.data.read_bytes()


def write_seed_iso(files: Sequence[InjectFile], dest: Path, *, label: str = SEED_LABEL) -> Path:
    """Write ``files`` (flat names) to a new ISO image at ``dest``, created mode 0600."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    used: set[str] = set()
    try:
        for file in files:
            name = file.archive_name
            if "/" in name:
                raise UnattendedError(f"seed file {name!r} must not be in a directory")
            data = _data(file)
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                _iso_name(name, used),
                rr_name=name,
                joliet_path=f"/{name}",
                file_mode=0o100000 | file.mode,
            )
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            iso.write_fp(out)
    except OSError as e:
        with contextlib.suppress(OSError):
            dest.unlink()
        raise UnattendedError(f"cannot write the seed image {dest}: {e.strerror}") from e
    finally:
        iso.close()
    return dest
