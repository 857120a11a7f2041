"""libvirt domain XML rendering against golden files (tests/data/golden/<case>.xml).

Every golden file is also validated against libvirt's schema with ``virt-xml-validate``
(Debian libvirt-clients + libxml2-utils). The comparison with ``virt-install --print-xml``
needs a real qemu driver: it is in test_install_libvirt.py.

Regenerate after an intended change: TREEBOOT_UPDATE_GOLDEN=1 pytest tests/boot/test_libvirt_xml.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from _paths import GOLDEN
from treeboot.arch import Architecture
from treeboot.boot.backends.libvirt_xml import NAMESPACE, DomainFacts, render_domain_xml
from treeboot.boot.plan import BootPlan, DiskPlan, NetworkPlan, Phase, VMPaths
from treeboot.boot.request import InstallRequest, NetworkRequest
from treeboot.errors import UsageError

STATE = Path("/var/lib/treeboot/vms")
POOL = Path("/var/lib/libvirt/boot/treeboot")
LOG = DomainFacts(console_log="/var/log/libvirt/qemu/deb-serial0.log",
                  uuid="6f1c2f0e-3b7a-4a55-9d0e-0c3c8e0f1a2b")  # fmt: skip


def _plan(name: str, arch: Architecture, **kw: object) -> BootPlan:
    base = BootPlan(
        name=name,
        arch=arch,
        accel="tcg",
        memory_mib=1024,
        vcpus=2,
        paths=VMPaths.in_dir(STATE / name),
        kernel=POOL / f"treeboot-{name}-kernel",
        initrd=POOL / f"treeboot-{name}-initrd",
        cmdline=["console=" + arch.default_console(), "priority=low", "label=a b"],
        disk=DiskPlan(Path(f"/var/lib/libvirt/images/{name}.qcow2"), "qcow2", 20.0, create=True),
        network=NetworkPlan("network", source="default"),
        location="http://192.168.122.1:8080/dists/bookworm/main/installer-amd64/",
        os="debian12",
        installer="debian-installer",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


CASES: dict[str, tuple[BootPlan, Phase, DomainFacts]] = {
    "x86_64-install": (_plan("deb", Architecture.X86_64), Phase.INSTALL, LOG),
    "x86_64-firstboot": (_plan("deb", Architecture.X86_64), Phase.FIRSTBOOT, LOG),
    "x86_64-kvm-bridge-media": (
        _plan(
            "iso",
            Architecture.X86_64,
            accel="kvm",
            network=NetworkPlan("bridge", source="br0", mac="52:54:00:12:34:56"),
            cdrom=Path("/srv/isos/ubuntu-24.04.iso"),
            seed_iso=POOL / "treeboot-iso-seed",
            memory_mib=4096,
        ),
        Phase.INSTALL,
        DomainFacts(),
    ),
    "x86_64-nodisk-nonet": (
        _plan("bare", Architecture.X86_64, disk=None, network=NetworkPlan("none")),
        Phase.INSTALL,
        DomainFacts(),
    ),
    "aarch64-install": (_plan("arm", Architecture.AARCH64), Phase.INSTALL, DomainFacts()),
    # An x86-64-v2 release under TCG (prepare/cpumodel.py): +features become <feature require>.
    "x86_64-v2-cpu": (
        _plan(
            "rhel",
            Architecture.X86_64,
            os="rhel9.4",
            disk=None,
            network=NetworkPlan("none"),
            cpu="qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16",
        ),
        Phase.INSTALL,
        DomainFacts(),
    ),
    "s390x-install": (_plan("z", Architecture.S390X), Phase.INSTALL, DomainFacts()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_domain_xml_matches_golden(case: str) -> None:
    plan, phase, facts = CASES[case]
    text = render_domain_xml(plan, phase, facts)
    path = GOLDEN / f"{case}.xml"
    if os.environ.get("TREEBOOT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.read_text() == text


@pytest.mark.skipif(not shutil.which("virt-xml-validate") or not shutil.which("xmllint"),
                    reason="needs libvirt-clients and libxml2-utils")  # fmt: skip
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_xml_validates_against_libvirts_schema(case: str) -> None:
    proc = subprocess.run(["virt-xml-validate", str(GOLDEN / f"{case}.xml"), "domain"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_phases_differ_as_in_virt_install() -> None:
    plan = CASES["x86_64-install"][0]
    install = ET.fromstring(render_domain_xml(plan, Phase.INSTALL))
    firstboot = ET.fromstring(render_domain_xml(plan, Phase.FIRSTBOOT))
    assert install.findtext("on_reboot") == "destroy"
    assert install.findtext("os/kernel") == str(plan.kernel)
    assert install.findtext("os/cmdline") == 'console=ttyS0 priority=low label="a b"'
    assert firstboot.findtext("on_reboot") == "restart"
    assert firstboot.find("os/kernel") is None and firstboot.find("os/boot") is not None


def test_metadata_carries_treeboots_facts_in_its_namespace() -> None:
    plan = CASES["x86_64-install"][0]
    root = ET.fromstring(render_domain_xml(plan, Phase.INSTALL))
    own = root.find(f"metadata/{{{NAMESPACE}}}install")
    assert own is not None
    assert own.findtext(f"{{{NAMESPACE}}}os") == "debian12"
    assert own.findtext(f"{{{NAMESPACE}}}phase") == "install"
    assert own.findtext(f"{{{NAMESPACE}}}location") == plan.location


# -- the request ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "source"),
    [
        (None, "default", None),
        ("user", "user", None),
        ("none", "none", None),
        ("network=isolated", "network", "isolated"),
        ("bridge=br0,model=virtio", "bridge", "br0"),
    ],
)
def test_network_follows_virt_install_syntax(spec: str | None, kind: str, source: str) -> None:
    assert NetworkRequest.parse(spec) == NetworkRequest(kind, source)


def test_libvirt_only_options_need_connect() -> None:
    with pytest.raises(UsageError, match="need --connect"):
        InstallRequest("http://x/", name="a", network="network=default")
    with pytest.raises(UsageError, match="needs --connect"):
        InstallRequest("http://x/", name="a", pool="default")
    req = InstallRequest("http://x/", name="a", network="bridge=br0", connect="qemu:///system")
    assert req.connect == "qemu:///system"


def test_connect_without_the_binding_says_how_to_add_it(tmp_path: Path) -> None:
    """The default install has no libvirt binding: --connect exits 7 with the extra's name."""
    code = ("import sys; sys.modules['libvirt'] = None  # as if libvirt-python were missing\n"
            "from treeboot.cli.main import main; sys.exit(main(sys.argv[1:]))")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", code, "install", str(tmp_path), "--name", "x",
         "--connect", "qemu:///system", "--dry-run"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 7, proc.stderr
    assert "libvirt Python binding" in proc.stderr and "treeboot[libvirt]" in proc.stderr
