"""Boot forms: which form of the kernel and initrd the guest boots, and deriving it.

The choice is data (``rules/boot_forms.toml``, per arch, firmware and accelerator);
``--boot-form classic|fast`` overrides it. The faster forms are derived on the host from the
fetched (verified) files by :mod:`treeboot.artifacts.derive` and cached by the source's
sha256 (:mod:`treeboot.store.derived`), so a warm run only reads two small sidecars. A form
that cannot be derived (no PVH note, an initrd that does not inflate cleanly) falls back to
the original file with a one-line notice: a missing speed-up never fails an install.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from treeboot.arch import BootKind, Firmware, firmware_info
from treeboot.artifacts import derive
from treeboot.artifacts.initrd import detect_compression
from treeboot.detect.rules import load_rule_table
from treeboot.errors import KernelImageError, LocationError, MetadataError, UsageError
from treeboot.notices import notice
from treeboot.store.cache import file_sha256
from treeboot.store.derived import DerivedEntry, DerivedStore


class BootForm(StrEnum):
    AUTO = "auto"  # what rules/boot_forms.toml says for this arch, firmware, accelerator
    CLASSIC = "classic"  # the files as the tree ships them
    FAST = "fast"  # the derived forms, wherever they can be derived


class KernelForm(StrEnum):
    ORIGINAL = "original"
    VMLINUX_PVH = "vmlinux-pvh"
    IMAGE = "image"


class InitrdForm(StrEnum):
    ORIGINAL = "original"
    RAW = "raw"


@dataclass(frozen=True)
class FormRule:
    arches: tuple[str, ...]
    firmware: str
    accel: str
    auto: BootForm
    kernel: KernelForm
    initrd: InitrdForm
    why: str

    def matches(self, arch: str, firmware: str, accel: str) -> bool:
        return (
            ("*" in self.arches or arch in self.arches)
            and self.firmware in ("*", firmware)
            and self.accel in ("*", accel)
        )


@dataclass(frozen=True)
class FormRules:
    rules: tuple[FormRule, ...]
    handoff: dict[str, str]


@functools.cache
def load_form_rules() -> FormRules:
    data = load_rule_table("boot_forms.toml")
    try:
        rules = tuple(
            FormRule(
                arches=tuple(r["arches"]),
                firmware=r["firmware"],
                accel=r["accel"],
                auto=BootForm(r["auto"]),
                kernel=KernelForm(r["kernel"]),
                initrd=InitrdForm(r["initrd"]),
                why=r["why"],
            )
            for r in data["rule"]
        )
        handoff = {str(k): str(v) for k, v in data["handoff"].items()}
    except (KeyError, ValueError, TypeError) as e:
        raise MetadataError(f"rules/boot_forms.toml: bad rule: {e}") from e
    return FormRules(rules, handoff)


@dataclass(frozen=True)
class FormChoice:
    """What will be booted and why (``explain`` and ``install --dry-run`` show it)."""

    form: BootForm  # CLASSIC or FAST, never AUTO
    kernel: KernelForm
    initrd: InitrdForm
    firmware: str  # "bios" | "uefi" | "none"
    reason: str
    handoff: str

    def to_json(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}


def firmware_kind(arch: str, firmware: str | Path | None) -> str:
    """The firmware family the rules key on: ``bios`` (x86 SeaBIOS: QEMU's linuxboot and PVH
    option ROMs), ``uefi`` (OVMF/AAVMF, or a firmware file given: the kernel's EFI stub), or
    ``none`` (the others: QEMU places the kernel itself). ``firmware`` is a plan's
    :class:`~treeboot.arch.Firmware` (None: the arch's default)."""
    if isinstance(firmware, Path):
        return "uefi"
    if firmware is None:
        return "bios" if arch in ("x86_64", "i686") else "none"
    kind = firmware_info(Firmware(str(firmware))).kind
    if kind is BootKind.UEFI:
        return "uefi"
    return "bios" if kind is BootKind.BIOS and arch in ("x86_64", "i686") else "none"


def handoff_text(arch: str, firmware: str, kernel: KernelForm) -> str:
    table = load_form_rules().handoff
    if kernel is not KernelForm.ORIGINAL:
        return table[str(kernel)]
    if firmware == "uefi":
        return table["original-uefi"]
    return table["original-x86" if arch in ("x86_64", "i686") else "original"]


def choose_form(arch: str, firmware: str, accel: str, wanted: BootForm | str) -> FormChoice:
    """The form to boot: the first matching rule's ``auto``, unless ``wanted`` overrides it."""
    try:
        wanted = BootForm(wanted)
    except ValueError as e:
        raise UsageError(f"--boot-form {wanted}: use auto, classic or fast") from e
    rule = next(r for r in load_form_rules().rules if r.matches(arch, firmware, accel))
    form = rule.auto if wanted is BootForm.AUTO else wanted
    if form is BootForm.CLASSIC:
        kernel, initrd = KernelForm.ORIGINAL, InitrdForm.ORIGINAL
    else:
        kernel, initrd = rule.kernel, rule.initrd
    if firmware == "uefi" and kernel is KernelForm.VMLINUX_PVH:
        kernel = KernelForm.ORIGINAL  # OVMF boots the EFI stub, not an ELF vmlinux
    reason = rule.why if wanted is BootForm.AUTO else f"--boot-form {wanted}"
    return FormChoice(form, kernel, initrd, firmware, reason, handoff_text(arch, firmware, kernel))


@dataclass
class PreparedForms:
    """The files to boot after derivation, and what each derivation recorded."""

    choice: FormChoice
    kernel: Path
    initrd: Path
    derived: dict[str, DerivedEntry] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.choice.to_json(),
            "kernel_path": str(self.kernel),
            "initrd_path": str(self.initrd),
            "derived": {k: e.__dict__ for k, e in self.derived.items()},
            "fallbacks": self.fallbacks,
        }


_PRODUCERS: dict[str, Callable[[Path, BinaryIO], derive.Derived]] = {
    str(KernelForm.VMLINUX_PVH): derive.extract_vmlinux,
    str(KernelForm.IMAGE): derive.inflate_image,
    "initrd-" + str(InitrdForm.RAW): derive.inflate_initrd,
}


def _produce(kind: str, source: Path) -> Callable[[BinaryIO], str]:
    def run(out: BinaryIO) -> str:
        return _PRODUCERS[kind](source, out).detail

    return run


def prepare_forms(
    choice: FormChoice,
    kernel: Path,
    initrd: Path,
    *,
    kernel_sha256: str | None = None,
    initrd_sha256: str | None = None,
    store: DerivedStore | None = None,
    dry_run: bool = False,
) -> PreparedForms:
    """Swap in the derived files the choice asks for (deriving them once, in parallel).

    ``*_sha256`` are the verified hashes from the fetch (computed here when None). With
    ``dry_run`` nothing is derived: a form already cached is used, others are reported as
    pending and the original file stays in the plan.
    """
    out = PreparedForms(choice, kernel, initrd)
    jobs: list[tuple[str, str, Path, str | None]] = []
    if choice.kernel is not KernelForm.ORIGINAL and _derivable(choice.kernel, kernel):
        jobs.append(("kernel", str(choice.kernel), kernel, kernel_sha256))
    if choice.initrd is not InitrdForm.ORIGINAL:
        jobs.append(("initrd", "initrd-" + str(choice.initrd), initrd, initrd_sha256))
    if not jobs:
        return out
    store = store or DerivedStore()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:  # xz and zlib release the GIL
        futures = {
            role: pool.submit(_one, store, kind, src, sha, dry_run) for role, kind, src, sha in jobs
        }
        results = {role: f.result() for role, f in futures.items()}
    for role, kind, source, _ in jobs:
        entry = results[role]
        if entry is None:
            out.fallbacks.append(f"{role}: {kind} is derived on the first real run")
            continue
        out.derived[role] = entry
        if entry.error is not None:
            out.fallbacks.append(f"{role}: {entry.error}")
            notice(f"booting the original {role} ({source.name}): {entry.error}")
            continue
        path = store.path(kind, entry.source_sha256)
        if role == "kernel":
            out.kernel = path
        else:
            out.initrd = path
    return out


def _derivable(form: KernelForm, kernel: Path) -> bool:
    """An Image that is not compressed is already the fast form: nothing to derive."""
    if form is not KernelForm.IMAGE:
        return True
    try:
        with open(kernel, "rb") as f:
            return detect_compression(f.read(8)) is not None
    except OSError as e:
        raise LocationError(f"cannot read {kernel}: {e.strerror}") from e


def _one(
    store: DerivedStore, kind: str, source: Path, sha: str | None, dry_run: bool
) -> DerivedEntry | None:
    try:
        sha = sha or file_sha256(source)
    except OSError as e:
        raise LocationError(f"cannot read {source}: {e.strerror}") from e
    if dry_run:
        return store.find(kind, sha)
    return store.make(kind, sha, _produce(kind, source), KernelImageError)
