"""The "prepare" steps of the install pipeline (install.py): each returns one part of the plan.

Decisions come from data: resource defaults from osinfo-db, kernel arguments from
:mod:`treeboot.prepare.cmdline`, guest networking from :mod:`treeboot.boot.serve`, unattended
files from :mod:`treeboot.prepare.unattended`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treeboot.arch import Architecture, BootKind, Firmware, firmware_info
from treeboot.boot.backends.qemu import quote_cmdline
from treeboot.boot.plan import BootPlan, DiskPlan, NetworkPlan, VMPaths
from treeboot.download.boot_files import fetch_boot_files
from treeboot.errors import (
    DetectionError,
    KernelImageError,
    MissingToolError,
    TreebootError,
    UsageError,
)
from treeboot.model import FetchResult, Identification, Media
from treeboot.run import find_binary, run

if TYPE_CHECKING:
    from treeboot.artifacts.cpio import InjectFile
    from treeboot.boot.request import InstallRequest
    from treeboot.prepare.bootform import PreparedForms

DEFAULT_VCPUS = 2
DEFAULT_MEMORY_MIB = 1024
DEFAULT_DISK_GIB = 20.0


# -- identify and fetch -------------------------------------------------------------------


def identify_and_fetch(
    request: InstallRequest,
) -> tuple[Identification, FetchResult | None, Path, Path]:
    """Identify the location and fetch (or take from the cache) its kernel and initrd."""
    files = fetch_boot_files(
        request.location,
        kernel=request.kernel,
        initrd=request.initrd,
        arch=request.arch,
        insecure=request.insecure,
        require_signature=request.require_signature,
        keyring=request.keyring,
        progress=request.progress,
    )
    if files.result is None:
        return _identify_or_minimal(request), None, files.kernel, files.initrd
    return files.result.identification, files.result, files.kernel, files.initrd


def _identify_or_minimal(request: InstallRequest) -> Identification:
    """With both artifacts given as files the location may be an unknown tree: boot anyway."""
    from treeboot.detect.identify import identify_location
    from treeboot.locate.open import open_location

    try:
        with open_location(request.location, insecure=request.insecure) as loc:
            ident: Identification = identify_location(
                loc, arch=request.arch, keyring=request.keyring
            )
            return ident
    except DetectionError as e:
        from treeboot.notices import notice

        notice(f"location not identified ({e.message.splitlines()[0]}); booting the given files")
    media = Media.ISO if request.location.lower().endswith(".iso") else Media.TREE
    return Identification(
        location=request.location, media=media, os=None, family=None, name=None,
        version=None, arch=request.arch, installer=None, kernel=request.kernel,
        initrd=request.initrd,
    )  # fmt: skip


def guest_arch(request: InstallRequest, ident: Identification) -> Architecture:
    if request.arch:
        return Architecture.from_name(request.arch)
    if ident.arch:
        return Architecture.from_name(ident.arch)
    return Architecture.native()


# Kernels another arch's machine boots as well (a 64-bit PC runs 32-bit kernels).
_KERNEL_ARCHES = {Architecture.X86_64: {"x86_64", "i686"}}


def check_kernel_arch(kernel: Path, arch: Architecture) -> None:
    """Refuse, before anything boots, a kernel built for another architecture."""
    from treeboot.artifacts.kernel import read_kernel

    try:
        image = read_kernel(kernel)
    except TreebootError:  # an unknown format only loses the check; QEMU has the last word
        return
    if image.arch is None or image.arch in _KERNEL_ARCHES.get(arch, {arch.value}):
        return
    raise KernelImageError(
        f"{kernel.name} is a {image.arch} kernel ({image.format}), not {arch}",
        hint=f"pass --arch {image.arch}, or the {arch} kernel of the tree",
    )


# -- firmware -----------------------------------------------------------------------------


def boot_firmware(
    request: InstallRequest, arch: Architecture, paths: VMPaths, *, dry_run: bool
) -> tuple[Firmware, Path | None]:
    """The firmware both phases run, and this VM's UEFI variable store (a fresh copy of the
    firmware's template per install, like virt-install's ``nvram``; None without UEFI)."""
    fw = arch.default_firmware(BootKind(request.boot) if request.boot else None)
    info = firmware_info(fw)
    for path in (info.code, info.vars, info.bios):
        if path is not None and not dry_run and not path.is_file():
            raise MissingToolError(
                f"{fw} firmware for {arch}: {path} is missing",
                hint=f"install it: apt-get install {info.package}",
            )
    if info.vars is None:
        return fw, None
    nvram = paths.state_dir / "nvram.fd"
    if not dry_run:
        nvram.parent.mkdir(parents=True, exist_ok=True)
        copy_sparse(info.vars, nvram)
    return fw, nvram


def copy_sparse(src: Path, dest: Path, chunk: int = 1 << 20) -> None:
    """Copy ``src`` leaving its zero MiBs as holes. AAVMF's 64 MiB variable store template is
    all zeros: a plain copy wrote 64 MiB per install, whose writeback then ran during the boot."""
    zero = bytes(chunk)
    with open(src, "rb") as f, open(dest, "wb") as out:
        while data := f.read(chunk):
            if data == zero[: len(data)]:
                out.seek(len(data), os.SEEK_CUR)
            else:
                out.write(data)
        out.truncate()


# -- resources ----------------------------------------------------------------------------


def resources(
    request: InstallRequest, ident: Identification, arch: Architecture
) -> tuple[int, int]:
    """Memory (MiB) and vCPUs: the request, else osinfo-db's recommendation for the OS."""
    res = _osinfo_resources(ident, arch)
    memory = request.memory_mib
    if memory is None:
        memory = (res.get("rec_ram_mib") or res.get("min_ram_mib")) or DEFAULT_MEMORY_MIB
        memory = max(memory, res.get("min_ram_mib") or 0)
    vcpus = request.vcpus or max(DEFAULT_VCPUS, res.get("min_vcpus") or 0)
    most = arch.facts().max_vcpus
    if most and vcpus > most:
        if request.vcpus:
            raise UsageError(
                f"--vcpus {vcpus}: QEMU's {arch.machine()} ({arch}) runs at most {most}",
                hint=f"use --vcpus {most}",
            )
        vcpus = most
    return memory, vcpus


def _osinfo_resources(ident: Identification, arch: Architecture) -> dict[str, Any]:
    try:
        from treeboot.detect.osinfo import load_osinfo

        db = load_osinfo()
    except Exception:  # a missing or broken osinfo-db only costs us the defaults
        return {}
    entry = db.get(ident.os) if ident.os else None
    if entry is None and ident.family:
        # An OS newer than the database: the family's newest release is the best guess.
        real = [e for e in db.by_distro(ident.family) if not e.is_placeholder]
        entry = next(iter(db.newest_first(real)), None)
    res = entry.resources_for(str(arch)) if entry else None
    return dict(res.__dict__) if res else {}


def disk_size(ident: Identification, arch: Architecture) -> float:
    res = _osinfo_resources(ident, arch)
    size = res.get("rec_storage_gib") or res.get("min_storage_gib") or DEFAULT_DISK_GIB
    return float(size)


# -- disk ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskRequest:
    none: bool = False
    path: Path | None = None
    size_gib: float | None = None
    format: str | None = None

    @classmethod
    def parse(cls, spec: str | None) -> DiskRequest:
        """virt-install's ``--disk``: ``none``, ``size=GiB``, ``path=FILE[,size=GiB][,format=F]``
        or a bare FILE."""
        if spec is None:
            return cls()
        if spec.strip() == "none":
            return cls(none=True)
        values: dict[str, str] = {}
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            if not sep and not values:
                key, value = "path", key
            if key not in ("path", "size", "format") or not value:
                raise UsageError(
                    f"--disk {spec}: cannot parse {item!r}",
                    hint="use --disk size=GiB, --disk path=FILE[,size=GiB] or --disk none",
                )
            values[key] = value
        try:
            size = float(values["size"]) if "size" in values else None
        except ValueError as e:
            raise UsageError(f"--disk {spec}: size must be a number of GiB") from e
        if size is not None and size <= 0:
            raise UsageError(f"--disk {spec}: size must be positive")
        path = Path(values["path"]).expanduser().resolve() if "path" in values else None
        return cls(False, path, size, values.get("format"))


def disk_plan(
    request: InstallRequest,
    ident: Identification,
    arch: Architecture,
    paths: VMPaths,
    *,
    dry_run: bool,
) -> DiskPlan | None:
    """Decide the disk and (unless ``dry_run``) create it with qemu-img.

    An existing image is used as it is, unless a size asks for a new one: then it is
    replaced only with ``--force``.
    """
    req = DiskRequest.parse(request.disk)
    if req.none:
        return None
    path = req.path or paths.state_dir / "disk.qcow2"
    wants_new = req.size_gib is not None or req.path is None
    if path.exists() and not (wants_new and request.force):
        if wants_new and req.path is None:
            raise UsageError(
                f"VM {request.name!r} already has a disk: {path}",
                hint=f"add --force to replace it with a new one, or --disk path={path} to"
                " install onto it as it is",
            )
        if req.size_gib is not None:
            raise UsageError(
                f"--disk {request.disk}: {path} exists and would be overwritten",
                hint="add --force to overwrite it, or drop size= to use it as it is",
            )
        return DiskPlan(path, req.format or _unprobed_format(path, request.disk))
    fmt = req.format or "qcow2"
    size = req.size_gib or disk_size(ident, arch)
    plan = DiskPlan(path, fmt, size, create=True, overwrite=path.exists())
    if not dry_run:
        create_disk(plan)
    return plan


def create_disk(disk: DiskPlan) -> None:
    disk.path.parent.mkdir(parents=True, exist_ok=True)
    if disk.overwrite:
        disk.path.unlink()
    size = f"{int((disk.size_gib or DEFAULT_DISK_GIB) * 1024)}M"
    run([find_binary("qemu-img"), "create", "-q", "-f", disk.format, str(disk.path), size])


_QCOW_MAGIC = b"QFI\xfb"  # docs/interop/qcow2.txt: the first 4 bytes of a qcow2 image


def _unprobed_format(path: Path, spec: str | None) -> str:
    """An existing image without ``format=`` is raw: never probed (a guest can write a qcow2
    header with a backing file into a raw image and so read host files; libvirt refuses to
    probe for this reason). A file that starts like qcow2 is refused rather than booted raw,
    which would corrupt it: the user says which it is."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_QCOW_MAGIC))
    except OSError as e:
        raise UsageError(f"--disk {spec}: cannot read {path}: {e.strerror}") from e
    if head == _QCOW_MAGIC:
        raise UsageError(
            f"--disk {spec}: {path} starts with a qcow2 header; treeboot does not guess image"
            " formats",
            hint=f"if you made it as qcow2, say so: --disk path={path},format=qcow2"
            " (or format=raw if it is a raw disk a guest wrote this header into)",
        )
    return "raw"


# -- network ------------------------------------------------------------------------------


def guest_network(
    request: InstallRequest,
    ident: Identification,
    stack: contextlib.ExitStack,
    *,
    dry_run: bool,
) -> tuple[NetworkPlan, str | None]:
    """The guest's network and the URL the guest sees the tree at (None: no network).

    A URL on the host's loopback is rewritten to the guest-visible address and forwarded per
    connection. A local directory or ISO, or a remote URL (which the restricted guest cannot
    reach), is served or proxied by treeboot's own server while the install runs.
    """
    if request.network == "none":
        return NetworkPlan("none"), None
    from treeboot.boot import serve

    # A URL with credentials is never forwarded: they would be in the guest's kernel command
    # line (which `ps` shows); treeboot's server proxies the tree, the guest sees no password.
    credentials = urllib.parse.urlsplit(ident.location).username is not None
    guest_url, port = (None, None) if credentials else serve.rewrite_for_guest(ident.location)
    if port is not None and guest_url is not None:
        return NetworkPlan("user", serve.guest_netdev_args(port, "user")), guest_url
    if request.wait == 0:
        raise UsageError(
            f"--wait 0 with {ident.location}: treeboot would serve the tree to the guest, and"
            " its server stops when the command returns",
            hint="serve the tree over HTTP on this host's loopback, or drop --wait 0",
        )
    if dry_run:  # no server: show where its port goes
        args = serve.guest_netdev_args(_PLACEHOLDER_PORT, "user")
        args = [a.replace(f" {_PLACEHOLDER_PORT}", " PORT") for a in args]
        return NetworkPlan("user", args), serve.GUEST_URL
    server = stack.enter_context(serve.GuestServer(ident.location))
    return NetworkPlan("user", serve.guest_netdev_args(server.port, "user")), server.guest_url


_PLACEHOLDER_PORT = 65535


def _is_local(location: str) -> bool:
    scheme = urllib.parse.urlsplit(location).scheme
    return scheme in ("", "file") or len(scheme) == 1  # "C:"-style never, but be safe


def check_guest_reachable(
    request: InstallRequest, ident: Identification, network: NetworkPlan
) -> None:
    """Fail before QEMU starts if the installer could not reach the tree it needs."""
    if network.mode == "none" and "repo-url" in ident.needs:
        raise UsageError(
            f"the {ident.installer or 'installer'} fetches the rest of the install over the"
            " network, but --network none gives the guest no network",
            hint="use --network user",
        )
    if network.mode == "none" or not ident.kernel:
        return
    from treeboot.boot import serve

    # The tree's own kernel is a file every server serves (a directory URL may be refused).
    kernel_url = urllib.parse.urljoin(ident.location, ident.kernel)
    if serve.rewrite_for_guest(ident.location)[1] is not None:
        serve.reachable_check(kernel_url, timeout=5.0)


# -- kernel command line ------------------------------------------------------------------


@dataclass
class Payload:
    """What the unattended step adds: files for the initrd (or a CIDATA seed volume), kernel
    args, secrets to redact."""

    files: list[InjectFile] = field(default_factory=list)
    kernel_args: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    delivery: str = "initrd"  # or "cidata"


def unattended_payload(request: InstallRequest, ident: Identification) -> Payload:
    if request.unattended is None and request.unattended_file is None:
        return Payload()
    from treeboot.prepare import unattended

    if request.unattended_file is not None:
        if request.unattended is not None:
            raise UsageError("--unattended and --unattended-file exclude each other")
        rendered = unattended.load_unattended_file(ident, request.unattended_file)
    else:
        opts = unattended.UnattendedOptions.parse(request.unattended or "")
        rendered = unattended.render_unattended(ident, opts)
    return Payload(
        list(rendered.files),
        list(rendered.kernel_args),
        list(rendered.secret_values),
        rendered.delivery,
    )


def kernel_cmdline(
    request: InstallRequest,
    ident: Identification,
    arch: Architecture,
    repo_url: str | None,
    payload: Payload,
    kernel: Path,
    *,
    medium_attached: bool,
    accel: str | None = None,
) -> list[str]:
    """The installer's kernel arguments; ``accel`` adds the arch's arguments for emulation
    (``tcg_kernel_args`` in rules/machines.toml) before the user's own ``--extra-args``."""
    from treeboot.prepare.cmdline import build_cmdline, check_cmdline

    emulated = list(arch.facts().tcg_kernel_args) if accel == "tcg" else []
    args = build_cmdline(
        ident,
        arch=str(arch),
        repo_url=repo_url,
        console=arch.default_console(),
        extra_args=[*emulated, *request.extra_args],
        unattended_args=payload.kernel_args,
        medium_attached=medium_attached,
    )
    check_cmdline(args, installer=ident.installer, cmdline_size=_cmdline_size(kernel, arch))
    return args


def _cmdline_size(kernel: Path, arch: Architecture) -> int | None:
    if arch not in (Architecture.X86_64, Architecture.I686):
        return None
    from treeboot.artifacts.kernel import read_kernel

    try:
        x86 = read_kernel(kernel).x86
    except TreebootError:  # an unparsable header only loses the length check
        return None
    return x86.cmdline_size if x86 is not None else None


def split_extra_args(values: list[str]) -> list[str]:
    """``--extra-args "a b=c"`` (repeatable) -> ``["a", "b=c"]``, quoting as in a shell."""
    out: list[str] = []
    for value in values:
        try:
            out += shlex.split(value)
        except ValueError as e:
            raise UsageError(f"--extra-args {value!r}: {e}") from e
    return out


# -- initrd -------------------------------------------------------------------------------


def inject(
    request: InstallRequest,
    payload: Payload,
    initrd: Path,
    paths: VMPaths,
    *,
    dry_run: bool,
) -> tuple[Path, list[Path]]:
    """Append the unattended files and ``--initrd-inject`` files to a copy of the initrd."""
    from treeboot.artifacts.cpio import InjectFile
    from treeboot.prepare.inject import inject_files

    files = list(payload.files) if payload.delivery == "initrd" else []
    for path in request.initrd_inject:
        path = Path(path).expanduser()
        if not path.is_file():
            raise UsageError(f"--initrd-inject {path}: no such file")
        files.append(InjectFile(path.resolve()))
    if not files:
        return initrd, []
    out = paths.state_dir / "initrd.img"
    if not dry_run:
        inject_files(initrd, files, out)
    return out, [out]


# -- --trace-boot -------------------------------------------------------------------------


def predict_boot(plan: BootPlan) -> dict[str, Any] | None:
    """What QEMU's x86 loader will put in fw_cfg, computed before boot (while a temporary
    initrd still exists): for ``--trace-boot``, and to refuse an initrd that cannot fit in
    the guest's memory (BootError) before QEMU says so. Both forms are modelled (the bzImage
    and the PVH-entered vmlinux); None for other architectures and other kernels (QEMU also
    boots multiboot kernels)."""
    if plan.kernel is None or plan.arch not in (Architecture.X86_64, Architecture.I686):
        return None
    from treeboot.artifacts.fwcfg import predict_fw_cfg

    machine = plan.machine or plan.arch.machine()
    cmdline = quote_cmdline(plan.cmdline)
    try:
        prediction: dict[str, Any] = predict_fw_cfg(
            plan.kernel, plan.initrd, cmdline, plan.memory_mib, machine=machine
        )
    except KernelImageError:
        return None
    return prediction


def trace_report(plan: BootPlan, prediction: dict[str, Any] | None) -> str | None:
    trace_file = plan.paths.trace_file
    if trace_file is None or not trace_file.exists():
        return None
    from treeboot.boot.tracing import parse_fw_cfg_trace, render_trace_report

    trace = parse_fw_cfg_trace(trace_file)
    report: str = render_trace_report(trace, prediction, plan.paths.console_log)
    return report


def install_medium(ident: Identification) -> Path | None:
    """The ISO itself as a CD-ROM, for installers that read their medium (casper, ...)."""
    if ident.media is not Media.ISO or "cdrom" not in ident.needs:
        return None
    path = Path(urllib.parse.urlsplit(ident.location).path)
    if _is_local(ident.location) and path.is_file():
        return path.resolve()
    from treeboot.notices import notice

    notice(f"the installer wants its medium as a CD-ROM; {ident.location} is not a local file")
    return None


def seed_volume(payload: Payload, paths: VMPaths, *, dry_run: bool) -> Path | None:
    """A CIDATA volume for installers that read their file from one (subiquity)."""
    if payload.delivery != "cidata" or not payload.files:
        return None
    from treeboot.prepare.unattended import write_seed_iso

    dest = paths.state_dir / "seed.iso"
    if not dry_run:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        write_seed_iso(payload.files, dest)
    return dest


# -- boot form ----------------------------------------------------------------------------


def boot_form(
    request: InstallRequest,
    plan: BootPlan,
    fetched: FetchResult | None,
    kernel: Path,
    initrd: Path,
    *,
    dry_run: bool,
) -> PreparedForms:
    """Choose the form to boot (rules/boot_forms.toml, --boot-form) and derive it."""
    from treeboot.prepare.bootform import choose_form, firmware_kind, prepare_forms

    firmware = firmware_kind(str(plan.arch), plan.firmware)
    choice = choose_form(str(plan.arch), firmware, plan.accel, request.boot_form)
    k_sha = fetched.kernel.sha256 if fetched and fetched.kernel.path == kernel else None
    i_sha = fetched.initrd.sha256 if fetched and fetched.initrd.path == initrd else None
    prepared: PreparedForms = prepare_forms(
        choice,
        kernel,
        initrd,
        kernel_sha256=k_sha,
        initrd_sha256=i_sha,
        dry_run=dry_run,
    )
    return prepared
