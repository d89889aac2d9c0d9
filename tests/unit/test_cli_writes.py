"""What `splitdbg snapshot -o` and `splitdbg dump` write, and what they refuse to replace: nothing of
the user's is lost (a full disk leaves the old files byte for byte; an image, its sidecar or a file
splitdbg did not write is replaced only with --force). No guest: gdb is a stand-in."""
from __future__ import annotations

import errno
import os

import pytest

import splitdbg.target.dump as dump_mod
from splitdbg.cli import inspect as inspect_cmd
from splitdbg.cli import main
from splitdbg.mem.image import ImageMeta

from .test_check_rules import container, snapshot

RAM = 1 << 20


def one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("splitdbg: "), err
    for w in words:
        assert w in err, err
    return err


# -- snapshot -o --------------------------------------------------------------------------------------
@pytest.fixture
def fake_snapshot(monkeypatch):
    snap = snapshot([container(0, [])], [])
    monkeypatch.setattr(inspect_cmd, "_snapshot", lambda args, **kw: snap)
    return snap


@pytest.fixture
def image(tmp_path):
    raw = tmp_path / "g.raw"
    raw.write_bytes(os.urandom(8192))
    ImageMeta(source="qemu-7.2", created="2026-11-25T10:00:00+00:00",
              ranges=[{"gpa": 0, "offset": 0, "size": 8192}]).save(tmp_path / "g.json")
    return raw


@pytest.mark.parametrize("which", ["image", "sidecar", "target", "other"])
def test_snapshot_refuses_an_image_its_sidecar_the_target_and_foreign_files(which, image, tmp_path, capsys,
                                                                             fake_snapshot):
    out = {"image": image, "sidecar": tmp_path / "g.json", "target": image, "other": tmp_path / "notes.txt"}[which]
    if which == "other":
        out.write_text("mine\n")
    before = out.read_bytes()
    target = str(image) if which == "target" else ":1234"
    rc = main(["snapshot", target, "-o", str(out)])
    one_line_error(capsys, rc, str(out), "--force",
                   {"image": "a memory image", "sidecar": "sidecar", "target": "the target being read",
                    "other": "a file splitdbg did not write"}[which])
    assert out.read_bytes() == before


def test_snapshot_replaces_an_older_snapshot_and_with_force_anything(image, tmp_path, capsys, fake_snapshot):
    out = tmp_path / "s.json"
    assert main(["snapshot", ":1234", "-o", str(out)]) == 0
    assert main(["snapshot", ":1234", "-o", str(out)]) == 0          # a snapshot over a snapshot: fine
    assert out.read_text() == fake_snapshot.to_json()
    assert main(["snapshot", ":1234", "-o", str(image), "--force"]) == 0
    assert image.read_text() == fake_snapshot.to_json()


def test_snapshot_on_a_full_disk_keeps_the_old_snapshot(tmp_path, capsys, fake_snapshot, monkeypatch):
    import splitdbg.fileio as fileio

    out = tmp_path / "s.json"
    out.write_text('{\n "format": "splitdbg-snapshot/1", "old": true}')
    before = out.read_bytes()

    def write(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(fileio.os, "write", write)
    rc = main(["snapshot", ":1234", "-o", str(out)])
    one_line_error(capsys, rc, "No space left on device", "unchanged")
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["s.json"]


# -- dump ---------------------------------------------------------------------------------------------
class FakeGdb:
    """What dump() asks of gdb attached to QEMU's gdbstub: one vCPU, its registers, QEMU's version."""

    closed = False

    def interrupt(self):
        pass

    def execute(self, command):
        return "* 1    Thread 1.1 (CPU#0 [running]) 0xffffffff81000000 in ?? ()\n"

    def read_registers(self, names, cpu=None):
        return {n: 0x1000 for n in names}

    def monitor(self, command):
        return "7.2.0\n"

    def close(self):
        FakeGdb.closed = True


@pytest.fixture
def qemu(tmp_path, monkeypatch):
    """A QEMU RAM file of 1 MiB with data at its start and end; dump() finds it through gdb."""
    ram = tmp_path / "ram"
    with open(ram, "wb") as f:
        f.truncate(RAM)
        f.write(b"R" * 4096)
        f.seek(RAM - 4096)
        f.write(b"E" * 4096)
    FakeGdb.closed = False
    monkeypatch.setattr(dump_mod.GdbMI, "connect", staticmethod(lambda where: FakeGdb()))
    monkeypatch.setattr(dump_mod, "find_ram_file", lambda dbg: (str(ram), RAM))
    monkeypatch.setattr("splitdbg.target.session.default_vmlinux", lambda: None)
    (tmp_path / "out").mkdir()
    return ram


def listing(d):
    return sorted(os.listdir(d))


def test_dump_writes_the_image_and_its_sidecar(qemu, tmp_path, capsys):
    out = tmp_path / "out" / "x.raw"
    assert main(["dump", ":1", str(out), "--json"]) == 0
    assert out.read_bytes() == qemu.read_bytes() and FakeGdb.closed
    assert ImageMeta.load(tmp_path / "out" / "x.json").ranges == [{"gpa": 0, "offset": 0, "size": RAM}]
    assert listing(tmp_path / "out") == ["x.json", "x.raw"]


@pytest.mark.parametrize("existing", ["x.raw", "x.json"])
def test_dump_refuses_an_existing_image_or_sidecar_before_touching_the_guest(existing, qemu, tmp_path, capsys,
                                                                            monkeypatch):
    d = tmp_path / "out"
    (d / existing).write_bytes(b"precious")
    monkeypatch.setattr(dump_mod.GdbMI, "connect", staticmethod(lambda where: pytest.fail("the guest was stopped")))
    rc = main(["dump", ":1", str(d / "x.raw")])
    one_line_error(capsys, rc, existing, "--force")
    assert listing(d) == [existing] and (d / existing).read_bytes() == b"precious"


def test_dump_on_a_full_disk_keeps_the_old_image_and_sidecar(qemu, tmp_path, capsys, monkeypatch):
    d = tmp_path / "out"
    (d / "x.raw").write_bytes(b"old image")
    (d / "x.json").write_text("old sidecar")
    real = dump_mod._copy_bytes

    def copy_bytes(src, dst, offset, size):
        real(src, dst, offset, min(size, 1024))           # some data went out, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(dump_mod, "_copy_bytes", copy_bytes)
    rc = main(["dump", ":1", str(d / "x.raw"), "--force"])
    one_line_error(capsys, rc, "No space left on device", "x.raw unchanged")
    assert (d / "x.raw").read_bytes() == b"old image" and (d / "x.json").read_text() == "old sidecar"
    assert listing(d) == ["x.json", "x.raw"] and FakeGdb.closed     # no temporary file; the guest runs on


def test_dump_whose_sidecar_cannot_be_written_replaces_nothing(qemu, tmp_path, capsys, monkeypatch):
    import splitdbg.fileio as fileio

    d = tmp_path / "out"
    (d / "x.raw").write_bytes(b"old image")
    real = fileio.os.write
    monkeypatch.setattr(fileio.os, "write", lambda fd, data: (_ for _ in ()).throw(
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))))
    rc = main(["dump", ":1", str(d / "x.raw"), "--force"])
    one_line_error(capsys, rc, "x.json", "quota")
    monkeypatch.setattr(fileio.os, "write", real)
    assert (d / "x.raw").read_bytes() == b"old image" and listing(d) == ["x.raw"]


def test_dump_with_force_replaces_both(qemu, tmp_path, capsys):
    d = tmp_path / "out"
    (d / "x.raw").write_bytes(b"old image")
    (d / "x.json").write_text("old sidecar")
    assert main(["dump", ":1", str(d / "x.raw"), "--force", "--json"]) == 0
    assert (d / "x.raw").read_bytes() == qemu.read_bytes()
    assert ImageMeta.load(d / "x.json").source == "qemu-7.2"


def test_record_appends_only_to_a_recording(image, tmp_path, capsys, monkeypatch):
    import splitdbg.tui.source as source

    monkeypatch.setattr(source, "record", lambda *a, **kw: 0)
    rc = main(["record", ":1234", "-o", str(image), "--seconds", "0"])
    one_line_error(capsys, rc, "a memory image", "--force")
    rec = tmp_path / "r.jsonl"
    rec.write_text('{"format": "splitdbg-snapshot/1"}\n')
    assert main(["record", ":1234", "-o", str(rec), "--seconds", "0"]) == 0


def test_the_sidecar_refusal_keeps_its_words(image, tmp_path, capsys, fake_snapshot):
    rc = main(["snapshot", str(image), "-o", str(tmp_path / "g.json")])
    one_line_error(capsys, rc, "sidecar: write the snapshot elsewhere")     # as tests/integration/test_image.py reads it
