"""The guest lab under Bochs 2.7 (Intel CPU with VMX+EPT): boot, stop, dump guest-physical memory.

`capture()` boots the guest of ``build/guest.json`` under Bochs (`qemu-scripts/run-bochs.sh`, which
builds an isolinux ISO and a bochsrc), drives the Bochs debugger (`splitdbg.dbg.bochs`), lets the
guest run the requested command followed by ``sk-bochs-break`` (a magic breakpoint, then CPUID),
and dumps guest-physical memory while Bochs is stopped:

- without the split-kernel module the guest is native and the magic breakpoint is the stop point;
- with it (VMX), `vmexitbp` is switched on at the magic breakpoint and the CPUID that follows exits
  to VMX root mode: the dump is taken there, in the module's handler (host CR3), where the direct
  map also covers the module's private pool that the EPT hides from the guest.

Bochs's `writemem` dumps *linear* memory of the current context. The kernel has no KASLR and
4-level paging with the direct map at 0xffff888000000000, so the direct map of each E820 "usable"
range (from the boot log) is its physical memory. A page the direct map does not cover ends a
`writemem`; the dump goes on after it and the page is left out of "ranges" (never zero-filled).

Output (DIR): image.raw + image.json (format "splitdbg-image" v1, see `write_sidecar`), serial.txt
(the console), bochs.log (Bochs's log), bochsrc, transcript.txt (the debugger session), times.json.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .dbg.bochs import BochsDebugger, Stop, parse_e820
from .errors import SplitdbgError
from .mem.image import REGISTERS, ImageMeta, now_iso
from .lab import REPO, artifacts
from .target.dump import from_the_image

DIRECT_MAP = 0xFFFF888000000000
SCRIPT = REPO / "qemu-scripts" / "run-bochs.sh"
BREAK_TOOL = "sk-bochs-break"
PAGE = 4096


class BochsLabError(SplitdbgError):
    pass


@dataclass
class Capture:
    out: Path
    image: Path
    sidecar: Path
    mode: str
    stop: Stop
    regs: dict[str, int]
    ranges: list[dict]
    times: dict[str, float]
    notes: list[str] = field(default_factory=list)


def guest_run_command(run: str) -> str:
    """What init runs (`splitdbg.run`): the user's command, then the break tool; the run's exit
    code is kept as the one init reports in `SPLITDBG: run-end rc=N`."""
    if not run:
        return BREAK_TOOL
    if '"' in run:
        raise BochsLabError("--run must not contain a double quote (it sits in splitdbg.run=\"...\")")
    return f"{run}; rc=$?; {BREAK_TOOL}; exit $rc"


def kernel_append(load: str = "", run: str = "", extra: str = "") -> str:
    parts = []
    if load:
        parts.append(f"splitdbg.load={load}")
    parts.append(f'splitdbg.run="{guest_run_command(run)}"')
    if extra:
        parts.append(extra)
    return " ".join(parts)


def _serial(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def usable_ranges(console: str) -> list[tuple[int, int]]:
    """E820 'usable' ranges (start, end exclusive) from the boot log, page-aligned inwards."""
    out = []
    for start, end, kind in parse_e820(console):
        if kind.strip() != "usable":
            continue
        s = (start + PAGE - 1) & ~(PAGE - 1)
        e = end & ~(PAGE - 1)
        if e > s:
            out.append((s, e))
    return out


def dump_ranges(dbg: BochsDebugger, ranges: list[tuple[int, int]], image: Path, work: Path,
                max_holes: int = 1 << 16, physical_holes: bool = False) -> tuple[list[dict], list[str], int]:
    """writemem the direct map of each physical range; concatenate into IMAGE.
    Returns (sidecar ranges, notes, bytes written). Pages the current context does not map (the
    module's pool in the guest's own page tables, when the dump is taken in VMX non-root mode)
    are skipped one by one and listed as runs in the notes; with `physical_holes`, read instead
    with `xp` (physical addresses, about 1 MB/s)."""
    out_ranges: list[dict] = []
    notes: list[str] = []
    offset = 0
    part = work / "writemem.part"

    def add(pos: int, n: int) -> None:
        nonlocal offset
        if out_ranges and out_ranges[-1]["gpa"] + out_ranges[-1]["size"] == pos \
                and out_ranges[-1]["offset"] + out_ranges[-1]["size"] == offset:
            out_ranges[-1]["size"] += n
        else:
            out_ranges.append({"gpa": pos, "offset": offset, "size": n})
        offset += n

    def close_hole(a: int, b: int) -> str:
        """The note for an unmapped run [a, b); with physical_holes, its bytes go into the image."""
        if physical_holes:
            img.write(dbg.read_memory(a, b - a, physical=True))
            add(a, b - a)
            return (f"gpa 0x{a:x}-0x{b:x}: {(b - a) // PAGE} page(s) not mapped at 0x{DIRECT_MAP + a:x} in this context; "
                    "read with xp (physical)")
        return (f"gpa 0x{a:x}-0x{b:x}: {(b - a) // PAGE} page(s) not mapped at 0x{DIRECT_MAP + a:x} in this context; "
                "left out of the image")

    with open(image, "wb") as img:
        for start, end in ranges:
            pos, holes, hole_at = start, 0, None
            while pos < end:
                n = dbg.dump_linear(str(part), DIRECT_MAP + pos, end - pos)
                if n > 0:
                    if hole_at is not None:
                        notes.append(close_hole(hole_at, pos))
                        hole_at = None
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, img, 1 << 22)
                    add(pos, n)
                    pos += n
                if pos < end:
                    # Not in the direct map (or not readable): skip the page, say so.
                    holes += 1
                    hole_at = pos if hole_at is None else hole_at
                    pos += PAGE
                    if holes >= max_holes:
                        notes.append(close_hole(hole_at, pos))
                        notes.append(f"gpa 0x{pos:x}-0x{end:x}: left out ({max_holes} unmapped pages, gave up on "
                                     "this range)")
                        hole_at = None
                        break
            if hole_at is not None:
                notes.append(close_hole(hole_at, min(pos, end)))
    try:
        part.unlink()
    except FileNotFoundError:
        pass
    return out_ranges, notes, offset


def write_sidecar(path: Path, *, source: str, ranges: list[dict], vmlinux: str | None, cmdline: str,
                  cpus: list[dict], serial_log: str, notes: list[str]) -> dict:
    """The image sidecar (splitdbg.mem.image.ImageMeta: format "splitdbg-image" v1, docs/images.md)."""
    meta = ImageMeta(source=source, created=now_iso(),
                     ranges=[{"gpa": int(r["gpa"]), "offset": int(r["offset"]), "size": int(r["size"])} for r in ranges],
                     vmlinux=str(Path(vmlinux).resolve()) if vmlinux else None, kernel_cmdline=cmdline,
                     cpus=[{"cpu": c["cpu"], "mode": c["mode"],
                            "regs": {k: int(c["regs"][k]) for k in REGISTERS if k in c["regs"]}} for c in cpus],
                     serial_log=str(Path(serial_log).resolve()), notes=list(notes))
    meta.check(str(path))
    meta.save(path)
    return meta.to_dict()


def capture(out: str | os.PathLike, load: str = "", run: str = "", mem_mib: int = 64,
            append: str = "", boot_timeout: float = 600.0, vmexit_timeout: float = 60.0,
            ips: int | None = None, cpu: str = "corei7_skylake_x", smp: int = 1, on_stopped=None,
            log=print) -> Capture:
    """Boot under Bochs, run RUN, stop at sk-bochs-break, dump, quit. See the module docstring.

    `on_stopped(dbg, info)`, if given, is called after the dump while Bochs is still stopped there
    (info: mode, regs, stop, ranges, image path), e.g. to check the image against `xp` and `page`."""
    t_start = time.monotonic()
    arts = artifacts()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("image.raw", "image.json", "serial.txt", "times.json"):
        (out / name).unlink(missing_ok=True)
    cmd_append = kernel_append(load, run, append)
    argv = [str(SCRIPT), "--kernel", arts["bzImage"], "--initrd", arts["initrd"], "--mem", str(mem_mib),
            "--dir", str(out), "--append", cmd_append]
    if ips:
        argv += ["--ips", str(ips)]
    if cpu:
        argv += ["--cpu", cpu]
    if smp != 1:
        argv += ["--smp", str(smp)]
    serial = out / "serial.txt"
    times: dict[str, float] = {}
    notes: list[str] = []
    dbg = BochsDebugger(argv, stderr_path=str(out / "bochs.err"), transcript=str(out / "transcript.txt"))
    try:
        cmdline = (out / "cmdline").read_text().strip()
        # -- boot and run, until the magic breakpoint -----------------------------------------
        t_boot = time.monotonic()
        dbg.cont()
        ready_at = run_begin_at = None
        stop, hung = None, False
        while stop is None:
            try:
                stop = dbg.wait_stop(0.25)
            except TimeoutError:
                pass
            now = time.monotonic()
            text = _serial(serial)
            if ready_at is None and "SPLITDBG: ready" in text:
                ready_at = now
                log(f"bochs: SPLITDBG: ready after {now - t_boot:.1f}s")
            if run_begin_at is None and "SPLITDBG: run-begin" in text:
                run_begin_at = now
            if stop is None:
                if "Kernel panic" in text:
                    dbg.interrupt()
                    raise BochsLabError(f"the guest kernel panicked; see {serial}:\n" + text[-2000:])
                if now - t_boot > boot_timeout:
                    # A hung guest is worth an image too: interrupt, dump it as it stands, then fail.
                    stop, hung = dbg.interrupt(), True
                    log(f"bochs: no stop at {BREAK_TOOL} after {boot_timeout:.0f}s; dumping the guest as it is")
        t_stop = time.monotonic()
        if stop.reason != "magic" and not hung:
            raise BochsLabError(f"Bochs stopped for another reason than the magic breakpoint: {stop.text.strip()}")
        text = _serial(serial)
        m = re.search(r"^\[[ \d.]+\] Command line: (.*)$", text, re.M)
        if m:     # what the kernel got: isolinux adds BOOT_IMAGE= and initrd=
            cmdline = m.group(1).strip()
        # The console lags behind the CPU (the UART drains its buffer at emulated speed): a marker
        # the guest printed may not be in serial.txt yet when Bochs stops.
        if ready_at is None:
            ready_at = t_stop
        times["boot_to_ready_s"] = round(ready_at - t_boot, 2)
        times["run_s"] = round(t_stop - (run_begin_at or ready_at), 2)
        if not hung:
            log(f"bochs: magic breakpoint at {stop.cs:04x}:{stop.rip:x} after {t_stop - t_boot:.1f}s")

        # -- into VMX root mode when the module runs the kernel as a guest -------------------------
        mode = "native"
        loaded = "module-loaded name=splitkernel" in text
        if hung:
            mode = "vmx-non-root" if loaded else "native"      # refined per CPU from RIP below
            notes.append(f"the guest did not reach {BREAK_TOOL} within {boot_timeout:.0f}s: dumped where Bochs was "
                         f"interrupted (t={stop.ticks})")
        elif "splitkernel" in load.split(",") and "module-failed name=splitkernel" in text:
            notes.append("splitkernel failed to load (see serial.txt): the guest ran native")
            log("bochs: splitkernel failed to load; no VM exit to wait for")
        elif "splitkernel" in load.split(","):
            dbg.vmexit_break(True)
            # The CPU at the magic breakpoint executes CPUID next (sk-bochs-break): step that CPU
            # alone into its VM exit, so that no other CPU exits first while this one runs on
            # (with 2 CPUs, continuing let the process exit before the dump).
            stop2 = dbg.step(cpu=stop.cpu if smp > 1 else None)
            cs, rip = stop2.where.get(stop.cpu, (None, None))
            if stop2.reason == "vmexit" or (rip is not None and stop.rip is not None and rip != stop.rip + 2):
                # Bochs does not report the exit of a step; CPUID (2 bytes) went elsewhere than the
                # next instruction: to the VMCS host RIP.
                stop2.reason, stop2.cpu, stop2.cs, stop2.rip = "vmexit", stop.cpu, cs, rip
            else:
                stop2 = dbg.run_until_stop(vmexit_timeout)
            dbg.vmexit_break(False)
            if stop2.reason == "vmexit":
                mode = "vmx-root"
                stop = stop2
                log(f"bochs: VM exit, stopped in VMX root mode at {stop.cs:04x}:{stop.rip:x}")
            else:
                mode = "vmx-non-root" if "module-loaded name=splitkernel" in _serial(serial) else "native"
                stop = stop2
                notes.append(f"no VM exit within {vmexit_timeout:.0f}s after the magic breakpoint (CPUID did not "
                             f"exit); dumped where Bochs was interrupted, assumed {mode}")
                log(f"bochs: no VM exit after the magic breakpoint; dumping as {mode}")
        regs = dbg.read_registers(cpu=stop.cpu if smp > 1 else None)   # and the debugger now shows it

        # -- dump -------------------------------------------------------------------------------
        ranges = usable_ranges(text)
        if not ranges:
            raise BochsLabError(f"no BIOS-e820 lines in {serial}: cannot tell which memory to dump")
        t_dump = time.monotonic()
        image = out / "image.raw"
        # A hung guest stopped in VMX non-root mode: its page tables leave out the module's pool
        # (read it physically, or the image would lack every container).
        sidecar_ranges, dump_notes, nbytes = dump_ranges(dbg, ranges, image, out, physical_holes=hung and mode != "native")
        times["dump_s"] = round(time.monotonic() - t_dump, 2)
        times["dump_mb_per_s"] = round(nbytes / max(times["dump_s"], 1e-3) / 1e6, 1)
        notes += dump_notes
        notes.append(f"dumped with Bochs writemem through the direct map at 0x{DIRECT_MAP:x} under CR3=0x"
                     f"{regs.get('cr3', 0):x} at {stop.cs:04x}:{stop.rip:x} (stop: {stop.reason}, t={stop.ticks})")
        notes.append("ranges: the E820 'usable' ranges of the boot log; reserved/ACPI ranges and holes are absent")
        log(f"bochs: dumped {nbytes >> 20} MiB in {times['dump_s']:.2f}s ({times['dump_mb_per_s']} MB/s)")

        # -- every CPU's registers (SMP); the one that stopped is the one dumped through ----------
        cpus = [{"cpu": stop.cpu, "mode": mode, "regs": regs}]
        if smp > 1 or (hung and mode != "native"):
            others = [{"cpu": i, "mode": "native", "regs": dbg.read_registers(cpu=i)} for i in range(smp) if i != stop.cpu]
            if hung:         # no CPU is known to be in root mode: infer every one
                others, cpus = cpus + others, []
            dbg.read_registers(cpu=stop.cpu if smp > 1 else None)   # back to the CPU that stopped, for on_stopped
            if mode != "native":
                # Where the others were: in the module's text (VMX root) or not, as for QEMU images.
                probe = ImageMeta(source="bochs-2.7", created=now_iso(), ranges=sidecar_ranges, cpus=others)
                modes, _ = from_the_image(str(image), probe, arts.get("vmlinux"))
                for c, m in zip(others, modes):
                    c["mode"] = m
                notes.append(("every CPU's mode is" if hung else f"CPU {stop.cpu} stopped at the VM exit; the modes of "
                              "the others are") + " inferred from RIP (in splitkernel.ko's text: vmx-root)")
            cpus = sorted(cpus + others, key=lambda c: c["cpu"])

        if on_stopped is not None:
            on_stopped(dbg, {"mode": mode, "regs": regs, "stop": stop, "ranges": sidecar_ranges, "image": image})

        # -- let the run finish, quit -------------------------------------------------------------
        # A command that broke in by itself (sk-bochs-break inside it, e.g. from a container) stops
        # again at the trailing sk-bochs-break: go on past it, since the run's output reaches the
        # console through the kernel log (splitdbg.out=kmsg), behind the run, until init's run-end.
        t_end = time.monotonic()
        if not hung:
            dbg.cont()
        while not hung and time.monotonic() - t_end < 60 and "SPLITDBG: run-end" not in _serial(serial):
            try:
                dbg.wait_stop(0.25)
                dbg.cont()
            except TimeoutError:
                pass
        if not hung and "SPLITDBG: run-end" not in _serial(serial):
            notes.append("SPLITDBG: run-end not seen within 60s after the dump: the console may lack the run's last lines")
        dbg.quit()
        times["total_s"] = round(time.monotonic() - t_start, 2)
        notes.append("times (wall clock, s): " + ", ".join(f"{k}={v}" for k, v in times.items()))
        write_sidecar(out / "image.json", source="bochs-2.7", ranges=sidecar_ranges, vmlinux=arts.get("vmlinux"),
                      cmdline=cmdline, cpus=cpus, serial_log=str(serial), notes=notes)
        (out / "times.json").write_text(json.dumps(times, indent=1) + "\n")
        if hung:
            raise BochsLabError(f"no stop at {BREAK_TOOL} after {boot_timeout:.0f}s; the hung guest's image is {image} "
                                f"(splitdbg status/ps/containers/events take it); console:\n" + _serial(serial)[-2000:])
        return Capture(out, image, out / "image.json", mode, stop, regs, sidecar_ranges, times, notes)
    finally:
        dbg.close()
