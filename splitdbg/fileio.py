"""Files splitdbg writes: whole or not at all, and never over a file the user did not let it replace.

A shared helper next to errors.py: every layer may use it (the sidecar writer in splitdbg/mem, the
dump in splitdbg/target, the CLI, the TUI and the gdb plugin); it imports nothing of splitdbg but
the errors.

- `atomic_write(path, data)`: the data go to a temporary file in the same directory, are fsynced,
  then renamed over `path` (os.replace). On any failure (a full disk, a quota, a signal) the
  temporary file is removed and `path` is left as it was: the old file byte for byte, or none.
- `AtomicFile(path)`: the same for writers that need a file descriptor (the memory image of
  `splitdbg dump`); `commit()` renames it into place, `abort()` removes it.
- Both refuse to replace an existing file unless `force` is given or `ours(path)` says it is one
  splitdbg wrote and may replace (a snapshot over an older snapshot, say).
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import SplitdbgError

# The markers splitdbg's own JSON files carry in their first bytes (splitdbg/mem/image.py FORMAT,
# splitdbg/target/snapshot.py FORMAT): spelled here so that this module stays below both.
IMAGE_SIDECAR_MARK = b'"splitdbg-image"'
SNAPSHOT_MARK = b'"splitdbg-snapshot/1"'


class WriteRefused(SplitdbgError):
    """An existing file splitdbg will not replace without --force."""


class WriteFailed(SplitdbgError):
    """Writing failed (full disk...); the old file, if any, is untouched."""


def _head(path: str | os.PathLike, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def is_snapshot(path: str | os.PathLike) -> bool:
    """A snapshot JSON as `splitdbg snapshot` writes it (`{"format": "splitdbg-snapshot/1", ...`)."""
    head = _head(path, 256).lstrip()
    return head.startswith(b"{") and SNAPSHOT_MARK in head


def is_recording(path: str | os.PathLike) -> bool:
    """A recording (`splitdbg record`): JSON lines, each a snapshot; or an empty file."""
    head = _head(path, 256)
    return head == b"" or (head.startswith(b"{") and SNAPSHOT_MARK in head)


def what_is(path: str | os.PathLike) -> str:
    """A few words on what an existing file is, for the refusal's message."""
    p = Path(path)
    if p.is_dir():
        return "a directory"
    head = _head(p)
    if head.lstrip().startswith(b"{") and IMAGE_SIDECAR_MARK in head:
        return "a memory image's sidecar"
    if head.lstrip().startswith(b"{") and SNAPSHOT_MARK in head:
        return "a splitdbg snapshot"
    side = p.with_suffix(".json")
    if (side != p and side.is_file() and IMAGE_SIDECAR_MARK in _head(side)) or \
            (p.with_name(p.name + ".json").is_file() and IMAGE_SIDECAR_MARK in _head(p.with_name(p.name + ".json"))):
        return "a memory image"
    return "a file splitdbg did not write"


def check_writable(path: str | os.PathLike, *, force: bool = False,
                   ours: Callable[[str | os.PathLike], bool] | None = None, what: str | None = None,
                   thing: str = "output") -> None:
    """Raise WriteRefused when `path` exists and may not be replaced: without `force`, unless
    `ours(path)` says splitdbg wrote it. A directory is never replaced."""
    p = Path(path)
    if p.is_dir():
        raise WriteRefused(f"{path} is a directory: give a file name")
    if not os.path.lexists(p) or force:
        return
    if ours is not None and ours(p):
        return
    raise WriteRefused(f"{path} exists and is {what or what_is(p)}: write the {thing} elsewhere "
                       f"(--force replaces it)")


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _describe(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


class AtomicFile:
    """A temporary file next to `path` that becomes `path` on commit() (fsync, then os.replace)
    and disappears on abort() or when the with-block raises. `fd` and `tmp` are the temporary
    file's descriptor and name; write through them."""

    def __init__(self, path: str | os.PathLike, *, force: bool = False,
                 ours: Callable[[str | os.PathLike], bool] | None = None, mode: int = 0o666):
        check_writable(path, force=force, ours=ours)
        self.path = Path(path)
        self.done = False
        try:
            self.fd, self.tmp = tempfile.mkstemp(dir=self.path.parent or ".", prefix=f".{self.path.name}.",
                                                 suffix=".splitdbg-tmp")
        except OSError as exc:
            raise WriteFailed(f"cannot write {path}: {_describe(exc)}") from exc
        try:
            os.fchmod(self.fd, mode & ~_umask())      # as open(path, "w") would have made it
        except OSError:
            pass

    def failure(self, exc: OSError) -> "WriteFailed":
        """Abort, and the one-line error that says so (the old file, if any, is untouched)."""
        self.abort()
        left = "unchanged" if self.path.exists() else "not written"
        return WriteFailed(f"cannot write {self.path}: {_describe(exc)} ({self.path} {left})")

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            raise self.failure(exc) from exc

    def commit(self) -> None:
        if self.done:
            return
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise self.failure(exc) from exc
        self.done = True
        try:                                  # the rename itself, on disk
            dfd = os.open(self.path.parent or ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write(path: str | os.PathLike, data: bytes | str, *, force: bool = False,
                 ours: Callable[[str | os.PathLike], bool] | None = None) -> None:
    """Write `data` to `path` whole or not at all (see the module's docstring). Raises WriteRefused
    (an existing file that is not ours, without force) or WriteFailed (the old file untouched)."""
    if isinstance(data, str):
        data = data.encode()
    with AtomicFile(path, force=force, ours=ours) as f:
        f.write(data)
