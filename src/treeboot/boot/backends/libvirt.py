"""A thin layer over libvirt-python: connection, pools, volumes, domains, lifecycle events.

The binding is the optional extra ``treeboot[libvirt]`` (PyPI ``libvirt-python``, built
against the host's libvirt), so the default install stays daemonless; without it
``--connect`` fails with exit 7 and says how to add it.

Everything the hypervisor needs goes through the connection, never through local paths, so a
``qemu+ssh://`` hypervisor works like a local one: artifacts are uploaded into a storage
volume (``vol.upload`` on a stream, in chunks of :data:`CHUNK`), the pool is chosen by asking
the connection, and the console is read (and typed into) through ``virDomainOpenConsole``.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from treeboot.errors import BootError, MissingToolError

# Bytes per stream send: 1 MiB measured fastest (bench/libvirt_install.py: 4 MiB no faster,
# 8 MiB slower than virsh vol-upload); fewer would mean more calls for nothing.
CHUNK = 1024 * 1024
BOOT_POOL = "treeboot-boot"
_SYSTEM_BOOT_DIR = "/var/lib/libvirt/boot/treeboot"

_loop_lock = threading.Lock()
_loop_started = False


def import_libvirt() -> ModuleType:
    try:
        import libvirt
    except ImportError as e:
        raise MissingToolError(
            "--connect needs the libvirt Python binding, which is not installed",
            hint="pip install 'treeboot[libvirt]' (builds libvirt-python; needs the Debian"
            " packages libvirt-dev, pkg-config and gcc)",
        ) from e
    # libvirt prints every error on stderr by default; treeboot reports them itself.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    module: ModuleType = libvirt
    return module


def _start_event_loop(lv: ModuleType) -> None:
    """libvirt's default event loop in a daemon thread: lifecycle events and stream I/O."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        lv.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                lv.virEventRunDefaultImpl()

        threading.Thread(target=run, name="treeboot-libvirt-events", daemon=True).start()
        _loop_started = True


@dataclass(frozen=True)
class Volume:
    pool: str
    name: str
    path: str
    handle: Any


class Hypervisor:
    """One open libvirt connection."""

    def __init__(self, uri: str) -> None:
        self.lv = import_libvirt()
        _start_event_loop(self.lv)
        self.uri = uri
        try:
            self.conn = self.lv.open(uri)
        except self.lv.libvirtError as e:
            raise BootError(
                f"cannot connect to {uri}: {_message(e)}",
                hint="is libvirtd running there, and may this user use it? (try `virsh -c"
                f" '{uri}' uri`)",
            ) from e
        self.conn.setKeepAlive(5, 6)

    def close(self) -> None:
        _quietly(self.conn.close)

    # -- what the connection is --------------------------------------------------------

    @property
    def remote(self) -> bool:
        """True when the hypervisor may be another machine (tcp, tls, ssh, libssh...)."""
        parts = urllib.parse.urlsplit(self.uri)
        transport = parts.scheme.partition("+")[2]
        return transport not in ("", "unix") or parts.hostname not in (None, "", "localhost")

    @property
    def session(self) -> bool:
        return urllib.parse.urlsplit(self.uri).path.rstrip("/") == "/session"

    def domain_type(self, arch: str, accel: str) -> str:
        """"kvm" or "qemu": ``accel`` kvm/tcg as asked, auto by the hypervisor's capabilities."""
        if accel == "tcg":
            return "qemu"
        caps = ET.fromstring(self.conn.getCapabilities())
        types = {
            d.get("type")
            for guest in caps.findall("guest")
            if guest.find("arch") is not None and guest.find("arch").get("name") == arch  # type: ignore[union-attr]
            for d in guest.findall("arch/domain")
        }
        if "kvm" in types:
            return "kvm"
        if accel == "kvm":
            raise BootError(
                f"--accel kvm: the hypervisor at {self.uri} offers no KVM for {arch}",
                hint="use --accel tcg or auto",
            )
        if "qemu" not in types:
            raise BootError(
                f"the hypervisor at {self.uri} cannot run {arch} guests",
                hint="install its qemu-system package there",
            )
        return "qemu"

    def default_log_dir(self) -> str | None:
        """Where virtlogd may write a serial log on the hypervisor (None: no persistent log)."""
        return None if self.session else "/var/log/libvirt/qemu"

    # -- networks ----------------------------------------------------------------------

    def network_exists(self, name: str) -> bool:
        try:
            return bool(self.conn.networkLookupByName(name).isActive())
        except self.lv.libvirtError:
            return False

    def network_address(self, name: str) -> str:
        """The host's address on a libvirt network (its bridge), where the guest reaches us."""
        try:
            xml = ET.fromstring(self.conn.networkLookupByName(name).XMLDesc(0))
        except self.lv.libvirtError as e:
            raise BootError(
                f"--network network={name}: {_message(e)}", hint="see `virsh net-list --all`"
            ) from e
        ip = xml.find("ip")
        if ip is None or not ip.get("address"):
            raise BootError(
                f"libvirt network {name!r} has no host address to serve the tree on",
                hint="serve the tree over HTTP yourself and pass its URL",
            )
        return str(ip.get("address"))

    # -- pools and volumes -------------------------------------------------------------

    def find_pool(self, name: str | None) -> Any:
        """``name``, else "default", else the first active dir pool, else a new
        ``treeboot-boot`` dir pool: chosen by asking the connection, never by local paths."""
        if name is not None:
            try:
                pool = self.conn.storagePoolLookupByName(name)
            except self.lv.libvirtError as e:
                raise BootError(
                    f"--pool {name}: {_message(e)}", hint="see `virsh pool-list --all`"
                ) from e
            if not pool.isActive():
                pool.create(0)
            return pool
        pools = {p.name(): p for p in self.conn.listAllStoragePools()}
        for candidate in ("default", BOOT_POOL):
            if candidate in pools and pools[candidate].isActive():
                return pools[candidate]
        for pool in pools.values():
            if pool.isActive() and ET.fromstring(pool.XMLDesc(0)).get("type") == "dir":
                return pool
        return self._define_boot_pool()

    def _define_boot_pool(self) -> Any:
        if self.session:
            raise BootError(
                f"{self.uri} has no active storage pool to upload the kernel and initrd to",
                hint="define one (`virsh pool-define-as NAME dir --target DIR`) and pass"
                " --pool NAME",
            )
        xml = (f"<pool type='dir'><name>{BOOT_POOL}</name>"
               f"<target><path>{_SYSTEM_BOOT_DIR}</path></target></pool>")  # fmt: skip
        pool = self.conn.storagePoolDefineXML(xml, 0)
        pool.build(0)
        pool.create(0)
        pool.setAutostart(1)
        return pool

    def create_volume(
        self, pool: Any, name: str, capacity: int, fmt: str = "raw", *, replace: bool = False
    ) -> Volume:
        try:
            old = pool.storageVolLookupByName(name)
        except self.lv.libvirtError:
            old = None
        if old is not None:
            if not replace:
                raise BootError(
                    f"volume {name} already exists in pool {pool.name()}",
                    hint="add --force to replace it, or --disk path=VOLUME-PATH to use it",
                )
            old.delete(0)
        # Sparse: an upload writes every byte anyway, and preallocating costs a second pass.
        xml = (f"<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
               f"<allocation unit='bytes'>0</allocation>"
               f"<target><format type='{fmt}'/></target></volume>")  # fmt: skip
        try:
            vol = pool.createXML(xml, 0)
        except self.lv.libvirtError as e:
            raise BootError(
                f"cannot create volume {name} in pool {pool.name()}: {_message(e)}"
            ) from e
        return Volume(pool.name(), name, vol.path(), vol)

    def upload(
        self, pool: Any, local: Path, name: str, progress: Callable[[int], None] | None = None
    ) -> Volume:
        """Copy ``local`` into a new raw volume through the API (works on remote hosts)."""
        vol = self.create_volume(pool, name, local.stat().st_size, replace=True)
        try:
            self.upload_into(vol, local, progress=progress)
        except BaseException:
            self.delete_volume(vol)
            raise
        return vol

    def upload_into(
        self,
        vol: Volume,
        local: Path,
        *,
        chunk: int = CHUNK,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream ``local`` into the existing volume ``vol`` (``virStorageVolUpload``)."""
        size = local.stat().st_size
        stream = self.conn.newStream(0)
        try:
            vol.handle.upload(stream, 0, size, 0)
            with local.open("rb", buffering=0) as f:
                while data := f.read(chunk):
                    _send_all(stream, data)
                    if progress is not None:
                        progress(len(data))
            stream.finish()
        except BaseException as e:
            _quietly(stream.abort)
            if isinstance(e, self.lv.libvirtError):
                raise BootError(
                    f"uploading {local} into volume {vol.name} of pool {vol.pool}: {_message(e)}",
                    hint="is the pool full, or was the volume deleted meanwhile?",
                ) from e
            raise

    def delete_volume(self, vol: Volume) -> None:
        _quietly(lambda: vol.handle.delete(0))

    def volume_by_path(self, path: str) -> Volume | None:
        try:
            vol = self.conn.storageVolLookupByPath(path)
        except self.lv.libvirtError:
            return None
        return Volume(vol.storagePoolLookupByVolume().name(), vol.name(), vol.path(), vol)

    # -- domains -----------------------------------------------------------------------

    def find_domain(self, name: str) -> Any | None:
        try:
            return self.conn.lookupByName(name)
        except self.lv.libvirtError:
            return None

    def new_uuid(self, name: str) -> str:
        """The UUID of an existing domain of this name (so phase 2 replaces it), or a new one."""
        dom = self.find_domain(name)
        return str(dom.UUIDString()) if dom is not None else str(uuid.uuid4())

    def on_lifecycle(self, callback: Callable[[str, int, int], None]) -> int:
        """Call ``callback(domain_name, event, detail)`` for every lifecycle event."""

        def cb(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
            callback(dom.name(), event, detail)

        lifecycle = self.lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE
        return int(self.conn.domainEventRegisterAny(None, lifecycle, cb, None))

    def remove_callback(self, callback_id: int) -> None:
        _quietly(lambda: self.conn.domainEventDeregisterAny(callback_id))

    def open_console(self, dom: Any, sink: Callable[[bytes], None]) -> ConsoleStream:
        """The domain's serial console, both ways (works over remote connections)."""
        return ConsoleStream(self, dom, sink)

    def watch_readable(self, fd: int, callback: Callable[[], None]) -> int:
        """Call ``callback()`` on the event loop thread whenever ``fd`` is readable (or hung
        up); the handle for :meth:`unwatch`."""
        lv = self.lv
        wanted = lv.VIR_EVENT_HANDLE_READABLE | lv.VIR_EVENT_HANDLE_HANGUP

        def on_event(_watch: int, _fd: int, _events: int, _opaque: Any) -> None:
            callback()

        return int(lv.virEventAddHandle(fd, wanted, on_event, None))

    def unwatch(self, handle: int) -> None:
        _quietly(lambda: self.lv.virEventRemoveHandle(handle))


class ConsoleStream:
    """A domain's serial console on a non-blocking ``virDomainOpenConsole`` stream.

    As ``virsh console`` does it: the stream's events, dispatched by the event loop thread,
    drain it into ``sink`` (draining all the time matters: an unread console fills the pty and
    stalls the guest), and :meth:`send` queues keys that go out when the stream is writable.
    End it with :meth:`close`."""

    def __init__(self, hv: Hypervisor, dom: Any, sink: Callable[[bytes], None]) -> None:
        lv = self.lv = hv.lv
        self.sink = sink
        self.pending = b""
        self.lock = threading.Lock()  # send() and the stream's events may race
        self.stream = hv.conn.newStream(lv.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, self.stream, lv.VIR_DOMAIN_CONSOLE_FORCE)
        self.base = lv.VIR_STREAM_EVENT_READABLE | lv.VIR_STREAM_EVENT_HANGUP | \
            lv.VIR_STREAM_EVENT_ERROR
        self.want_write = False
        self.open = True
        self.stream.eventAddCallback(self.base, self._on_event, None)

    def _on_event(self, st: Any, events: int, _opaque: Any) -> None:
        lv = self.lv
        if events & lv.VIR_STREAM_EVENT_READABLE:
            data = read_available(st)
            if data:
                self.sink(data)
            if data is None:
                events |= lv.VIR_STREAM_EVENT_HANGUP
        if events & (lv.VIR_STREAM_EVENT_HANGUP | lv.VIR_STREAM_EVENT_ERROR):
            self.open = False
            _quietly(st.eventRemoveCallback)
            return
        if events & lv.VIR_STREAM_EVENT_WRITABLE:
            self._flush()

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the guest's console; it is sent as soon as the stream takes it."""
        with self.lock:
            self.pending += data
        self._flush()

    def _flush(self) -> None:
        with self.lock:
            while self.pending and self.open:
                try:
                    sent = self.stream.send(self.pending)
                except self.lv.libvirtError:  # the console has gone: the keys with it
                    self.pending = b""
                    break
                if sent < 0:  # -2: would block; go on when the stream says it is writable
                    break
                self.pending = self.pending[sent:]
            want_write = bool(self.pending) and self.open
            if want_write != self.want_write:
                self.want_write = want_write
                extra = self.lv.VIR_STREAM_EVENT_WRITABLE if want_write else 0
                _quietly(lambda: self.stream.eventUpdateCallback(self.base | extra))

    def close(self) -> None:
        self.open = False
        _quietly(self.stream.eventRemoveCallback)
        _quietly(self.stream.abort)


def read_available(stream: Any, limit: int = 1 << 20) -> bytes | None:
    """What the console stream holds now: b"" if nothing yet, None once it has ended."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        try:
            data = stream.recv(65536)
        except Exception:  # the domain ended: libvirt reports the stream as broken
            return b"".join(chunks) or None
        if isinstance(data, int):  # -2: no data now (non-blocking)
            break
        if not data:  # end of stream
            return b"".join(chunks) or None
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


@dataclass(frozen=True)
class DomainInfo:
    """A treeboot install seen through libvirt (its ``<metadata>``)."""

    name: str
    running: bool
    os: str | None
    phase: str | None
    location: str | None


def treeboot_domains(hv: Hypervisor) -> list[DomainInfo]:
    """Every domain on the connection that carries treeboot's metadata."""
    from treeboot.boot.backends.libvirt_xml import NAMESPACE

    found = []
    for dom in hv.conn.listAllDomains(0):
        try:
            text = dom.metadata(hv.lv.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
        except hv.lv.libvirtError:
            continue  # not ours
        meta = ET.fromstring(text)
        found.append(DomainInfo(
            dom.name(), bool(dom.isActive()), _child(meta, "os"), _child(meta, "phase"),
            _child(meta, "location"),
        ))  # fmt: skip
    return sorted(found, key=lambda d: d.name)


def _child(meta: ET.Element, tag: str) -> str | None:
    for el in meta:
        if el.tag.rpartition("}")[2] == tag:
            return el.text
    return None


def domain_running(uri: str, name: str) -> bool:
    hv = Hypervisor(uri)
    try:
        dom = hv.find_domain(name)
        return dom is not None and bool(dom.isActive())
    finally:
        hv.close()


def destroy_domain(uri: str, name: str) -> bool:
    """Destroy a running domain; False if it was not running."""
    hv = Hypervisor(uri)
    try:
        dom = hv.find_domain(name)
        if dom is None or not dom.isActive():
            return False
        dom.destroy()
        return True
    finally:
        hv.close()


def _send_all(stream: Any, data: bytes) -> None:
    """A blocking stream takes all of ``data`` in one send, so the loop runs once and
    nothing is copied."""
    while data:
        sent = stream.send(data)
        if sent < 0:  # -2: would block (only on non-blocking streams)
            continue
        data = data[sent:]


def _quietly(call: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # cleanup of something that may already be gone
        call()


def _message(e: Exception) -> str:
    get = getattr(e, "get_error_message", None)
    return str(get() if get else e)
