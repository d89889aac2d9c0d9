"""Fuzz the read-only commands with mutated copies of a real memory image (issue 12, "No traceback").

Every case writes a few mutations into a sparse working copy of the image (the original bytes are
put back afterwards), runs one command in-process through `splitdbg.cli.main(argv)` with stdout and
stderr captured, and classifies the outcome: an int return code other than 70 and no "Traceback"
is a pass; rc 70 (an internal error), a traceback, a non-int, an exception escaping main() or a
case over the time bound (a hang) is a failure.

What is mutated (located through splitdbg's own readers on the pristine image, then written raw):
the debug descriptor's fields, the ring headers and entries (and the security ring's walks), the
containers' fields, nested-table entries (flipped bits, random qwords, pointed at other tables or at
themselves), guest page-table entries (the kernel's and the processes'), the task list and the
module list (cycles, self-loops, wild pointers), task fields (mm, stack, comm, state).

    python -m tests.fuzz.fuzzer IMAGE.raw --cases 10000 --seed 1 [--json REPORT] [--timeout 10]

Deterministic: case i of seed s draws from random.Random(f"{s}:{i}").
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

COMMANDS = ("status", "ps", "tasks", "containers", "ept", "events", "walk", "check", "snapshot")
REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "policies" / "default.toml"


class Hang(BaseException):
    """Raised by SIGALRM: a case ran past its time bound (BaseException: main() must not catch it)."""


# -- making cases fast: vmlinux's symbols parsed once per process -------------------------------
def cache_symbols() -> None:
    """ElfSymbols of vmlinux (and the lab's .ko) take about a second to parse; every case would
    parse the same file again. Keep one per path (they are read-only after construction)."""
    from splitdbg.target import kernel, symbols

    real = symbols.ElfSymbols
    cache: dict = {}

    class Cached:
        def __new__(cls, path):
            key = str(path)
            if key not in cache:
                cache[key] = real(path)
            return cache[key]

    kernel.ElfSymbols = Cached
    symbols.ElfSymbols = Cached


# -- where things are in the pristine image ------------------------------------------------------
def _tables(mem, top: int, levels: int, limit: int = 400) -> list[tuple[int, int]]:
    """(table page, level) of a 4/5-level radix tree (x86 or NPT layout: P bit 0, PS bit 7)."""
    out, todo, seen = [], [(top, levels)], set()
    while todo and len(out) < limit:
        pa, level = todo.pop()
        if pa in seen:
            continue
        seen.add(pa)
        try:
            raw = mem.read(pa, 4096)
        except Exception:
            continue
        out.append((pa, level))
        if level == 1:
            continue
        for (e,) in struct.iter_unpack("<Q", raw):
            if e & 1 and not (level in (2, 3) and e & 0x80):
                todo.append((e & 0x000FFFFFFFFFF000, level - 1))
    return out


def locate(image: str) -> dict:
    """Addresses (guest-physical = file offsets: one range at 0) of what the mutations hit."""
    from splitdbg.mem import ImageFile
    from splitdbg.target import splitkernel as skm
    from splitdbg.target.kernel import Kernel

    mem = ImageFile(image)
    assert mem.meta is not None, "the fuzzer needs an image with a sidecar"
    sk = skm.SplitKernel(mem)
    d = sk.d
    loc: dict = {"ram_size": max(e for _, e in mem.ram_ranges()), "descriptor": sk.pa, "layout": mem.meta.layout()}
    offs, o = {}, 0
    for name, fmt in zip(skm.DESCRIPTOR_FIELDS, _fmt_fields(skm.DESCRIPTOR.format)):
        o = _align(o, struct.calcsize(fmt))
        offs[name] = (o, struct.calcsize(fmt))
        o += struct.calcsize(fmt)
    loc["descriptor_fields"] = offs
    rings = []
    for cpu in sk.cpus:
        for kind in (skm.RING_ALL, skm.RING_SECURITY):
            pa = sk._ring_pa(cpu, kind)
            head, _, entries, esz, _, _ = sk.ring_header(cpu, kind)
            rings.append({"pa": pa, "entries": entries, "head": head, "security": kind == skm.RING_SECURITY})
    loc["rings"] = rings
    conts = []
    for c in sk.containers():
        conts.append({"pa": d["containers_pa"] + c.id * skm.CONTAINER_SIZE, "id": c.id,
                      "tables": _tables(mem, c.ncr3, sk.levels)})
    loc["containers"] = conts
    loc["container_array"] = (d["containers_pa"], d["max_containers"])
    k = Kernel(mem, mem.meta.vmlinux)
    t = k.types
    loc["kernel_tables"] = _tables(mem, k.kernel_cr3, k.mode.levels, limit=300)
    o_tasks, o_mm, o_pgd = t.offsetof("task_struct", "tasks"), t.offsetof("task_struct", "mm"), \
        t.offsetof("mm_struct", "pgd")
    tasks = []
    for task in k.tasks():
        tk = {"node": k.translate(task.addr + o_tasks), "pid": task.pid, "pgd": task.pgd,
              "va_node": task.addr + o_tasks}
        for f in ("mm", "pid", "comm", "__state", "stack", "thread.sp", "on_cpu"):
            tk["f." + f] = k.translate(task.addr + t.offsetof("task_struct", f))
        if task.mm:
            tk["f.mm_pgd"] = k.translate(task.mm + o_pgd)
            tk["tables"] = _tables(mem, task.pgd, k.mode.levels, limit=40)
        tasks.append(tk)
    loc["tasks"] = tasks
    mods = []
    for m in k.modules():
        o_list = t.offsetof("module", "list")
        mods.append({"node": k.translate(m.addr + o_list), "va_node": m.addr + o_list,
                     "name": k.translate(m.addr + t.offsetof("module", "name")),
                     "sect_attrs": k.translate(m.addr + t.offsetof("module", "sect_attrs"))})
    loc["modules"] = mods
    loc["modules_head"] = (k.image_pa(k.symbols.address("modules")), k.symbols.address("modules"))
    loc["init_tasks_head"] = k.translate(k.symbols.address("init_task") + o_tasks)
    nr = [tk for tk in tasks if any(tk["pgd"] in c.pgds for c in sk.containers() if c.id)]
    loc["walk_pid"] = nr[0]["pid"] if nr else 1
    loc["nr_container"] = next((c.id for c in sk.containers() if c.id), 0)
    mem.close()
    return loc


def _fmt_fields(fmt: str) -> list[str]:
    import re

    out = []
    for n, c in re.findall(r"(\d*)([QIHB])", fmt):
        out += [c] * int(n or 1)
    return out


def _align(o: int, n: int) -> int:
    return (o + n - 1) // n * n


# -- mutations -----------------------------------------------------------------------------------
EXTREMES64 = (0, 1, 2, 0xFFF, 0x1000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 40, 1 << 52, 1 << 62,
              1 << 63, 2**64 - 1, 2**64 - 0x1000, 0x1FFFFFFF000, 0xFFFF888000000000, 0xFFFFFFFF81000000)
EXTREMES32 = (0, 1, 2, 3, 5, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 255, 4095, 4096, 4097, 65536, 65537,
              1 << 20, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


def file_offset(layout, pa: int, n: int) -> int | None:
    """Where guest-physical [pa, pa + n) is in the image file (None: not inside one range)."""
    for start, end, off in layout:
        if start <= pa and pa + n <= end:
            return off + pa - start
    return None


class Mutator:
    def __init__(self, loc: dict, rng: random.Random, read):
        self.loc, self.r, self.read = loc, rng, read      # read(pa, n) -> pristine bytes
        self.writes: list[tuple[int, bytes]] = []
        self.what: list[str] = []
        self.kinds: list[str] = []

    def put(self, pa: int, data: bytes, what: str) -> None:
        off = file_offset(self.loc["layout"], pa, len(data))
        if off is not None:
            self.writes.append((off, data))
            self.what.append(what)

    def u64(self, pa: int) -> int:
        return int.from_bytes(self.read(pa, 8), "little")

    def value64(self, old: int) -> int:
        r = self.r
        k = r.randrange(6)
        if k == 0:
            return old ^ (1 << r.randrange(64))
        if k == 1:
            return r.getrandbits(64)
        if k == 2:
            return r.choice(EXTREMES64)
        if k == 3:
            return (old + r.choice((-2, -1, 1, 2, 0x1000, -0x1000, 1 << 20))) % 2**64
        if k == 4:    # an address elsewhere in RAM, or just past it
            return r.choice((r.randrange(0, self.loc["ram_size"]) & ~7, self.loc["ram_size"] - 8,
                             self.loc["ram_size"], self.loc["ram_size"] + 0x1000))
        return old ^ r.getrandbits(64) & r.choice((0xFF, 0xFFFF000, 1 << 63 | 0xFFF))

    def value32(self, old: int) -> int:
        r = self.r
        k = r.randrange(4)
        if k == 0:
            return old ^ (1 << r.randrange(32))
        if k == 1:
            return r.getrandbits(32)
        if k == 2:
            return r.choice(EXTREMES32)
        return (old + r.choice((-1, 1, 2, -2))) % 2**32

    def field(self, pa: int, size: int, what: str) -> None:
        old = int.from_bytes(self.read(pa, size), "little")
        new = self.value64(old) if size == 8 else self.value32(old) & (2**(8 * size) - 1)
        self.put(pa, new.to_bytes(size, "little"), f"{what}: {old:#x} -> {new:#x}")

    def qword_in(self, base: int, size: int, what: str) -> None:
        off = self.r.randrange(0, max(size // 8, 1)) * 8
        self.field(base + off, 8, f"{what}+{off:#x}")

    # kinds ------------------------------------------------------------------------------------
    def descriptor(self) -> None:
        name, (off, size) = self.r.choice(sorted(self.loc["descriptor_fields"].items()))
        if name in ("magic", "self_pa") and self.r.random() < 0.7:
            name, (off, size) = "slat_levels", self.loc["descriptor_fields"]["slat_levels"]
        self.field(self.loc["descriptor"] + off, size, f"descriptor.{name}")

    def ring_header(self) -> None:
        ring = self.r.choice(self.loc["rings"])
        name, off, size = self.r.choice((("head", 0, 8), ("overflow", 8, 8), ("entries", 16, 4),
                                         ("event_size", 20, 4), ("cpu", 24, 4), ("ring_kind", 28, 4)))
        self.field(ring["pa"] + off, size, f"ring@{ring['pa']:#x}.{name}")

    def ring_entry(self) -> None:
        ring = self.r.choice(self.loc["rings"])
        n = min(ring["head"], ring["entries"]) or 1
        slot = self.r.randrange(n)
        if ring["security"] and self.r.random() < 0.4:     # the walk recorded beside the entry
            base = ring["pa"] + 32 + ring["entries"] * 112 + slot * 40
            self.qword_in(base, 40, f"ring@{ring['pa']:#x}.walk[{slot}]")
        else:
            self.qword_in(ring["pa"] + 32 + slot * 112, 112, f"ring@{ring['pa']:#x}.ev[{slot}]")

    def violation(self) -> None:
        """A field of a recorded violation (security ring): what the cross-check and the detail read."""
        rings = [r for r in self.loc["rings"] if r["security"] and r["head"]] or self.loc["rings"]
        ring = self.r.choice(rings)
        slot = self.r.randrange(min(ring["head"], ring["entries"]) or 1)
        name, off, size = self.r.choice((("cpu", 16, 4), ("container", 20, 4), ("pid", 24, 4), ("kind", 28, 4),
                                         ("exit_code", 32, 8), ("exitinfo1", 40, 8), ("exitinfo2", 48, 8),
                                         ("rip", 56, 8), ("cr3", 64, 8), ("slat_root", 72, 8), ("cpl", 80, 2),
                                         ("region", 82, 2), ("action", 84, 4), ("extra", 88, 8),
                                         ("guest_linear", 96, 8), ("exitintinfo", 104, 8)))
        self.field(ring["pa"] + 32 + slot * 112 + off, size, f"ring@{ring['pa']:#x}.ev[{slot}].{name}")

    def guest_regs(self) -> None:
        cpu = self.r.randrange(2)
        reg = self.r.choice(("cr0", "cr3", "cr4", "efer"))
        off, size = self.loc["descriptor_fields"][f"guest{cpu}_{reg}"]
        self.field(self.loc["descriptor"] + off, size, f"descriptor.guest{cpu}_{reg}")

    def container(self) -> None:
        c = self.r.choice(self.loc["containers"])
        name, off, size = self.r.choice((("id", 0, 4), ("active", 4, 4), ("owner_pid", 8, 4), ("policy", 12, 4),
                                         ("ncr3", 16, 8), ("npgds", 24, 4), ("nisolated", 28, 4),
                                         ("pgds[0]", 32, 8), ("iso_gpa[0]", 32 + 512, 8),
                                         ("nprotected", 32 + 1536 + 136 + 16, 4)))
        if self.r.random() < 0.2:
            self.qword_in(c["pa"], 1856, f"container{c['id']}")
        else:
            self.field(c["pa"] + off, size, f"container{c['id']}.{name}")

    def _table_entry(self, tables: list, what: str) -> None:
        pa, level = self.r.choice(tables)
        old_entries = [i for i in range(512) if self.u64(pa + 8 * i) & 1]
        i = self.r.choice(old_entries) if old_entries and self.r.random() < 0.8 else self.r.randrange(512)
        ea = pa + 8 * i
        old = self.u64(ea)
        k = self.r.randrange(4)
        if k == 0:      # at another table (any level) or at itself / its own table, flags kept
            target = self.r.choice([pa, pa] + [t for t, _ in tables])
            flags = (old & 0xFFF | 0x7) & ~0x80 if self.r.random() < 0.8 else old & 0xFFF
            new = target | flags | (old & (1 << 63))
        elif k == 1:    # all 512 entries at one table: a wide fan-out (memoisation bounds it)
            target = self.r.choice([t for t, _ in tables])
            e = (target | 0x7).to_bytes(8, "little")
            self.put(pa, e * 512, f"{what} table {pa:#x} (L{level}): every entry -> {target:#x}")
            return
        else:
            new = self.value64(old)
        self.put(ea, new.to_bytes(8, "little"), f"{what} L{level} {pa:#x}[{i}]: {old:#x} -> {new:#x}")

    def nested_table(self) -> None:
        c = self.r.choice([c for c in self.loc["containers"] if c["tables"]])
        self._table_entry(c["tables"], f"container{c['id']} nested")

    def guest_table(self) -> None:
        if self.r.random() < 0.5:
            self._table_entry(self.loc["kernel_tables"], "kernel page table")
        else:
            t = self.r.choice([t for t in self.loc["tasks"] if t.get("tables")])
            self._table_entry(t["tables"], f"pid {t['pid']} page table")

    def task_list(self) -> None:
        tasks, r = self.loc["tasks"], self.r
        k = r.randrange(5)
        a = r.randrange(1, len(tasks))
        t = tasks[a]
        if k == 0:      # a cycle that never comes back to the head
            b = r.randrange(1, a + 1)
            self.put(t["node"], tasks[b]["va_node"].to_bytes(8, "little"), f"task {t['pid']}.tasks.next -> task {tasks[b]['pid']}")
        elif k == 1:    # its own node
            self.put(t["node"], t["va_node"].to_bytes(8, "little"), f"task {t['pid']}.tasks.next -> itself")
        elif k == 2:
            self.field(t["node"] + r.choice((0, 8)), 8, f"task {t['pid']}.tasks")
        else:
            f = r.choice(("mm", "pid", "comm", "__state", "stack", "thread.sp", "on_cpu", "mm_pgd"))
            if "f." + f in t:
                self.field(t["f." + f], 8 if f in ("mm", "stack", "thread.sp", "mm_pgd", "comm") else 4, f"task {t['pid']}.{f}")

    def module_list(self) -> None:
        mods, r = self.loc["modules"], self.r
        if not mods:
            return self.task_list()
        m = r.choice(mods)
        k = r.randrange(5)
        if k == 0:
            self.put(m["node"], m["va_node"].to_bytes(8, "little"), "module.list.next -> itself")
        elif k == 1:
            other = r.choice(mods)
            self.put(m["node"], other["va_node"].to_bytes(8, "little"), "module.list.next -> a module (cycle)")
        elif k == 2:
            self.field(self.loc["modules_head"][0], 8, "modules.next")
        elif k == 3:
            self.field(m["sect_attrs"], 8, "module.sect_attrs")
        else:
            self.field(m["node"] + r.choice((0, 8)), 8, "module.list")

    KINDS = (("descriptor", 3), ("ring_header", 3), ("ring_entry", 2), ("violation", 2), ("guest_regs", 1),
             ("container", 3), ("nested_table", 4), ("guest_table", 3), ("task_list", 3), ("module_list", 2))

    def mutate(self) -> None:
        names = [k for k, _ in self.KINDS]
        weights = [w for _, w in self.KINDS]
        for _ in range(self.r.choice((1, 1, 1, 2, 3, 5))):
            kind = self.r.choices(names, weights)[0]
            self.kinds.append(kind)
            getattr(self, kind)()


# -- running -------------------------------------------------------------------------------------
def argv_for(cmd: str, image: str, loc: dict, rng: random.Random, out: str) -> list[str]:
    if cmd == "walk":
        return ["walk", image, str(loc["walk_pid"]), rng.choice(("ffffffff81000000", "400000", "7ffc00000000"))]
    if cmd == "check":
        return ["check", image, str(POLICY)]
    if cmd == "snapshot":
        return ["snapshot", image, "-o", out, "--force"]
    if cmd == "ept":
        return ["ept", image, str(rng.choice((0, loc["nr_container"]))), "--filter", rng.choice(("", "differs", "w"))]
    if cmd == "tasks":
        return ["tasks", image] + (["--stacks"] if rng.random() < 0.5 else [])
    return [cmd, image] + (["--json"] if rng.random() < 0.3 else [])


def run_case(argv: list[str], timeout: float) -> dict:
    from splitdbg.cli import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    rc, exc = None, None

    def alarm(*_):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except Hang:
        exc = "hang"
    except SystemExit as e:            # argparse
        rc = e.code
    except BaseException as e:         # noqa: BLE001: anything escaping main() is a failure
        exc = "".join(traceback.format_exception(e))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.monotonic() - t0
    text = out.getvalue() + err.getvalue()
    failure = None
    if exc == "hang":
        failure = "hang"
    elif exc:
        failure = "exception escaped main()"
    elif not isinstance(rc, int) or isinstance(rc, bool):
        failure = f"main() returned {rc!r}, not an int"
    elif rc == 70:
        failure = "internal error (rc 70)"
    elif "Traceback" in text:
        failure = "traceback in output"
    return {"rc": rc, "seconds": seconds, "failure": failure, "stderr": err.getvalue()[-2000:],
            "exception": exc if exc != "hang" else None,
            "first_error": err.getvalue().strip().splitlines()[0][:160] if rc not in (0, None) and err.getvalue().strip() else ""}


def fuzz(image: str, cases: int, seed: int, timeout: float = 10.0, workdir: str | None = None,
         log=None, commands=COMMANDS, only_cases: list[int] | None = None) -> dict:
    """Run `cases` cases (or just those numbered in `only_cases`); returns totals and the failures
    (each with its case number: `--case N --seed S` replays it)."""
    cache_symbols()
    loc = locate(image)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="splitdbg-fuzz-"))
    work = tmp / "fuzz.raw"
    subprocess.run(["cp", "--sparse=always", image, str(work)], check=True)
    from splitdbg.mem.image import find_sidecar

    side = json.loads(find_sidecar(image).read_text())
    side["serial_log"] = None
    (tmp / "fuzz.json").write_text(json.dumps(side))
    snap_out = str(tmp / "snap.json")
    src = os.open(image, os.O_RDONLY)
    dst = os.open(work, os.O_RDWR)
    def read(pa: int, n: int) -> bytes:                # pristine guest-physical bytes
        off = file_offset(loc["layout"], pa, n)
        return os.pread(src, n, off) if off is not None else bytes(n)
    totals = {"cases": 0, "failures": 0, "hangs": 0, "by_command": {c: 0 for c in commands},
              "rc": {}, "slowest": 0.0, "slow_cases": 0, "with_problems": 0, "mutations": {},
              "errors": {}}
    failures = []
    t_start = time.monotonic()
    try:
        for i in (only_cases if only_cases else range(cases)):
            rng = random.Random(f"{seed}:{i}")
            m = Mutator(loc, rng, read)
            m.mutate()
            cmd = commands[i % len(commands)]
            argv = argv_for(cmd, str(work), loc, rng, snap_out)
            saved = [(pa, os.pread(dst, len(data), pa)) for pa, data in m.writes]
            for pa, data in m.writes:
                os.pwrite(dst, data, pa)
            try:
                r = run_case(argv, timeout)
            finally:
                for pa, data in reversed(saved):
                    os.pwrite(dst, data, pa)
            totals["cases"] += 1
            totals["by_command"][cmd] += 1
            totals["rc"][str(r["rc"])] = totals["rc"].get(str(r["rc"]), 0) + 1
            totals["slowest"] = max(totals["slowest"], r["seconds"])
            totals["slow_cases"] += r["seconds"] > 3
            totals["with_problems"] += "problem" in r["stderr"] or "corrupt" in r["stderr"]
            if r["first_error"]:
                key = r["first_error"].split(":")[1].strip() if ":" in r["first_error"] else r["first_error"]
                key = re.sub(r"0x[0-9a-f]+|\d+", "N", key)[:60]     # one line per kind of error
                e = totals["errors"].setdefault(key, [0, i, cmd])     # count, first case, its command
                e[0] += 1
            for kind in m.kinds:
                totals["mutations"][kind] = totals["mutations"].get(kind, 0) + 1
            if r["failure"]:
                totals["failures"] += 1
                totals["hangs"] += r["failure"] == "hang"
                failures.append({"case": i, "seed": seed, "command": cmd, "argv": argv[:1] + argv[2:],
                                 "mutations": m.what, **r})
                if log:
                    print(f"FAIL case {i} {cmd}: {r['failure']}: {m.what}\n  {r['stderr'][-300:]}"
                          f"{(r['exception'] or '')[-1500:]}", file=log, flush=True)
            if log and (i + 1) % 500 == 0:
                print(f"... {i + 1} cases, {totals['failures']} failures, {time.monotonic() - t_start:.0f} s",
                      file=log, flush=True)
    finally:
        os.close(src)
        os.close(dst)
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    totals["seconds"] = round(time.monotonic() - t_start, 1)
    totals["slowest"] = round(totals["slowest"], 2)
    return {"totals": totals, "failures": failures}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image")
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--memory-limit", type=int, default=3 << 30, help="address-space limit (bytes)")
    ap.add_argument("--only", help="comma list of commands")
    ap.add_argument("--case", type=int, action="append", help="replay this case (repeatable)")
    args = ap.parse_args(argv)
    os.environ.pop("SPLITDBG_DEBUG", None)
    if args.memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_limit, args.memory_limit))
    cmds = tuple(args.only.split(",")) if args.only else COMMANDS
    report = fuzz(args.image, args.cases, args.seed, args.timeout, log=sys.stderr, commands=cmds,
                  only_cases=args.case)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report["totals"]))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
