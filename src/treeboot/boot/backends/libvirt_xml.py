"""Render a BootPlan into libvirt domain XML. Pure functions only; ``libvirt.py`` runs it.

The same guest as the QEMU argv (``qemu.py``): q35 on x86, virtio disk and network without
option ROMs, no video, no USB, no balloon, an RNG, a panic device, the serial console on a
pty that virtlogd also writes to a log file on the hypervisor. Two phases, as virt-install
does them: the install XML boots ``<kernel>/<initrd>/<cmdline>`` with ``on_reboot=destroy``
(QEMU's ``-no-reboot``), the first-boot XML boots the disk and is the one made persistent.

treeboot's own facts (location, OS, phase) go in ``<metadata>`` under :data:`NAMESPACE`, so
``treeboot list`` finds its domains on any connection.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from treeboot.arch import Architecture, firmware_info
from treeboot.boot.plan import BootPlan, Phase
from treeboot.prepare.cmdline import join_cmdline

NAMESPACE = "http://treeboot.dev/xmlns/libvirt/domain/1.0"
PREFIX = "treeboot"

# How the serial console and a guest panic reach libvirt, per architecture.
_CONSOLE_TARGET = {
    Architecture.S390X: ("console", "sclp"),
    Architecture.PPC64LE: ("serial", "spapr-vio-serial"),
}
_PANIC_MODEL = {
    Architecture.X86_64: "isa",  # QEMU's pvpanic ISA device
    Architecture.I686: "isa",
    # libvirt 9.0 has no model for pvpanic-pci (aarch64, riscv64): a panic there is seen on
    # the console ("Kernel panic - not syncing"), as on QEMU without QMP.
    Architecture.S390X: "s390",
    Architecture.PPC64LE: "pseries",
}


@dataclass(frozen=True)
class DomainFacts:
    """What the hypervisor side needs besides the plan (pure data, no connection)."""

    console_log: str | None = None  # written by virtlogd on the hypervisor
    uuid: str | None = None  # keep one UUID across both phases


def render_domain_xml(plan: BootPlan, phase: Phase, facts: DomainFacts | None = None) -> str:
    """The domain XML for one phase. Paths in ``plan`` are the hypervisor's paths."""
    facts = facts or DomainFacts()
    domain = ET.Element("domain", type="kvm" if plan.accel == "kvm" else "qemu")
    _text(domain, "name", plan.name)
    if facts.uuid:
        _text(domain, "uuid", facts.uuid)
    domain.append(metadata_element(plan, phase))
    _text(domain, "memory", str(plan.memory_mib), unit="MiB")
    _text(domain, "vcpu", str(plan.vcpus))
    domain.append(os_element(plan, phase))
    if plan.arch in (Architecture.X86_64, Architecture.I686):
        features = ET.SubElement(domain, "features")
        ET.SubElement(features, "acpi")
        ET.SubElement(features, "apic")
    domain.append(cpu_element(plan))
    ET.SubElement(domain, "clock", offset="utc")
    reboot = "destroy" if phase is Phase.INSTALL else "restart"
    _text(domain, "on_poweroff", "destroy")
    _text(domain, "on_reboot", reboot)
    _text(domain, "on_crash", "destroy")
    domain.append(devices_element(plan, phase, facts))
    ET.indent(domain, space="  ")
    return ET.tostring(domain, encoding="unicode") + "\n"


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    el.text = text
    return el


def metadata_element(plan: BootPlan, phase: Phase) -> ET.Element:
    metadata = ET.Element("metadata")
    # Written with an explicit prefix: libvirt keeps one namespaced element per URI.
    own = ET.SubElement(metadata, f"{PREFIX}:install", {f"xmlns:{PREFIX}": NAMESPACE})
    for key, value in (
        ("location", plan.location),
        ("os", plan.os),
        ("installer", plan.installer),
        ("phase", str(phase)),
        ("state-dir", str(plan.paths.state_dir)),
    ):
        if value is not None:
            _text(own, f"{PREFIX}:{key}", value)
    return metadata


def os_element(plan: BootPlan, phase: Phase) -> ET.Element:
    os_el = ET.Element("os")
    machine = plan.machine or plan.arch.machine()
    _text(os_el, "type", "hvm", arch=_libvirt_arch(plan.arch), machine=machine)
    # The same firmware in both phases, as on the QEMU backend: UEFI as pflash code plus a
    # variable store libvirt copies from the template for this domain, or a -bios image.
    info = firmware_info(plan.boot_firmware)
    if info.code is not None:
        _text(os_el, "loader", str(info.code), readonly="yes", type="pflash")
        if info.vars is not None:
            ET.SubElement(os_el, "nvram", template=str(info.vars))
    elif info.bios is not None:
        _text(os_el, "loader", str(info.bios), type="rom")
    if phase is not Phase.INSTALL and info.disk_kernel is not None:
        _text(os_el, "kernel", str(info.disk_kernel))  # a boot loader that can read the disk
    if phase is Phase.INSTALL and plan.kernel is not None:
        _text(os_el, "kernel", str(plan.kernel))
        if plan.initrd is not None:
            _text(os_el, "initrd", str(plan.initrd))
        if plan.cmdline:
            _text(os_el, "cmdline", join_cmdline(plan.cmdline))
    elif plan.disk is not None:
        ET.SubElement(os_el, "boot", dev="hd")
    return os_el


def _libvirt_arch(arch: Architecture) -> str:
    return "ppc64le" if arch is Architecture.PPC64LE else str(arch)


def cpu_element(plan: BootPlan) -> ET.Element:
    """QEMU's ``-cpu MODEL,+feat,-feat,prop=v`` in libvirt's words: the model, its ``+``/``-``
    features as required/disabled; other properties (``pauth-impdef=on``) have no libvirt
    spelling and are left out."""
    model, *props = (plan.cpu or plan.arch.cpu(plan.accel) or "").split(",")
    if model == "host":
        return ET.Element("cpu", mode="host-passthrough", check="none")
    if model in ("", "max"):
        return ET.Element("cpu", mode="maximum", check="none")
    cpu = ET.Element("cpu", mode="custom", match="exact", check="none")
    _text(cpu, "model", model.upper() if model.startswith("power") else model, fallback="allow")
    for prop in props:
        if prop[:1] in "+-" and len(prop) > 1:
            policy = "require" if prop[0] == "+" else "disable"
            cpu.append(ET.Element("feature", policy=policy, name=prop[1:]))
    return cpu


def devices_element(plan: BootPlan, phase: Phase, facts: DomainFacts) -> ET.Element:
    devices = ET.Element("devices")
    if plan.disk is not None:
        # The installer's writes are redone if anything fails, so its flushes can be skipped.
        cache = "unsafe" if phase is Phase.INSTALL else "writeback"
        devices.append(
            _disk(plan.disk.path, "disk", "vda", "virtio", plan.disk.format, cache=cache)
        )
    devices.extend(media_elements(plan, phase))
    iface = interface_element(plan)
    if iface is not None:
        devices.append(iface)
    devices.extend(console_elements(plan, facts))
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    rng = ET.SubElement(devices, "rng", model="virtio")
    _text(rng, "backend", "/dev/urandom", model="random")
    panic = _PANIC_MODEL.get(plan.arch)
    if panic:
        ET.SubElement(devices, "panic", model=panic)
    return devices


def _disk(
    path: Path, device: str, dev: str, bus: str, fmt: str, *, cache: str | None = None
) -> ET.Element:
    disk = ET.Element("disk", type="file", device=device)
    driver = {"name": "qemu", "type": fmt}
    if cache:
        driver |= {"cache": cache, "discard": "unmap"}
    ET.SubElement(disk, "driver", driver)
    ET.SubElement(disk, "source", file=str(path))
    ET.SubElement(disk, "target", dev=dev, bus=bus)
    if device == "cdrom" or (fmt == "raw" and dev != "vda"):
        ET.SubElement(disk, "readonly")
    return disk


def media_elements(plan: BootPlan, phase: Phase) -> list[ET.Element]:
    """The install ISO as a CD-ROM, and the CIDATA seed volume as a read-only virtio disk."""
    out: list[ET.Element] = []
    if plan.cdrom is not None:
        x86 = plan.arch in (Architecture.X86_64, Architecture.I686)
        dev, bus = ("sda", "sata") if x86 else ("sda", "scsi")
        if not x86:
            out.append(ET.Element("controller", type="scsi", model="virtio-scsi"))
        out.append(_disk(plan.cdrom, "cdrom", dev, bus, "raw"))
    if plan.seed_iso is not None and phase is Phase.INSTALL:
        out.append(_disk(plan.seed_iso, "disk", "vdb", "virtio", "raw"))
    return out


def interface_element(plan: BootPlan) -> ET.Element | None:
    """``network=NAME`` or ``bridge=BR``; anything else gives the guest no NIC."""
    net = plan.network
    if net.mode not in ("network", "bridge") or not net.source:
        return None
    iface = ET.Element("interface", type=net.mode)
    if net.mac:
        ET.SubElement(iface, "mac", address=net.mac)
    ET.SubElement(iface, "source", {net.mode: net.source})
    ET.SubElement(iface, "model", type="virtio")
    if plan.arch.device_bus() == "pci":
        ET.SubElement(iface, "rom", enabled="no")  # we never boot from the network
    return iface


def console_elements(plan: BootPlan, facts: DomainFacts) -> list[ET.Element]:
    kind, target_type = _CONSOLE_TARGET.get(plan.arch, ("serial", None))
    port = ET.Element(kind, type="pty")
    if facts.console_log:
        ET.SubElement(port, "log", file=facts.console_log, append="on")
    target = ET.SubElement(port, "target", port="0")
    if target_type:
        target.set("type", target_type)
    if kind == "console":
        return [port]
    console = ET.Element("console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    return [port, console]
