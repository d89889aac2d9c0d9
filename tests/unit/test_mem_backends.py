"""Memory backends on files and buffers we make (no QEMU here)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from splitdbg.errors import MemoryReadError, NotAvailable, SplitdbgError
from splitdbg.mem import ImageFile, SharedRamFile, SyntheticMemory, open_memory, q35_ram_ranges
from splitdbg.mem.base import PhysicalMemory
from splitdbg.mem.gdbstub import parse_mtree_ram

DATA = Path(__file__).parent / "data"
GiB = 1 << 30


def test_q35_layout_follows_qemu():
    # hw/i386/pc_q35.c (7.2): all RAM below 4 GiB while it fits under 0xb0000000, else 2 GiB low.
    assert q35_ram_ranges(512 << 20) == [(0, 512 << 20, 0)]
    assert q35_ram_ranges(0xAFFFF000) == [(0, 0xAFFFF000, 0)]
    assert q35_ram_ranges(3 * GiB) == [(0, 2 * GiB, 0), (4 * GiB, 5 * GiB, 2 * GiB)]
    # The boundary: exactly 0xb0000000 bytes no longer all fit below the hole (">=" in pc_q35.c).
    assert q35_ram_ranges(0xB0000000) == [(0, 2 * GiB, 0), (4 * GiB, 4 * GiB + 0x30000000, 2 * GiB)]


@pytest.fixture
def big_ram_file(tmp_path):
    # A sparse 3 GiB "RAM file" (costs no disk): markers at known file offsets.
    path = tmp_path / "ram"
    with open(path, "wb") as f:
        f.truncate(3 * GiB)
        for off, tag in [(0, b"LOW0"), (2 * GiB - 4, b"ENDL"), (2 * GiB, b"HIGH"), (3 * GiB - 4, b"LAST")]:
            f.seek(off)
            f.write(tag)
    return path


def test_shared_file_maps_the_q35_layout(big_ram_file):
    with SharedRamFile(str(big_ram_file)) as m:
        assert m.ram_ranges() == [(0, 2 * GiB), (4 * GiB, 5 * GiB)]
        assert m.read(0, 4) == b"LOW0"
        assert m.read(2 * GiB - 4, 4) == b"ENDL"
        assert m.read(4 * GiB, 4) == b"HIGH"          # file offset 2 GiB
        assert m.read(5 * GiB - 4, 4) == b"LAST"
        for addr, size in [(2 * GiB - 2, 4), (2 * GiB, 1), (4 * GiB - 1, 2), (5 * GiB - 2, 4), (-1, 1)]:
            with pytest.raises(MemoryReadError):
                m.read(addr, size)
        with pytest.raises(NotAvailable):
            m.registers()
        assert "shared RAM file" in m.describe() and "3072 MiB" in m.describe()


def test_shared_file_is_read_only_and_sees_later_writes(tmp_path):
    path = tmp_path / "ram"
    path.write_bytes(bytes(1 << 20))
    m = SharedRamFile(str(path))
    with pytest.raises(TypeError):
        m._map[0] = 1  # PROT_READ mapping
    with open(path, "r+b") as f:  # the guest writes while we watch: the mapping shows it
        f.seek(0x1234)
        f.write(b"\xAA" * 8)
    assert m.read_u64(0x1234) == 0xAAAAAAAAAAAAAAAA
    assert np.array_equal(m.read_u64_array(0x1230, 2), np.array([0xAAAAAAAA00000000, 0xAAAAAAAA], dtype="<u8"))


def test_missing_or_short_files_are_clear_errors(tmp_path):
    with pytest.raises(SplitdbgError, match="cannot open guest RAM file"):
        SharedRamFile(str(tmp_path / "none"))
    (tmp_path / "small").write_bytes(b"x" * 4096)
    with pytest.raises(SplitdbgError, match="expected"):
        SharedRamFile(str(tmp_path / "small"), ram_size=8192)


def test_image_file_reads_like_the_ram_file(big_ram_file):
    img = ImageFile(str(big_ram_file))
    assert img.read(4 * GiB, 4) == b"HIGH" and img.name == "image" and "memory image" in img.describe()


def test_synthetic_memory():
    m = SyntheticMemory(1 << 20)
    m.write(0xFFE, b"abcd")  # across a page boundary
    assert m.read(0xFFC, 8) == b"\0\0abcd\0\0"
    m.write_u64(0x2000, 2**64 - 1)
    assert m.read_u64(0x2000) == 2**64 - 1
    with pytest.raises(MemoryReadError):
        m.read((1 << 20) - 4, 8)
    assert len(m.pages) == 3


def test_mtree_parser_on_real_qemu_output():
    text = (DATA / "info_mtree_f.txt").read_text()
    # 512 MiB guest: "mem" (RAM and its PAM-shadowed ROM pieces) is one block at 0.
    assert parse_mtree_ram(text) == [(0, 512 << 20)]


class FakeDbg:
    """Answers monitor commands as QEMU 7.2 does (texts captured from it)."""

    def __init__(self, path, share="true", size=None):
        self.path, self.share, self.size = path, share, size

    def monitor(self, cmd):
        return {"qom-list /objects": "type (string)\r\nmem (child<memory-backend-file>)\r\n",
                "qom-get /objects/mem mem-path": f'"{self.path}"\r\n',
                "qom-get /objects/mem share": f"{self.share}\r\n",
                "qom-get /objects/mem size": f"{self.size or os.path.getsize(self.path)}\r\n",
                "qom-get /machine memory-backend": '"/objects/mem"\r\n',
                "info mtree -f": (DATA / "info_mtree_f.txt").read_text()}[cmd]


def test_open_memory_prefers_the_shared_file(tmp_path):
    path = tmp_path / "ram"
    path.write_bytes(bytes(512 << 20))
    m = open_memory(FakeDbg(str(path)))
    assert m.name == "shared-ram-file"
    with pytest.raises(SplitdbgError, match="no shared RAM file"):
        open_memory(FakeDbg(str(path), share="false"), prefer="shared-ram-file")
    with pytest.raises(SplitdbgError, match="nothing to read memory with"):
        open_memory(None)
    # A file whose size is not the backend's (a stale file of an earlier guest) is not trusted.
    with pytest.raises(SplitdbgError, match="stale"):
        open_memory(FakeDbg(str(path), size=256 << 20), prefer="shared-ram-file")
    assert open_memory(FakeDbg(str(path), size=256 << 20)).name == "gdbstub"
    assert open_memory(FakeDbg(str(path)), prefer="gdbstub").name == "gdbstub"
    # An explicit file needs no gdb at all; registers then are not available.
    with open_memory(ram_file=str(path)) as m:
        assert m.name == "shared-ram-file"
        with pytest.raises(NotAvailable):
            m.registers()


def test_mtree_parser_on_a_3g_guest_with_ram_above_4g():
    # QEMU 7.2, q35, 3 GiB, stopped before the BIOS ran (-S): the legacy VGA window and the
    # BIOS-shadow area are not RAM yet; 2 GiB below the PCI hole, 1 GiB from 4 GiB. The same
    # guest's RAM file read through SharedRamFile matched the gdbstub at 0x1000, 0x7ffffff8,
    # 0x100000000 (file offset 2 GiB) and 0x13ffffff8.
    text = (DATA / "info_mtree_f_3g.txt").read_text()
    assert parse_mtree_ram(text) == [(0, 0xA0000), (0x100000, 2 * GiB), (4 * GiB, 5 * GiB)]


def test_synthetic_u64_helpers_and_bounds():
    m = SyntheticMemory(1 << 20)
    m.write_u64_array(0x3000, range(512))
    assert m.read_u64_array(0x3000, 512).tolist() == list(range(512))
    m.write_u64(0xFFFF8, -1)  # last word of RAM; values are taken modulo 2**64
    assert m.read(0xFFFF8, 8) == b"\xff" * 8
    with pytest.raises(MemoryReadError):
        m.read_u64(0xFFFFC)  # would run past the end: no short read
    with pytest.raises(ValueError):
        m.write(0x100000, b"x")
    assert "synthetic" in m.describe()


def test_shared_file_reads_match_the_file_property(tmp_path):
    # Random reads near every edge of the q35 layout: bytes come from file offset gpa (low) or
    # gpa - 4 GiB + 2 GiB (high); a read touching the hole or the end raises, never comes back short.
    from hypothesis import given, settings
    from hypothesis import strategies as st

    path = tmp_path / "ram"
    with open(path, "wb") as f:
        f.truncate(3 * GiB)
        for off in (0, 2 * GiB - 4096, 2 * GiB, 3 * GiB - 4096):
            f.seek(off)
            f.write(os.urandom(4096))
    edges = [0, 2 * GiB, 4 * GiB, 5 * GiB]
    m = SharedRamFile(str(path))
    fd = open(path, "rb")

    @settings(max_examples=300, deadline=None)
    @given(edge=st.sampled_from(edges), delta=st.integers(-5000, 5000), size=st.integers(1, 9000))
    def check(edge, delta, size):
        addr = edge + delta
        inside = [(0, 2 * GiB, 0), (4 * GiB, 5 * GiB, 2 * GiB)]
        where = [off + addr - s for s, e, off in inside if s <= addr and addr + size <= e]
        if addr < 0 or not where:
            with pytest.raises(MemoryReadError):
                m.read(addr, size)
            return
        fd.seek(where[0])
        expected = fd.read(size)
        assert m.read(addr, size) == expected
        if size >= 8:  # the u64 fast paths agree with the file too
            assert m.read_u64(addr) == int.from_bytes(expected[:8], "little")
            assert m.read_u64_array(addr, size // 8).tobytes() == expected[:size // 8 * 8]

    try:
        check()
    finally:
        fd.close()
        m.close()


def test_page_heads_from_the_mapping_equal_a_copy(tmp_path):
    # The strided view of the mapping (find_descriptor's scan) must say what a plain read says,
    # in the high range too (file offset 2 GiB), and let the file be closed afterwards.
    path = tmp_path / "ram"
    with open(path, "wb") as f:
        f.truncate(3 * GiB)
        for off in (0x3000, 0x7FF000, 2 * GiB + 0x5000):
            f.seek(off)
            f.write((0x4E524B54494C5053).to_bytes(8, "little"))
    m = SharedRamFile(str(path))
    for start, end in [(0, 8 << 20), (4 * GiB, 4 * GiB + (8 << 20)), (0x1000, 0x9000)]:
        fast = m.page_heads(start, end)
        slow = PhysicalMemory.page_heads(m, start, end)
        assert fast.tolist() == slow.tolist() and len(fast) == (end - start) // 4096
    assert [i for i, w in enumerate(m.page_heads(0, 8 << 20).tolist()) if w] == [3, 0x7FF]
    m.close()
