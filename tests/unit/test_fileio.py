"""Files splitdbg writes (splitdbg/fileio.py): whole or not at all; nothing of the user's replaced."""
from __future__ import annotations

import errno
import os

import pytest

from splitdbg import fileio
from splitdbg.fileio import WriteFailed, WriteRefused, atomic_write, is_snapshot


def no_space(monkeypatch, after: int = 0):
    """os.write fails with ENOSPC once `after` bytes have gone out: a disk that fills up."""
    real, sent = os.write, [0]

    def write(fd, data):
        if sent[0] + len(data) > after:
            if sent[0] < after:                      # a short write first, as a filling disk does
                n = real(fd, bytes(data[:after - sent[0]]))
                sent[0] += n
                return n
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        sent[0] += len(data)
        return real(fd, data)
    monkeypatch.setattr(fileio.os, "write", write)


def test_a_full_disk_leaves_the_old_file_byte_identical(tmp_path, monkeypatch):
    old = os.urandom(10000)
    p = tmp_path / "a.json"
    p.write_bytes(old)
    no_space(monkeypatch, after=4096)
    with pytest.raises(WriteFailed) as e:
        atomic_write(p, b"x" * 100000, force=True)
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and "unchanged" in msg
    assert p.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["a.json"]          # no temporary file left behind


def test_a_failing_fsync_leaves_no_file_where_there_was_none(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(fileio.os, "fsync", fsync)
    with pytest.raises(WriteFailed, match="not written"):
        atomic_write(tmp_path / "new.json", "{}")
    assert os.listdir(tmp_path) == []


def test_refuses_a_file_splitdbg_did_not_write_unless_forced(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("my notes\n")
    with pytest.raises(WriteRefused, match=r"notes.txt exists and is a file splitdbg did not write.*--force"):
        atomic_write(p, "{}", ours=is_snapshot)
    assert p.read_text() == "my notes\n"
    atomic_write(p, "{}", force=True)
    assert p.read_text() == "{}"


def test_a_snapshot_may_replace_a_snapshot_and_new_files_get_the_umask_mode(tmp_path):
    p = tmp_path / "s.json"
    atomic_write(p, '{\n "format": "splitdbg-snapshot/1"}', ours=is_snapshot)
    atomic_write(p, '{\n "format": "splitdbg-snapshot/1", "taken": 2}', ours=is_snapshot)
    assert "taken" in p.read_text()
    umask = os.umask(0o022)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


def test_what_is_names_images_sidecars_and_directories(tmp_path):
    (tmp_path / "g.raw").write_bytes(b"\0" * 4096)
    (tmp_path / "g.json").write_text('{"format": "splitdbg-image", "version": 1}')
    assert fileio.what_is(tmp_path / "g.raw") == "a memory image"
    assert fileio.what_is(tmp_path / "g.json") == "a memory image's sidecar"
    with pytest.raises(WriteRefused, match="is a directory"):
        atomic_write(tmp_path, "x", force=True)
