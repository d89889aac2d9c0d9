"""`splitdbg dump :PORT OUT.raw`: a consistent memory image of a live QEMU guest (docs/images.md).

gdb attaching to QEMU's gdbstub stops every vCPU; while they are stopped we read each vCPU's
registers and copy the RAM ranges out of the shared memory-backend-file (kernel-side copies, no
Python buffers); detaching lets the guest run on, also when the copy fails.
"""
from __future__ import annotations

import errno
import json
import os
import re
import time
from pathlib import Path

from ..dbg.gdbmi import GdbMI
from ..errors import SplitdbgError
from ..fileio import AtomicFile, check_writable
from ..mem import find_ram_file
from ..mem.gdbstub import CHUNK, GdbstubMemory
from ..mem.image import REGISTERS, ImageFile, ImageMeta, now_iso, q35_meta, sidecar_path


def _copy(src_fd: int, dst_fd: int, offset: int, size: int) -> int:
    """size bytes at offset from src to the same offset of dst, which reads as zeros where nothing
    is written (ftruncate). Only the source's data segments are copied (SEEK_DATA/SEEK_HOLE): pages
    the guest never touched are holes in QEMU's tmpfs RAM file, and stay holes in the image, which
    is then as small on disk, and as fast to write, as the RAM the guest used. Returns bytes copied."""
    end, pos, copied = offset + size, offset, 0
    while pos < end:
        try:
            data = os.lseek(src_fd, pos, os.SEEK_DATA)
            hole = os.lseek(src_fd, data, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:          # no data after pos: the rest is a hole
                break
            data, hole = pos, end                 # a file system without SEEK_DATA: copy it all
        data, hole = max(data, pos), min(hole, end)
        if data >= end:
            break
        _copy_bytes(src_fd, dst_fd, data, hole - data)
        copied += hole - data
        pos = hole
    return copied


def _copy_bytes(src_fd: int, dst_fd: int, offset: int, size: int) -> None:
    """copy_file_range (in the kernel), else sendfile."""
    done = 0
    while done < size:
        n = min(size - done, 1 << 30)
        try:
            got = os.copy_file_range(src_fd, dst_fd, n, offset + done, offset + done)
        except OSError:          # across file systems on older kernels (EXDEV), tmpfs limits...
            os.lseek(dst_fd, offset + done, os.SEEK_SET)
            got = os.sendfile(dst_fd, src_fd, offset + done, n)
        if got <= 0:
            raise SplitdbgError(f"the guest RAM file ended at {offset + done:#x} while copying")
        done += got


def vcpu_count(dbg) -> int:
    """QEMU's gdbstub shows one thread per vCPU."""
    return max(1, len(re.findall(r"^\*?\s+\d+\s+Thread ", dbg.execute("info threads"), re.M)))


def from_the_image(image: str, meta: ImageMeta, vmlinux: str | None) -> tuple[list[str], str]:
    """What the image itself tells about the dump: each vCPU's mode and the kernel command line.

    Modes: outside the module's CPUs "native"; on one of them "svm-host" ("vmx-root" under VMX)
    when RIP is in splitkernel.ko's text (the root-mode handler and VMRUN loop), else "guest"
    ("vmx-non-root"). QEMU does not tell
    gdb whether a vCPU is in SVM guest mode, hence this inference. The command line is the
    kernel's saved_command_line (needs vmlinux)."""
    from .kernel import Kernel
    from .splitkernel import ModuleNotLoaded, SplitKernel

    cpus = meta.cpus
    modes, cmdline = ["native"] * len(cpus), ""
    with ImageFile(image, meta=meta) as mem:
        text = None
        if vmlinux and Path(vmlinux).exists():
            try:
                k = Kernel(mem, vmlinux)
                va = k.u64(k.symbols.address("saved_command_line"))
                # up to the end of its page: the next one need not be mapped
                cmdline = k.cstr(va, 0x1000 - (va & 0xFFF))
                m = next((m for m in k.modules() if m.name == "splitkernel"), None)
                if m is not None:
                    lo = k.module_sections(m).get(".text", m.base)
                    text = (lo, lo + (m.text_size or m.size))
            except SplitdbgError:
                pass
        try:
            sk = SplitKernel(mem)
        except ModuleNotLoaded:
            return modes, cmdline
        host, guest = ("vmx-root", "vmx-non-root") if sk.arch == "vmx" else ("svm-host", "guest")
        for i, c in enumerate(cpus):
            if c["cpu"] in sk.cpus:
                rip = c["regs"].get("rip", 0)
                modes[i] = host if text and text[0] <= rip < text[1] else guest
    return modes, cmdline


def dump_outputs(out: str, serial_log: str | None = None) -> list[Path]:
    """The files a dump to `out` writes: the image, its sidecar, the serial log when there is one."""
    files = [Path(out), sidecar_path(out)]
    if serial_log and Path(serial_log).is_file():
        files.append(Path(out).with_suffix(".serial.log"))
    return files


def dump(target: str, out: str, vmlinux: str | None = None, serial_log: str | None = None,
         prefer: str = "auto", force: bool = False) -> dict:
    """Stop the guest, copy its RAM to `out` and the sidecar next to it, let it run on.

    The RAM comes from QEMU's shared RAM file (q35 layout, sparse copy) when this machine can read
    it; else (or with prefer="gdbstub") through the gdbstub, range by range as `info mtree` shows
    them, packed one after the other in the image (about 10 MB/s: the guest stands still that long).
    `serial_log`: the guest's console log, copied next to the image (x.raw -> x.serial.log) after
    the guest runs again, since the guest's own log goes when the guest goes.
    Existing files are refused before the guest is touched, unless `force`; each file is written
    to a temporary file and renamed into place only once all of them are complete (splitdbg/fileio):
    a dump that fails (a full disk, a guest gone) leaves whatever was there before untouched.
    Returns what was done and how fast: {"image", "sidecar", "bytes", "copied", "seconds", ...}."""
    if prefer not in ("auto", "shared-ram-file", "gdbstub"):
        raise SplitdbgError(f"unknown memory backend {prefer!r}")
    host, _, port = target.rpartition(":")
    if not port.isdigit():
        raise SplitdbgError(f"dump needs a live QEMU target :PORT or HOST:PORT, not {target!r}")
    for f in dump_outputs(out, serial_log):
        check_writable(f, force=force, thing="dump")
    t0 = time.monotonic()
    dbg = GdbMI.connect(f"{host or 'localhost'}:{port}")    # attaching stops every vCPU
    t_stop = time.monotonic()
    before = getattr(dbg, "state_before", None)   # a guest paused before the dump stays paused after it
    try:
        dbg.interrupt()                                     # (a no-op: already stopped)
        found = find_ram_file(dbg) if prefer != "gdbstub" else None
        if found and not (os.access(found[0], os.R_OK) and os.path.getsize(found[0]) == found[1]):
            found = None                                    # QEMU on another machine, or a stale file
        if found is None and prefer == "shared-ram-file":
            raise SplitdbgError("no shared RAM file readable here (QEMU needs memory-backend-file,share=on, "
                                "as qemu-scripts/run-guest.sh starts it)")
        cpus = []
        for cpu in range(vcpu_count(dbg)):
            regs = dbg.read_registers(REGISTERS, cpu=cpu)
            cpus.append({"cpu": cpu, "mode": "native", "regs": {k: regs[k] for k in REGISTERS if k in regs}})
        meta_kw = dict(source=_qemu_version(dbg), created=now_iso(), vmlinux=vmlinux, cpus=cpus)
        t_copy = time.monotonic()
        img = AtomicFile(out, force=force)
        dst = img.fd
        try:
            if found:
                ram_file, ram_size = found
                meta = q35_meta(ram_size, **meta_kw)
                how = f"QEMU RAM file {ram_file}"
                src = os.open(ram_file, os.O_RDONLY)
                try:
                    os.ftruncate(dst, ram_size)
                    copied = sum(_copy(src, dst, r["offset"], r["size"]) for r in meta.ranges)
                finally:
                    os.close(src)
            else:
                meta, copied = _copy_through_gdbstub(dbg, dst, meta_kw)
                how = "RAM read through the gdbstub"
        except OSError as exc:                              # ENOSPC, EDQUOT...: one line, nothing replaced
            raise img.failure(exc) from exc
        copy_s = time.monotonic() - t_copy
    except BaseException:
        dbg.close()                                         # the guest runs on even when the dump fails
        if "img" in locals():
            img.abort()                                     # only our temporary file: never the user's
        raise
    dbg.close()                                             # detaching lets the guest run on (unless it was paused)
    stopped_s = time.monotonic() - t_stop
    pending = [img]
    try:
        modes, meta.kernel_cmdline = from_the_image(img.tmp, meta, vmlinux)
        for c, mode in zip(meta.cpus, modes):
            c["mode"] = mode
        meta.notes.append(f"{how} copied while every vCPU was stopped by gdb ({stopped_s:.2f} s stopped)")
        if meta.cpus and any(c["mode"] != "native" for c in meta.cpus):
            meta.notes.append("CPU modes inferred from RIP (splitkernel.ko's text: svm-host); QEMU does not report SVM guest mode")
        if serial_log and Path(serial_log).is_file():
            keep = Path(out).with_suffix(".serial.log")
            log = AtomicFile(keep, force=force)
            pending.append(log)
            log.write(Path(serial_log).read_bytes())
            meta.serial_log = str(keep.resolve())
        side = sidecar_path(out)
        sc = AtomicFile(side, force=force)
        pending.append(sc)
        sc.write((json.dumps(meta.to_dict(), indent=1) + "\n").encode())
        for f in pending:                                   # the image first: a sidecar never names a missing one
            f.commit()
    except BaseException:
        for f in pending:
            f.abort()
        raise
    ram = sum(r["size"] for r in meta.ranges)
    return {"image": out, "sidecar": str(side), "bytes": ram, "copied": copied, "cpus": len(cpus),
            "backend": "gdbstub" if not found else "shared-ram-file", "seconds": time.monotonic() - t0,
            "copy_seconds": copy_s, "stopped_seconds": stopped_s, "state_before": before,
            "left": "running" if before in ("running", None) else before,
            "mb_per_s": ram / (1 << 20) / copy_s if copy_s else float("inf")}


def _copy_through_gdbstub(dbg, dst: int, meta_kw: dict) -> tuple[ImageMeta, int]:
    """Every RAM range QEMU's `info mtree` shows, read through the stub into the image one after the
    other; pages of zeros are not written (the image stays sparse). (meta, bytes written)."""
    mem = GdbstubMemory(dbg)
    ranges, offset, written = [], 0, 0
    for start, end in mem.ram_ranges():
        ranges.append({"gpa": start, "offset": offset, "size": end - start})
        for pos in range(start, end, CHUNK):
            data = mem.read(pos, min(CHUNK, end - pos))
            for i in range(0, len(data), 4096):        # page by page: zero pages stay holes
                page = data[i:i + 4096]
                if page.count(0) != len(page):
                    os.pwrite(dst, page, offset + pos - start + i)
                    written += len(page)
        offset += end - start
    os.ftruncate(dst, offset)
    return ImageMeta(ranges=ranges, **meta_kw), written


def _qemu_version(dbg) -> str:
    m = re.search(r"(\d+\.\d+)(?:\.\d+)?", dbg.monitor("info version"))
    return f"qemu-{m.group(1)}" if m else "qemu"
