"""fw_cfg boot traces: parsing QEMU's trace log and the report (with the kernel's prediction)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _paths import DATA
from _serve_helpers import DI_KERNEL, boot_kernel, build_busybox_initrd, need_guest_tools
from treeboot.boot.tracing import (
    FILE_FIRST_KEY,
    BootTrace,
    compare_prediction,
    parse_fw_cfg_lines,
    parse_fw_cfg_trace,
    qemu_trace_args,
    render_trace_report,
)
from treeboot.errors import BootError

TRACE = DATA / "fw_cfg.trace"  # command in its header
PREDICTED = {  # what treeboot.artifacts.kernel.predict_fw_cfg says for that boot (q35, 512 MiB)
    "setup_addr": 0x10000,
    "setup_size": 20480,
    "kernel_addr": 0x100000,
    "kernel_size": 8202176,
    "cmdline_addr": 0x20000,
    "cmdline_size": 14,
    "initrd_addr": 0x1D8EC000,
    "initrd_size": 40810276,
    "warnings": [],
}


@pytest.fixture(scope="module")
def trace() -> BootTrace:
    return parse_fw_cfg_trace(TRACE)


def test_boot_items(trace: BootTrace) -> None:
    d = trace.to_json()
    assert {k: d[k] for k in PREDICTED if k != "warnings"} == {
        k: v for k, v in PREDICTED.items() if k != "warnings"
    }
    assert trace.cmdline == "console=ttyS0"
    assert d["option_rom"] == "genroms/linuxboot_dma.bin"
    assert trace.files["genroms/linuxboot_dma.bin"].size == 1536
    assert trace.unparsed == 0 and trace.lines == 106


def test_file_keys_replay_qemus_directory(trace: BootTrace) -> None:
    # q35 sorts the fw_cfg file directory by name; replaying the "#index" insertions must
    # give the same selector keys.
    names = sorted(trace.files)
    assert {n: trace.files[n].key for n in names} == {
        n: FILE_FIRST_KEY + i for i, n in enumerate(names)
    }
    rom = trace.option_rom
    assert rom is not None and rom.key is not None
    sel = trace.first_select(rom.key)
    assert sel is not None and sel.name == "genroms/linuxboot_dma.bin"
    assert not any(s.name == "unknown" and s.key in {f.key for f in trace.files.values()}
                   for s in trace.selects)  # fmt: skip


def test_times(trace: BootTrace) -> None:
    assert trace.timed and trace.started_at is not None
    rom, kernel, cmdline = (trace.read_window(k) for k in (0x2C, 0x11, 0x15))
    assert rom and kernel and cmdline
    assert rom[0] < kernel[0] < cmdline[0]  # the option ROM runs, then copies the kernel
    assert kernel[1] is not None and kernel[1] > kernel[0]
    uart = trace.uart_after(kernel[0])
    assert uart is not None and uart > cmdline[0]
    assert len(trace.uart_setups) == 12


def test_report_agrees_with_prediction(trace: BootTrace, tmp_path: Path) -> None:
    serial = tmp_path / "serial.log"
    serial.write_text(
        "\n[    0.000000] Linux version 6.1.0-50-amd64\n[    0.000000] Command line\n"
    )
    report = render_trace_report(trace, PREDICTED, serial)
    assert "option ROM  genroms/linuxboot_dma.bin (1536 bytes)" in report
    assert re.search(r"kernel +8202176 bytes at 0x100000, read at \+\d+\.\d{3} s \(", report)
    assert "initrd      40810276 bytes at 0x1d8ec000" in report
    assert "'console=ttyS0'" in report
    assert re.search(r"first serial output at \+\d+\.\d{3} s, \d+\.\d{3} s after", report)
    assert "first console line: '[    0.000000] Linux version 6.1.0-50-amd64'" in report
    assert "prediction: all 8 values agree" in report
    assert "setup_size 20480 = (setup_sects 39 + 1) x 512" in report
    assert compare_prediction(trace, PREDICTED) == []


def test_report_shows_disagreement_and_caller_time(trace: BootTrace) -> None:
    wrong = dict(PREDICTED, kernel_size=8202177, initrd_addr=None, warnings=["too long"])
    assert compare_prediction(trace, wrong) == [
        "kernel_size: QEMU set 0x7d27c0, predicted 0x7d27c1"
    ]
    assert trace.started_at is not None
    report = render_trace_report(trace, wrong, first_output_at=trace.started_at + 5)
    assert "prediction: 1 of 7 values differ:" in report
    assert "kernel_size: QEMU set 0x7d27c0, predicted 0x7d27c1" in report
    assert "first serial output at +5.000 s" in report and "as the caller saw it" in report
    assert "warning: too long" in report


def test_trace_without_timestamps() -> None:
    # QEMU without -msg timestamp=on: same events, no "pid@time:" prefix; fw_cfg* adds reads.
    lines = [re.sub(r"^\d+@[\d.]+:", "", line) for line in TRACE.read_text().splitlines()]
    lines += ["fw_cfg_read 0x55d8c45d3100 = 0x51", "qemu-system-x86_64: some warning"]
    t = parse_fw_cfg_lines(lines)
    assert not t.timed and t.reads == 1 and t.unparsed == 1
    assert t.value(0x08) == 8202176 and t.first_select(0x11) is not None
    report = render_trace_report(t, None)
    assert "kernel      8202176 bytes at 0x100000, read by the guest" in report
    assert "no times: run QEMU with -msg timestamp=on" in report
    assert "(1 of 108 trace lines not understood)" in report


def test_empty_and_missing_traces(tmp_path: Path) -> None:
    t = parse_fw_cfg_lines([])
    assert t.to_json()["kernel_size"] is None
    report = render_trace_report(t, PREDICTED)
    assert "option ROM  none" in report and "did not go through fw_cfg" in report
    assert "nothing to compare" in report
    with pytest.raises(BootError, match="cannot read the boot trace") as e:
        parse_fw_cfg_trace(tmp_path / "missing.trace")
    assert e.value.hint


def test_qemu_trace_args(tmp_path: Path) -> None:
    args = qemu_trace_args(tmp_path / "t")
    assert args[-4:] == ["-D", str(tmp_path / "t"), "-msg", "timestamp=on"]
    assert "fw_cfg_select" in args and "serial_update_parameters" in args


@pytest.mark.qemu
def test_real_trace_matches_the_kernel_header_prediction(tmp_path: Path) -> None:
    """Boot the Debian 12 kernel (q35, TCG) with a busybox initrd; the trace QEMU writes must
    agree with artifacts.kernel.predict_fw_cfg, and the guest must read the items in order."""
    need_guest_tools()
    from treeboot.artifacts.fwcfg import predict_fw_cfg

    initrd = build_busybox_initrd(tmp_path / "initrd.cpio", "echo TRACE-MARKER")
    trace_file = tmp_path / "fw_cfg.trace"
    cmdline = "console=ttyS0 panic=-1"
    serial = tmp_path / "serial.log"
    log = boot_kernel(initrd, serial, ["-machine", "q35", *qemu_trace_args(trace_file)],
                      append=cmdline)  # fmt: skip
    assert "TRACE-MARKER" in log
    trace = parse_fw_cfg_trace(trace_file)
    prediction = predict_fw_cfg(DI_KERNEL, initrd, cmdline, 256, machine="q35")
    assert compare_prediction(trace, prediction) == []
    assert trace.cmdline == cmdline and trace.unparsed == 0
    assert trace.option_rom is not None and trace.option_rom.name.endswith("linuxboot_dma.bin")
    windows = [trace.read_window(k) for k in (0x18, 0x12, 0x11, 0x15)]  # setup initrd kernel cmd
    assert all(w is not None for w in windows)
    kernel = trace.read_window(0x11)
    assert kernel is not None and trace.uart_after(kernel[0]) is not None
    report = render_trace_report(trace, prediction, serial)
    assert "prediction: all 9 values agree" in report
    assert "first console line: '[    0.000000] Linux version" in report
