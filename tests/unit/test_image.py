"""Memory images with their sidecars (docs/images.md): format, validation, reads, fallback."""
from __future__ import annotations

import json

import pytest

from splitdbg.errors import MemoryReadError, NotAvailable, SplitdbgError
from splitdbg.mem.image import ImageError, ImageFile, ImageMeta, find_sidecar, q35_meta, sidecar_path
from splitdbg.target.session import Session

REGS = {"rip": 0xFFFFFFFF81000000, "rsp": 0xFFFFC90000003F00, "cr0": 0x80050033, "cr2": 0, "cr3": 0x1234000,
        "cr4": 0x3506F0, "efer": 0x1D01}


def meta(ranges, **kw) -> ImageMeta:
    return ImageMeta(source="bochs-2.7", created="2026-11-25T10:00:00+00:00", ranges=ranges, vmlinux=None,
                     kernel_cmdline="console=ttyS0", cpus=[{"cpu": 0, "mode": "vmx-root", "regs": REGS},
                                                           {"cpu": 1, "mode": "vmx-non-root", "regs": dict(REGS, rip=1)}],
                     notes=["made by a test"], **kw)


@pytest.fixture
def image(tmp_path):
    """Three ranges, the file order unlike the gpa order: [0, 0x2000) at file 0x3000,
    [0x2000, 0x3000) at file 0 (touches the first in gpa), [0x100000, 0x101000) at file 0x1000."""
    raw = bytearray(0x5000)
    raw[0x3000:0x5000] = b"A" * 0x2000
    raw[0x0000:0x1000] = b"B" * 0x1000
    raw[0x1000:0x2000] = b"C" * 0x1000
    path = tmp_path / "x.raw"
    path.write_bytes(bytes(raw))
    m = meta([{"gpa": 0, "offset": 0x3000, "size": 0x2000}, {"gpa": 0x2000, "offset": 0, "size": 0x1000},
              {"gpa": 0x100000, "offset": 0x1000, "size": 0x1000}])
    m.save(sidecar_path(path))
    return path


def test_sidecar_round_trip(tmp_path):
    m = meta([{"gpa": 0, "offset": 0, "size": 4096}], serial_log="/tmp/serial.log")
    m.save(tmp_path / "x.json")
    d = json.loads((tmp_path / "x.json").read_text())
    assert d["format"] == "splitdbg-image" and d["version"] == 1 and d["cpus"][1]["mode"] == "vmx-non-root"
    assert set(d) == {"format", "version", "source", "created", "ranges", "vmlinux", "kernel_cmdline", "cpus",
                      "serial_log", "notes"}
    assert ImageMeta.load(tmp_path / "x.json") == m
    assert m.registers(1)["rip"] == 1 and m.registers()["cr3"] == 0x1234000
    assert m.guest_registers()["rip"] == 1            # the non-root CPU runs the guest kernel
    assert abs(m.created_epoch - 1795600800.0) < 1e6
    with pytest.raises(NotAvailable, match="no CPU 7"):
        m.registers(7)


def test_sidecar_names(tmp_path):
    assert sidecar_path(tmp_path / "x.raw") == tmp_path / "x.json"
    assert sidecar_path(tmp_path / "x") == tmp_path / "x.json"
    (tmp_path / "y.raw").write_bytes(b"")
    assert find_sidecar(tmp_path / "y.raw") is None
    (tmp_path / "y.raw.json").write_text("{}")
    assert find_sidecar(tmp_path / "y.raw") == tmp_path / "y.raw.json"
    (tmp_path / "y.json").write_text("{}")
    assert find_sidecar(tmp_path / "y.raw") == tmp_path / "y.json"


def test_reads_follow_the_ranges_and_span_touching_ones(image):
    with ImageFile(str(image)) as m:
        assert m.ram_ranges() == [(0, 0x3000), (0x100000, 0x101000)]
        assert m.read(0x1FFE, 4) == b"AABB"                 # across two pieces that touch in gpa
        assert m.read(0, 0x3000) == b"A" * 0x2000 + b"B" * 0x1000
        assert m.read(0x100000, 2) == b"CC" and m.read_u64(0x100ff8) == int.from_bytes(b"C" * 8, "little")
        assert m.read_u64(0x1ffc) == int.from_bytes(b"AAAABBBB", "little")
        for addr, size in [(0x2FFE, 4), (0x3000, 1), (0xFFFFF, 2), (0x100FFE, 4)]:
            with pytest.raises(MemoryReadError):
                m.read(addr, size)
        assert m.registers(0)["efer"] == 0x1D01
        assert "3 ranges" in m.describe() and "bochs-2.7" in m.describe()


def test_truncated_image_names_the_range(image):
    with open(image, "r+b") as f:
        f.truncate(0x4800)
    with pytest.raises(ImageError, match=r"truncated: range gpa 0x0-0x2000 needs file bytes 0x3000-0x5000"):
        ImageFile(str(image))


def test_unknown_version_overlap_and_bad_fields(image, tmp_path):
    side = sidecar_path(image)
    good = json.loads(side.read_text())
    cases = [({"version": 2}, "version 2 is not supported"),
             ({"format": "elf"}, "not a splitdbg image sidecar"),
             ({"ranges": [{"gpa": 0, "offset": 0, "size": 0x2000}, {"gpa": 0x1000, "offset": 0x2000, "size": 0x1000}]},
              "ranges overlap in guest-physical memory: 0x0-0x2000 and 0x1000-0x2000"),
             ({"ranges": [{"gpa": -1, "offset": 0, "size": 1}]}, "non-negative integers"),
             ({"ranges": []}, "no ranges"),
             ({"cpus": [{"cpu": 0, "mode": "smm", "regs": {}}]}, "mode"),
             ({"created": None, "source": None, "ranges": None}, "no ranges")]
    for change, msg in cases:
        side.write_text(json.dumps({**good, **change}))
        with pytest.raises(ImageError, match=msg):
            ImageFile(str(image))
    side.write_text(json.dumps({k: v for k, v in good.items() if k != "ranges"}))
    with pytest.raises(ImageError, match="missing ranges"):
        ImageFile(str(image))
    side.write_text("{not json")
    with pytest.raises(ImageError, match="not valid JSON"):
        ImageFile(str(image))


def test_without_sidecar_the_q35_layout_is_assumed(tmp_path):
    path = tmp_path / "ram.raw"
    path.write_bytes(b"Q" * 0x10000)
    with ImageFile(str(path)) as m:
        assert m.meta is None and m.ram_ranges() == [(0, 0x10000)]
        assert "no sidecar: QEMU q35 layout assumed" in m.describe()
        with pytest.raises(NotAvailable, match="no sidecar"):
            m.registers()
    (tmp_path / "empty.raw").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        ImageFile(str(tmp_path / "empty.raw"))
    assert q35_meta(3 << 30, source="qemu-7.2", created="now").ranges == \
        [{"gpa": 0, "offset": 0, "size": 2 << 30}, {"gpa": 4 << 30, "offset": 2 << 30, "size": 1 << 30}]


def test_session_on_an_image(image, tmp_path):
    # No module in this image: the snapshot says so, carries the image's time and registers.
    with Session(str(image), vmlinux="") as s:
        assert s.image is not None and s.regs["rip"] == 1
        snap = s.snapshot()
        assert snap.module is None and snap.taken == s.image.created_epoch
        assert s.guest_control_regs()["cr3"] == 0x1234000
    side = sidecar_path(image)
    side.write_text(json.dumps(dict(json.loads(side.read_text()), vmlinux=str(tmp_path / "gone" / "vmlinux"))))
    with Session(str(image)) as s:      # the image's vmlinux is gone: a note, not a crash
        assert s.kernel is None
        assert any("no longer exists" in n for n in s.snapshot().notes)
    with pytest.raises(SplitdbgError, match="no such file"):
        Session(str(image), vmlinux=str(tmp_path / "nope"))


def test_tui_on_an_image_without_the_module(image):
    """The offline source: one snapshot, the header says image, guest control is refused."""
    import asyncio

    from textual.widgets import Static

    from splitdbg.tui.app import SplitdbgApp
    from splitdbg.tui.source import ImageSource

    async def go():
        src = ImageSource(str(image), vmlinux="")
        calls = []
        poll = src.poll
        src.poll = lambda: calls.append(1) or poll()
        a = SplitdbgApp(src, interval=0.01)
        async with a.run_test(size=(160, 40)) as pilot:
            await pilot.pause(0.5)
            status = str(a.query_one("#status", Static).render())
            assert "module not loaded" in status and "OFFLINE image from bochs-2.7, taken 2026-11-25T10:00:00" in status
            assert len(calls) == 1                     # read once: an image never changes
            await pilot.press("z")
            await pilot.pause(0.2)
            assert any("no guest to stop" in str(n.message) for n in a._notifications)
            assert a.guest_state == "image"
    asyncio.run(go())


def test_what_is_not_an_image(image, tmp_path):
    with pytest.raises(ImageError, match="not a file"):
        ImageFile(str(tmp_path))
    with pytest.raises(ImageError, match="sidecar: give the raw image"):
        ImageFile(str(sidecar_path(image)))
    (tmp_path / "snap.json").write_text('{"format": "splitdbg-snapshot/1"}')
    with pytest.raises(ImageError, match="JSON file"):
        ImageFile(str(tmp_path / "snap.json"))


def test_dump_copies_data_and_keeps_holes(tmp_path):
    """The copy step of `splitdbg dump`: data segments at their offsets, holes stay holes."""
    import os

    from splitdbg.target.dump import _copy

    src, dst = tmp_path / "ram", tmp_path / "img"
    with open(src, "wb") as f:
        f.truncate(64 << 20)
        for off in (0, 5 << 20, (64 << 20) - 4096):
            f.seek(off)
            f.write(os.urandom(4096))
    s, d = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(d, 64 << 20)
        copied = _copy(s, d, 0, 32 << 20) + _copy(s, d, 32 << 20, 32 << 20)
    finally:
        os.close(s)
        os.close(d)
    assert src.read_bytes() == dst.read_bytes()
    assert copied < 1 << 20 and dst.stat().st_blocks * 512 < 1 << 20   # only the data moved


def test_dump_through_the_gdbstub_packs_the_mtree_ranges(tmp_path):
    """Without a readable RAM file, `dump` reads each `info mtree` RAM range through the stub and
    packs them in the image; the sidecar maps them back; zero chunks are left as holes."""
    import os

    from splitdbg.target.dump import _copy_through_gdbstub

    from .test_mem_gdbstub import ScriptedStub

    class Stub(ScriptedStub):
        def execute(self, command):
            if command == "monitor info mtree -f":
                return ('FlatView #0\n AS "memory", root: system\n Root memory region: system\n'
                        '  0000000000000000-0000000000001fff (prio 0, ram): mem\n'
                        '  0000000000003000-0000000000003fff (prio 0, ram): mem\n')
            return super().execute(command)

    stub = Stub(keeps=True)
    stub.phys = bytes(0x1000) + stub.phys[0x1000:]     # a page of zeros: not written
    img = tmp_path / "s.raw"
    fd = os.open(img, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        meta, written = _copy_through_gdbstub(stub, fd, dict(source="qemu-7.2", created="now"))
    finally:
        os.close(fd)
    assert meta.ranges == [{"gpa": 0, "offset": 0, "size": 0x2000}, {"gpa": 0x3000, "offset": 0x2000, "size": 0x1000}]
    assert written == 0x2000 and img.stat().st_size == 0x3000
    with ImageFile(str(img), meta=meta) as m:
        assert m.read(0, 0x2000) == stub.phys[:0x2000] and m.read(0x3000, 0x1000) == stub.phys[0x3000:0x4000]
        with pytest.raises(MemoryReadError):
            m.read(0x2000, 1)


def test_a_sidecar_of_wrong_types_or_deep_nesting_is_a_one_line_error(image, capsys):
    """No TypeError or RecursionError traceback: each a one-line ImageError, exit code 2 from the CLI."""
    from splitdbg.cli import main

    side = sidecar_path(image)
    good = json.loads(side.read_text())
    deep = "[" * 100000 + "]" * 100000
    cases = [(json.dumps({**good, "vmlinux": 5}), "vmlinux must be a path or null, not 5"),
             (json.dumps({**good, "source": ["q"]}), "source must be a string"),
             (json.dumps({**good, "notes": "one"}), "notes must be a list"),
             (json.dumps({**good, "notes": [1]}), "notes must be a list of strings"),
             (json.dumps({**good, "cpus": {"0": 1}}), "cpus must be a list"),
             (json.dumps({**good, "ranges": [{"gpa": True, "offset": 0, "size": 1}]}), "non-negative integers"),
             (json.dumps({**good, "ranges": [{"gpa": -1, "offset": 0, "size": 1, "x": [1] * 1000}]}), r"\.\.\.$"),
             ('{"format": "splitdbg-image", "version": 1, "ranges": ' + deep + "}", "nested too deeply"),
             (deep, "nested too deeply"),
             ('{"format": ' + deep + "}", "nested too deeply"),
             ('{"format": "splitdbg-image", "version": 1, "source": "s", "created": "c", "ranges": [{"gpa": 0, '
              '"offset": 0, "size": 1}], "kernel_cmdline": ' + "[" * 500 + "]" * 500 + "}", "kernel_cmdline must be")]
    for text, msg in cases:
        side.write_text(text)
        with pytest.raises(ImageError, match=msg):
            ImageFile(str(image))
        rc = main(["status", str(image)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and len(err) < 600, err
    side.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ImageError, match="binary"):
        ImageFile(str(image))
