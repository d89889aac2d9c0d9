"""Memory images on disk: offline snapshots of a guest's RAM (docs/images.md).

An image is the raw bytes (IMAGE) plus a JSON sidecar (IMAGE.json: for `x.raw` it is `x.json`;
`x.raw.json` is accepted too) saying where each guest-physical range sits in the file, the vCPUs'
registers and the kernel that ran. QEMU dumps (`splitdbg dump`) and the Bochs helper write the same
schema. A raw file without a sidecar is read as a copy of QEMU's q35 RAM file (layout from its size).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import MemoryReadError, NotAvailable, SplitdbgError
from ..fileio import atomic_write
from .base import q35_ram_ranges
from .shared_file import SharedRamFile

FORMAT = "splitdbg-image"
VERSION = 1
# Where a vCPU was when the image was taken: VMX root / non-root (Intel), SVM host or guest (AMD),
# or a CPU the hypervisor does not run under ("native").
MODES = ("vmx-root", "vmx-non-root", "svm-host", "guest", "native")
REGISTERS = ("rip", "rsp", "cr0", "cr2", "cr3", "cr4", "efer")


class ImageError(SplitdbgError):
    """An image or its sidecar that cannot be used: truncated, overlapping, unknown version."""


@dataclass
class ImageMeta:
    """The sidecar, field by field as in docs/images.md."""

    source: str                       # "qemu-7.2", "bochs-2.7"
    created: str                      # ISO-8601
    ranges: list[dict]                # {"gpa", "offset", "size"}: guest-physical range -> file offset
    vmlinux: str | None = None
    kernel_cmdline: str = ""
    cpus: list[dict] = field(default_factory=list)   # {"cpu", "mode", "regs": {name: int}}
    serial_log: str | None = None
    notes: list[str] = field(default_factory=list)
    format: str = FORMAT
    version: int = VERSION

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        return {"format": d.pop("format"), "version": d.pop("version"), **d}

    @classmethod
    def from_dict(cls, d: dict, where: str = "sidecar") -> "ImageMeta":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ImageError(f"{where}: not a splitdbg image sidecar (format {_short(d.get('format') if isinstance(d, dict) else None)}, "
                             f"expected {FORMAT!r})")
        if d.get("version") != VERSION:
            raise ImageError(f"{where}: image format version {_short(d.get('version'))} is not supported "
                             f"(this splitdbg reads version {VERSION})")
        missing = [k for k in ("source", "created", "ranges") if k not in d]
        if missing:
            raise ImageError(f"{where}: missing {', '.join(missing)}")
        if not isinstance(d["ranges"], list) or not d["ranges"]:
            raise ImageError(f"{where}: no ranges")
        for k, types, want in (("source", (str,), "a string"), ("created", (str,), "a string (ISO-8601)"),
                               ("vmlinux", (str, type(None)), "a path or null"),
                               ("kernel_cmdline", (str,), "a string"), ("cpus", (list,), "a list"),
                               ("serial_log", (str, type(None)), "a path or null"), ("notes", (list,), "a list")):
            if k in d and not isinstance(d[k], types):
                raise ImageError(f"{where}: {k} must be {want}, not {_short(d[k])}")
        if not all(isinstance(n, str) for n in d.get("notes", [])):
            raise ImageError(f"{where}: notes must be a list of strings")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        meta = cls(**known)
        meta.check(where)
        return meta

    def save(self, path: str | os.PathLike) -> None:
        """Whole or not at all (splitdbg/fileio): a full disk leaves the old sidecar as it was.
        Replaces an existing file: the caller decides whether it may (`splitdbg dump` asks first)."""
        atomic_write(path, json.dumps(self.to_dict(), indent=1) + "\n", force=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ImageMeta":
        try:
            d = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ImageError(f"cannot read sidecar {path}: {exc.strerror}") from exc
        except UnicodeDecodeError:
            raise ImageError(f"{path}: not a sidecar (binary, not JSON text)") from None
        except json.JSONDecodeError as exc:
            raise ImageError(f"{path}: not valid JSON: {exc}") from exc
        except RecursionError:
            raise ImageError(f"{path}: not a splitdbg image sidecar (JSON nested too deeply to read)") from None
        return cls.from_dict(d, str(path))

    # -- validation ---------------------------------------------------------------------------
    def check(self, where: str = "sidecar", file_size: int | None = None) -> None:
        """Raise ImageError unless the ranges are well-formed, disjoint in guest-physical space and
        (given file_size) inside the file; and the CPUs' modes and registers are known."""
        if not isinstance(self.ranges, list) or not self.ranges:
            raise ImageError(f"{where}: no ranges")
        for i, r in enumerate(self.ranges):
            if not isinstance(r, dict) or not all(_int(r.get(k)) and r[k] >= 0 for k in ("gpa", "offset", "size")) \
                    or r["size"] == 0:
                raise ImageError(f"{where}: range {i} must have non-negative integers gpa, offset and size > 0: {_short(r)}")
        spans = sorted((r["gpa"], r["gpa"] + r["size"]) for r in self.ranges)
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            if s2 < e1:
                raise ImageError(f"{where}: ranges overlap in guest-physical memory: {s1:#x}-{e1:#x} and {s2:#x}-{e2:#x}")
        if file_size is not None:
            for r in self.ranges:
                if r["offset"] + r["size"] > file_size:
                    raise ImageError(f"{where}: the image is truncated: range {_fmt(r)} needs file bytes "
                                     f"{r['offset']:#x}-{r['offset'] + r['size']:#x}, but the file holds {file_size:#x}")
        for c in self.cpus:
            if not isinstance(c, dict) or not _int(c.get("cpu")) or c.get("mode") not in MODES \
                    or not isinstance(c.get("regs"), dict) or not all(_int(v) for v in c["regs"].values()):
                raise ImageError(f"{where}: cpu entry {_short(c)}: needs cpu (int), mode (one of {', '.join(MODES)}) "
                                 f"and regs (name -> int)")

    # -- what the rest of splitdbg asks -------------------------------------------------------
    def layout(self) -> list[tuple[int, int, int]]:
        """(gpa start, gpa end, file offset), sorted by gpa: the form SharedRamFile uses."""
        return sorted((r["gpa"], r["gpa"] + r["size"], r["offset"]) for r in self.ranges)

    def registers(self, cpu: int | None = None) -> dict[str, int]:
        if not self.cpus:
            raise NotAvailable("the image's sidecar records no CPU registers")
        if cpu is None:
            return dict(self.cpus[0]["regs"])
        for c in self.cpus:
            if c["cpu"] == cpu:
                return dict(c["regs"])
        raise NotAvailable(f"the image records no CPU {cpu} (it has {', '.join(str(c['cpu']) for c in self.cpus)})")

    def guest_registers(self) -> dict[str, int]:
        """Registers of a CPU that was running the guest kernel when the image was taken (its CR0,
        CR4, EFER are the guest's); else the first CPU's. {} when none are recorded."""
        for c in self.cpus:
            if c["mode"] in ("guest", "vmx-non-root", "native"):
                return dict(c["regs"])
        return dict(self.cpus[0]["regs"]) if self.cpus else {}

    @property
    def created_epoch(self) -> float | None:
        try:
            t = datetime.fromisoformat(self.created)
        except (TypeError, ValueError):
            return None
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _short(v, n: int = 120) -> str:
    """repr of a value from a sidecar, cut short: a bad field may be huge (or deeply nested)."""
    try:
        text = repr(v)
    except RecursionError:
        text = f"<deeply nested {type(v).__name__}>"
    return text if len(text) <= n else text[:n] + "..."


def _fmt(r: dict) -> str:
    return f"gpa {r['gpa']:#x}-{r['gpa'] + r['size']:#x}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sidecar_path(image: str | os.PathLike) -> Path:
    """Where the sidecar of `image` is written: x.raw -> x.json (x -> x.json)."""
    p = Path(image)
    side = p.with_suffix(".json")
    return side if side != p else p.with_name(p.name + ".json")


def find_sidecar(image: str | os.PathLike) -> Path | None:
    """The sidecar of `image` when there is one: x.json first, then x.raw.json."""
    p = Path(image)
    for cand in (sidecar_path(p), p.with_name(p.name + ".json")):
        if cand != p and cand.is_file():
            return cand
    return None


class ImageFile(SharedRamFile):
    """A memory image, mmapped read-only. With a sidecar: its ranges and registers. Without one:
    the q35 layout of QEMU's RAM file, so `cp /dev/shm/splitdbg-* x.raw` is an image too."""

    name = "image"

    def __init__(self, path: str, meta: ImageMeta | None = None):
        side = None
        if meta is None:
            side = find_sidecar(path)
            meta = ImageMeta.load(side) if side else None
        self.meta, self.sidecar = meta, side
        if not os.path.isfile(path):
            raise ImageError(f"memory image {path} is not a file")
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(4096).lstrip()
        except OSError as exc:
            raise ImageError(f"cannot open memory image {path}: {exc.strerror}") from exc
        if meta is None and head.startswith(b"{"):
            # A JSON file is never guest RAM: a sidecar or a snapshot given instead of the image.
            if FORMAT.encode() in head:
                raise ImageError(f"{path} is an image's sidecar: give the raw image next to it")
            raise ImageError(f"{path} is a JSON file (a snapshot? `splitdbg diff` reads those), not a memory image")
        if meta is not None:
            meta.check(str(side or path), file_size=size)
        elif size == 0:
            raise ImageError(f"memory image {path} is empty")
        super().__init__(path)
        if meta is not None:
            self._layout = meta.layout()
            self.ram_size = sum(e - s for s, e, _ in self._layout)

    def ram_ranges(self):
        # Pieces that touch in guest-physical space read as one range (a read may span them).
        merged: list[tuple[int, int]] = []
        for s, e, _ in self._layout:
            if merged and merged[-1][1] == s:
                merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        return merged

    def _read(self, addr, size):
        out = bytearray()
        pos, end = addr, addr + size
        for s, e, off in self._layout:
            if s <= pos < e:
                n = min(e, end) - pos
                try:
                    out += self._view[off + pos - s:off + pos - s + n]
                except ValueError as exc:  # the mapping was closed
                    raise MemoryReadError(addr, size, str(exc)) from exc
                pos += n
                if pos == end:
                    return bytes(out)
        raise MemoryReadError(addr, size, "outside the image's ranges")

    def registers(self, cpu: int | None = None) -> dict[str, int]:
        if self.meta is None:
            raise NotAvailable(f"memory image {self.path} has no sidecar: no CPU registers")
        return self.meta.registers(cpu)

    def describe(self):
        if self.meta is None:
            return (f"memory image {self.path} ({self.ram_size >> 20} MiB, no sidecar: "
                    f"QEMU q35 layout assumed from the file size)")
        m = self.meta
        return f"memory image {self.path} ({self.ram_size >> 20} MiB in {len(m.ranges)} ranges, {m.source}, {m.created})"


def q35_meta(ram_size: int, **kw) -> ImageMeta:
    """A sidecar for a copy of QEMU's q35 RAM file of `ram_size` bytes."""
    ranges = [{"gpa": s, "offset": off, "size": e - s} for s, e, off in q35_ram_ranges(ram_size)]
    return ImageMeta(ranges=ranges, **kw)
