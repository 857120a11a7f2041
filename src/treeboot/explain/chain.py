"""``treeboot explain``: the boot chain of a location (or a kernel/initrd pair), step by step.

    ex = explain(ExplainRequest("http://127.0.0.1:8000/dists/bookworm/main/installer-amd64/"))
    print(format_explanation(ex)); emit_json(ex.to_json()); Path("boot.svg").write_text(
        render_svg(ex))

For the chosen arch, machine, firmware (``boot``) and memory size it shows: what is fetched
from where (URL, relative path, size, sha256, verification level); the kernel's header facts;
the kernel command line; the exact QEMU argv; the fw_cfg items QEMU publishes; where each
piece lands in guest memory and who puts it there; and the hand-off sequence from treeboot
to the installer.

The argv and the command line come from :func:`treeboot.boot.install.install` in dry-run mode,
so they are what ``treeboot install`` runs; addresses come from ``rules/handoff.toml``
through :mod:`treeboot.explain.handoff`. Without fetching (``fetch=False``) the kernel header is not
read: facts that depend on it are ``None`` and the assumptions made are listed.

JSON keys (stable): backend, arch, machine, boot, memory_mib, location, identification,
artifacts, kernel, cmdline, qemu, handoff, fw_cfg, memory_map, sequence, notes, warnings,
assumptions.
"""

from __future__ import annotations

import contextlib
import shlex
import string
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from treeboot.arch import Architecture, BootKind, firmware_info
from treeboot.artifacts.kernel import KernelImage
from treeboot.boot.plan import BootPlan, Phase
from treeboot.download.boot_files import fetch_boot_files, local_file
from treeboot.errors import KernelImageError, UsageError
from treeboot.explain import handoff as _handoff
from treeboot.explain.handoff import BootInputs, Handoff, Placement, Region
from treeboot.model import FetchResult, Identification, Verified
from treeboot.prepare.bootform import FormChoice, KernelForm, choose_form, firmware_kind
from treeboot.store.cache import file_sha256

BACKENDS = ("qemu", "libvirt")
LATER_BACKENDS = ("pxe",)
# What changes when libvirt is in the middle (``install --connect``); the hand-off does not.
LIBVIRT_NOTES = (
    "libvirt: treeboot uploads kernel and initrd (with injected files) through the API into"
    " storage volumes on the hypervisor (pool 'default', else 'treeboot-boot' in"
    " /var/lib/libvirt/boot/treeboot); the domain XML names those paths in <kernel>/<initrd>.",
    "libvirt: libvirtd, not treeboot, starts QEMU there; QEMU (as libvirt-qemu, labelled by"
    " DAC/SELinux/AppArmor for those volumes) opens the files and loads them through the same"
    " fw_cfg hand-off shown above; the volumes are deleted once the installer runs.",
    "libvirt: the serial console comes back over a virDomainOpenConsole stream (virtlogd keeps"
    " a log on the hypervisor); --trace-boot is not available, since treeboot does not write"
    " QEMU's command line.",
)
BOOTS = ("default", "bios", "uefi", "direct")
VERIFIED_HOW = {
    Verified.SIGNED_CHAIN: "sha256 matches the tree's checksum list, which a verified"
    " signature covers",
    Verified.SHA256: "sha256 matches the checksum published by the tree (or pinned);"
    " no signature checked",
    Verified.NONE: "no checksum published: not verified",
}


@dataclass(frozen=True)
class ExplainRequest:
    """What ``treeboot explain`` was asked; names follow ``treeboot install``."""

    location: str | None = None
    kernel: str | None = None  # path in the tree, or a local ./file or /file
    initrd: str | None = None
    arch: str | None = None
    backend: str = "qemu"
    memory_mib: int | None = None
    machine: str | None = None
    boot: str = "default"  # "default": what install uses; else as install --boot
    accel: str = "auto"
    extra_args: Sequence[str] = ()
    network: str = "user"
    fetch: bool = True
    insecure: bool = False
    require_signature: bool = False
    keyring: Path | None = None  # archive keyring for the signed chain (default: the distro's)
    boot_form: str = "auto"  # as install's --boot-form


@dataclass(frozen=True)
class Artifact:
    role: str  # "kernel" | "initrd"
    source: str  # path relative to the location, or the local file given
    url: str | None  # where it comes from
    path: str | None  # the local file QEMU reads (None: not fetched)
    size: int | None
    sha256: str | None
    published: str | None  # the checksum the tree publishes
    verified: str
    how: str
    from_cache: bool | None = None


@dataclass
class Explanation:
    backend: str
    arch: Architecture
    machine: str
    boot: str
    memory_mib: int
    location: str | None
    identification: Identification | None
    artifacts: list[Artifact]
    image: KernelImage | None
    cmdline: list[str]
    cmdline_text: str
    argv: list[str]
    handoff: Handoff
    placement: Placement
    firmware_path: str | None
    sequence: list[tuple[str, str, str]]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    boot_form: FormChoice | None = None

    @property
    def title(self) -> str:
        ident = self.identification
        what = (ident.name or ident.os) if ident else None
        firmware = self.handoff.firmware.split(" (")[0]
        firmware = "no firmware" if firmware == "none" else firmware
        return f"{what or 'kernel + initrd'} on {self.arch} ({self.machine}, {firmware})"

    def to_json(self) -> dict[str, Any]:
        p, h, ident = self.placement, self.handoff, self.identification
        cmax = self.image.x86.cmdline_size if self.image and self.image.x86 else None
        return {
            "backend": self.backend,
            "arch": str(self.arch),
            "machine": self.machine,
            "boot": self.boot,
            "memory_mib": self.memory_mib,
            "location": self.location,
            "identification": _ident_json(ident) if ident else None,
            "artifacts": [vars(a) for a in self.artifacts],
            "kernel": self.image.to_json() if self.image else None,
            "cmdline": {
                "args": self.cmdline,
                "text": self.cmdline_text,
                "bytes": len(self.cmdline_text.encode()) + 1,
                "max": cmax,
            },
            "qemu": {"binary": self.argv[0], "argv": self.argv, "command": shlex.join(self.argv)},
            "handoff": {
                "name": h.name,
                "firmware": h.firmware,
                "firmware_file": self.firmware_path,
                "loader": h.loader,
                "how": h.loader_how,
                "actors": list(h.actors),
            },
            "fw_cfg": [vars(i) for i in p.fw_cfg],
            "memory_map": {
                "ram_start": p.ram[0],
                "ram_end": p.ram[1],
                "facts": p.facts,
                "regions": [_region_json(r) for r in p.regions],
            },
            "sequence": [{"from": a, "to": b, "text": t} for a, b, t in self.sequence],
            "notes": self.notes,
            "warnings": self.warnings,
            "assumptions": p.assumptions,
            "boot_form": self.boot_form.to_json() if self.boot_form else None,
        }


def _ident_json(ident: Identification) -> dict[str, Any]:
    keys = ("location", "os", "name", "version", "arch", "installer", "media", "verified",
            "evidence", "kernel", "initrd")  # fmt: skip
    d = ident.to_json()
    return {k: d.get(k) for k in keys}


def _region_json(r: Region) -> dict[str, Any]:
    return {**asdict(r), "end": r.end}


# -- gathering: artifacts, then install's own dry-run plan ----------------------------------


@dataclass
class _Gathered:
    location: str
    artifacts: list[Artifact]
    kernel: Path | None  # local files (None: not fetched)
    initrd: Path | None
    network: str


def _join(location: str, rel: str) -> str:
    if location.lower().endswith(".iso"):
        return f"{location}!/{rel}"
    return location.rstrip("/") + "/" + rel


def _local_artifact(role: str, path: Path) -> Artifact:
    how = "a local file you gave: nothing to verify against"
    size, digest = path.stat().st_size, file_sha256(path)
    return Artifact(role, str(path), None, str(path), size, digest, None, "none", how)


def _fetched_artifacts(result: FetchResult) -> list[Artifact]:
    ident = result.identification
    out = []
    for a in (result.kernel, result.initrd):
        url, published = _join(ident.location, a.source), ident.checksums.get(a.source)
        how = VERIFIED_HOW[a.verified]
        out.append(Artifact(a.role, a.source, url, str(a.path), a.size, a.sha256, published,
                            str(a.verified), how, a.from_cache))  # fmt: skip
    return out


def _unfetched_artifacts(req: ExplainRequest, location: str) -> list[Artifact]:
    """Identify only; sizes from one HEAD/stat each (no download)."""
    from treeboot.detect.identify import identify_location
    from treeboot.locate.open import open_location

    with open_location(location, insecure=req.insecure) as loc:
        ident = identify_location(
            loc, arch=req.arch, kernel=req.kernel, initrd=req.initrd, keyring=req.keyring
        )
        out = []
        for role in ("kernel", "initrd"):
            rel = getattr(ident, role)
            if not rel:
                raise UsageError(
                    f"{location}: no {role} identified",
                    hint="pass --kernel/--initrd relative to the location",
                )
            published = ident.checksums.get(rel)
            level = ident.verified if published else Verified.NONE
            how = "not fetched (--no-fetch); " + VERIFIED_HOW[level].replace(
                "matches", "would match"
            )
            out.append(
                Artifact(
                    role,
                    rel,
                    _join(location, rel),
                    None,
                    loc.size(rel),
                    None,
                    published,
                    str(level),
                    how,
                )
            )
    return out


def _gather(req: ExplainRequest) -> _Gathered:
    kernel, initrd = local_file(req.kernel), local_file(req.initrd)
    if kernel and initrd:
        # A bare pair has no tree to serve: the guest gets no network unless a location is given.
        location = req.location or str(kernel.parent)
        network = req.network if req.location else "none"
        arts = [_local_artifact("kernel", kernel), _local_artifact("initrd", initrd)]
        return _Gathered(location, arts, kernel, initrd, network)
    if not req.location:
        raise UsageError(
            "explain needs a LOCATION, or both --kernel FILE and --initrd FILE",
            hint="e.g. treeboot explain http://mirror/debian/dists/bookworm/main/installer-amd64/",
        )
    if not req.fetch:
        return _Gathered(
            req.location, _unfetched_artifacts(req, req.location), None, None, req.network
        )
    files = fetch_boot_files(
        req.location,
        kernel=req.kernel,
        initrd=req.initrd,
        arch=req.arch,
        insecure=req.insecure,
        require_signature=req.require_signature,
        keyring=req.keyring,
        progress=False,
    )
    assert files.result is not None  # both local files were handled above
    arts = _fetched_artifacts(files.result)
    if files.local_kernel:
        arts[0] = _local_artifact("kernel", files.local_kernel)
    if files.local_initrd:
        arts[1] = _local_artifact("initrd", files.local_initrd)
    return _Gathered(req.location, arts, files.kernel, files.initrd, req.network)


@contextlib.contextmanager
def _boot_files(g: _Gathered) -> Iterator[tuple[Path, Path]]:
    """The files to plan with: the fetched ones, or empty stand-ins named like the artifacts
    (install's dry-run only passes them to QEMU's argv; explain shows the URLs instead)."""
    if g.kernel is not None and g.initrd is not None:
        yield g.kernel, g.initrd
        return
    with tempfile.TemporaryDirectory(prefix="treeboot-explain-") as tmp:
        files = []
        for a in g.artifacts:
            path = Path(tmp) / a.role / (Path(a.source).name or a.role)
            path.parent.mkdir()
            path.touch()
            files.append(path)
        yield files[0], files[1]


def _plan(
    req: ExplainRequest, g: _Gathered, rules: _handoff.HandoffRules
) -> tuple[BootPlan, list[str], Identification | None, Handoff]:
    """install(..., dry_run=True) on the files, then the firmware/machine asked for."""
    from treeboot.boot.backends.qemu import render_qemu_argv
    from treeboot.boot.install import install
    from treeboot.boot.request import InstallRequest

    with _boot_files(g) as (kernel, initrd):
        request = InstallRequest(
            location=g.location,
            name="explain",
            memory_mib=req.memory_mib,
            disk="none",
            arch=req.arch,
            accel=req.accel,
            extra_args=list(req.extra_args),
            network=g.network,
            kernel=str(kernel),
            initrd=str(initrd),
            insecure=req.insecure,
            keyring=req.keyring,
            # the command, fw_cfg items and map below describe the files as shipped; the
            # form install boots is explained beside them (_boot_form)
            boot_form="classic",
            boot=None if req.boot == "default" else req.boot,
        )
        result = install(request, dry_run=True)
        plan, argv = result.plan, list(result.argv)
        # The hand-off of the firmware the install would really run (UEFI by default on arm).
        uefi = firmware_info(plan.boot_firmware).kind is BootKind.UEFI
        handoff = rules.find(plan.arch, "uefi" if uefi else "default")
        if req.machine:
            plan = replace(plan, machine=req.machine)
            argv = render_qemu_argv(plan, Phase.INSTALL)
        if g.kernel is None:  # stand-ins: show where the files would come from
            for path, art in zip((kernel, initrd), g.artifacts, strict=True):
                argv = [a.replace(str(path), art.url or art.source) for a in argv]
    ident = result.identification
    known = ident.os is not None or ident.installer is not None
    return plan, argv, ident if known else None, handoff


# -- explaining -----------------------------------------------------------------------------


def _check_backend(backend: str) -> None:
    if backend in BACKENDS:
        return
    if backend in LATER_BACKENDS:
        raise UsageError(
            f"--backend {backend}: not yet", hint="explain describes --backend qemu for now"
        )
    raise UsageError(f"unknown backend {backend!r}", hint=f"use one of: {', '.join(BACKENDS)}")


def _read_image(path: Path | None, warnings: list[str] | None) -> KernelImage | None:
    """The kernel's header; a format treeboot does not parse adds a short warning."""
    if path is None:
        return None
    from treeboot.artifacts.kernel import read_kernel

    try:
        return read_kernel(path)
    except KernelImageError as e:
        if warnings is not None:
            warnings.append("kernel header not read: " + e.message.split("; expected")[0])
        return None


def _arch_warning(image: KernelImage | None, arch: Architecture) -> list[str]:
    if image is None or image.arch is None:
        return []
    try:
        kernel_arch = Architecture.from_name(image.arch)
    except UsageError:
        return []
    x86 = {Architecture.X86_64, Architecture.I686}
    if kernel_arch is arch or {kernel_arch, arch} <= x86:
        return []
    return [
        f"the kernel is an {kernel_arch} {image.format}, but the guest is {arch}: it will not boot"
    ]


def _fill(text: str, values: Mapping[str, Any]) -> str:
    keys = {name for _, name, _, _ in string.Formatter().parse(text) if name}
    shown = {}
    for key in keys:
        value = values.get(key)
        shown[key] = "?" if value is None else f"{value:#x}" if type(value) is int else value
    return text.format(**shown)


def _with_kernel_arch(req: ExplainRequest) -> ExplainRequest:
    """A bare kernel/initrd pair boots on the kernel's own arch unless --arch says otherwise."""
    kernel = local_file(req.kernel)
    if req.arch or req.location or kernel is None:
        return req
    image = _read_image(kernel, None)
    return replace(req, arch=image.arch) if image and image.arch else req


def explain(req: ExplainRequest) -> Explanation:
    """Gather, plan (install's dry-run), read the kernel header and place everything."""
    _check_backend(req.backend)
    if req.boot not in BOOTS:
        raise UsageError(f"--boot {req.boot}: use {' or '.join(BOOTS)}")
    rules = _handoff.load_handoff_rules()
    req = _with_kernel_arch(req)
    g = _gather(req)
    plan, argv, ident, handoff = _plan(req, g, rules)
    warnings: list[str] = []
    # treeboot reads no s390 image header: nothing to warn about there
    image = _read_image(g.kernel, None if plan.arch is Architecture.S390X else warnings)
    warnings += _arch_warning(image, plan.arch)
    from treeboot.prepare.cmdline import join_cmdline

    cmdline = join_cmdline(plan.cmdline)
    machine = plan.machine or plan.arch.machine()
    firmware = _firmware_path(plan, handoff, rules)
    kernel_art, initrd_art = g.artifacts
    inputs = BootInputs(
        arch=plan.arch,
        machine=machine,
        memory_mib=plan.memory_mib,
        cmdline=cmdline,
        image=image,
        kernel_path=g.kernel,
        kernel_size=kernel_art.size,
        initrd_size=initrd_art.size,
        firmware_blob=rules.blob(handoff.firmware_blob),
    )
    placement = _handoff.place(handoff, inputs, rules)
    values: dict[str, Any] = {
        **placement.facts,
        "binary": argv[0],
        "machine": machine,
        "memory_mib": str(plan.memory_mib),
        "firmware_file": firmware,
        "installer": (ident.installer if ident else None) or "the initrd's own program",
    }
    sequence = [(s.source, s.target, _fill(s.text, values)) for s in handoff.steps]
    form = _boot_form(req, plan, handoff.firmware_file)
    return Explanation(
        backend=req.backend,
        arch=plan.arch,
        machine=machine,
        boot=req.boot,
        memory_mib=plan.memory_mib,
        location=req.location,
        identification=ident,
        artifacts=g.artifacts,
        image=image,
        cmdline=list(plan.cmdline),
        cmdline_text=cmdline,
        argv=argv,
        handoff=handoff,
        placement=placement,
        firmware_path=firmware,
        sequence=sequence,
        notes=_notes(req, handoff, form, placement, plan.memory_mib),
        warnings=[*warnings, *placement.warnings],
        boot_form=form,
    )


def _firmware_path(plan: BootPlan, handoff: Handoff, rules: _handoff.HandoffRules) -> str | None:
    """The firmware file shown: the plan's own (pflash code or -bios image), else the rule's."""
    fw = firmware_info(plan.boot_firmware)
    fw_file = fw.code or fw.bios
    return (str(fw_file) if fw_file else handoff.firmware_file) or (
        str(rules.blob(handoff.firmware_blob) or "") or None
    )


def _notes(
    req: ExplainRequest, handoff: Handoff, form: FormChoice, placement: Placement, memory_mib: int
) -> list[str]:
    notes = list(handoff.notes)
    if form.kernel is not KernelForm.ORIGINAL:
        notes.append(
            f"boot form {form.form}: install boots the {form.kernel} derived from this kernel"
            " (see Boot form); the command, fw_cfg items and map show the classic form"
        )
    notes += _ram_notes(placement, memory_mib)
    return [*notes, *(LIBVIRT_NOTES if req.backend == "libvirt" else ())]


def _boot_form(req: ExplainRequest, plan: BootPlan, firmware_file: str | None) -> FormChoice:
    """The form install boots (rules/boot_forms.toml), for the firmware explained here."""
    firmware = "uefi" if firmware_file else firmware_kind(str(plan.arch), plan.firmware)
    return choose_form(str(plan.arch), firmware, plan.accel, req.boot_form)


def _ram_notes(p: Placement, memory_mib: int) -> list[str]:
    shown = (p.ram[1] - p.ram[0]) >> 20
    if shown >= memory_mib:
        return []
    return [
        f"the map shows the {shown} MiB of RAM below 4 GiB; the other"
        f" {memory_mib - shown} MiB are above 4 GiB"
    ]
