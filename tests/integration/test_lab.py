"""The guest lab itself: boot, markers, command agent, QEMU's monitor, isolation of two guests."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from splitdbg import lab
from splitdbg.errors import SplitdbgError, TargetGone

from .conftest import boot


def test_boot_markers_and_agent(guest4):
    text = guest4.serial_text()
    assert "SPLITDBG: init kernel=6.1." in text
    assert "SPLITDBG: ready" in text
    rc, out = guest4.run("grep -c ^processor /proc/cpuinfo")
    assert (rc, out.strip()) == (0, "2")
    rc, out = guest4.run("echo to-stderr >&2; exit 7")
    assert rc == 7 and out.strip() == "to-stderr"
    # Binary-ish output survives the framing.
    rc, out = guest4.run("printf 'a\\tb\\001\\nSPLITDBG-RC x 0\\n'")
    assert out == "a\tb\x01\nSPLITDBG-RC x 0\n"


def test_kernel_is_ours_and_fixed(guest4):
    # KASLR off: _stext at the link address; the kernel's own view against QEMU's translation.
    rc, out = guest4.run("grep -w _stext /proc/kallsyms")
    assert rc == 0 and out.split()[0] == "ffffffff81000000"
    assert guest4.hmp("gva2gpa 0xffffffff81000000").strip() == "gpa: 0x1000000"


def test_ram_file_is_guest_memory(guest4):
    # The shared file holds guest-physical memory: what QEMU's `xp` shows is at that file offset.
    gpa = 0x1000000
    words = re.findall(r"0x([0-9a-f]{16})", guest4.hmp(f"xp /4gx {gpa:#x}").split(":", 1)[1])
    with open(guest4.ram_file, "rb") as f:
        f.seek(gpa)
        data = f.read(32)
    assert [int(w, 16) for w in words] == [int.from_bytes(data[i:i + 8], "little") for i in range(0, 32, 8)]
    assert os.path.getsize(guest4.ram_file) == guest4.ram_size


def test_two_guests_do_not_collide_and_down_cleans_up(guest4):
    other = boot(paging=4, smp=1, base_port=guest4.port + 1)
    try:
        assert other.port != guest4.port and other.ram_file != guest4.ram_file
        assert Path(other.dir) != Path(guest4.dir)
        assert other.run("grep -c ^processor /proc/cpuinfo")[1].strip() == "1"
        with pytest.raises(SplitdbgError, match="already runs|in use"):
            lab.up(port=other.port, wait=False)
    finally:
        other.down()
    assert not Path(other.ram_file).exists()
    with pytest.raises(TargetGone):
        lab.Guest.find(other.port)
    # The first guest is untouched.
    assert guest4.run("true")[0] == 0


def test_panic_is_reported(tmp_path):
    # A kernel that cannot find init panics: the lab reports it instead of waiting forever.
    g = lab.up(port=lab.free_port(15200), smp=1, append="rdinit=/nonexistent", wait=False)
    try:
        with pytest.raises(SplitdbgError, match="panic|exited"):
            g.wait_ready(timeout=60)
    finally:
        g.down()


def test_clock_source_is_reliable(guest4):
    # Under TCG with 2 vCPUs the TSCs are unsynchronised; the kernel must settle on a real clock
    # (HPET or ACPI PM timer, both in our config) and guest time must follow host time.
    import time
    rc, src = guest4.run("cat /sys/devices/system/clocksource/clocksource0/current_clocksource")
    assert rc == 0 and src.strip() in {"hpet", "acpi_pm", "tsc"}
    t0 = time.monotonic()
    rc, out = guest4.run("a=$(cut -d' ' -f1 /proc/uptime); sleep 2; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b")
    host = time.monotonic() - t0
    a, b = map(float, out.split())
    assert 1.9 <= b - a <= host + 0.2


def test_a_command_that_times_out_says_what_each_cpu_does(guest4):
    # The report names every CPU with its local APIC's in-service and pending vectors: what
    # showed an interrupt acknowledged and never handled (docs/module.md).
    with pytest.raises(lab.LabError) as exc:
        guest4.run("sleep 3", timeout=0.5)
    report = str(exc.value)
    assert re.search(r"CPU 0: (halted|running), local APIC ISR .* IRR .* PPR 0x[0-9a-f]+", report), report
    assert "CPU 1: " in report and "LDR 0x02" in report
    assert guest4.run("echo after")[1].strip() == "after"
