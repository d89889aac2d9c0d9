"""The Bochs 2.7 internal debugger, driven through pipes (Bochs has no gdb stub in Debian's build).

Bochs started with `--enable-debugger` reads debugger commands on stdin and answers on stdout; each
answer ends with the prompt ``<bochs:N> `` (no newline). With stdin a pipe, Bochs echoes the
command after the prompt. A running machine (``c``) is stopped by SIGINT (what Ctrl-C does), by a
magic breakpoint (``xchg %bx,%bx`` with ``magic_break: enabled=1``), or by a VM exit with
``vmexitbp`` on; the stop report looks like::

    (0) Magic breakpoint
    Next at t=25235623187
    (0) [0x000001060777] 0010:ffffffff81060777 (unk. ctxt): xor eax, eax              ; 31c0
    <bochs:2>

The parsers (`parse_*`) are plain functions over that text so they can be unit-tested on captured
output (tests/unit/test_bochs_dbg.py); `BochsDebugger` owns the process.

Memory: ``xp /Nfx PADDR`` (physical) and ``x /Nfx LADDR`` (linear, current CR3) print at most a
few words a line; ``writemem "FILE" LADDR LEN`` writes linear memory of the current context to a
file, fast, and stops at the first unmapped page ("bx_dbg_read_linear: physical address not
available for linear 0x..."), leaving the part before it in the file.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from ..errors import MemoryReadError, SplitdbgError, TargetGone
from .base import Debugger


class BochsError(SplitdbgError):
    """Bochs refused a debugger command or did not answer in time."""


PROMPT = re.compile(r"<bochs:(\d+)> $")
_PROMPT_ANY = re.compile(r"<bochs:(\d+)> ")


# ---------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------

def _hex(s: str) -> int:
    return int(s.replace("_", ""), 16)


_REG = re.compile(r"^\s*(r[a-z0-9]+|e[a-z]{2}|[re]ip)\s*:\s*([0-9a-fA-F_]+)\s*$", re.M)
_EFLAGS = re.compile(r"^\s*eflags\s+0x([0-9a-fA-F]+)", re.M)


def parse_regs(text: str) -> dict[str, int]:
    """`r` / `info cpu`: ``rax: ffffffff_81025e2d`` lines and ``eflags 0x00000046: ...``."""
    regs = {m.group(1): _hex(m.group(2)) for m in _REG.finditer(text)}
    m = _EFLAGS.search(text)
    if m:
        regs["eflags"] = int(m.group(1), 16)
    return regs


_CREG = {
    "cr0": re.compile(r"^CR0=0x([0-9a-fA-F]+)", re.M),
    "cr2": re.compile(r"^CR2=(?:[^=\n]*=)?0x([0-9a-fA-F]+)", re.M),
    "cr3": re.compile(r"^CR3=0x([0-9a-fA-F]+)", re.M),
    "cr4": re.compile(r"^CR4=0x([0-9a-fA-F]+)", re.M),
    "cr8": re.compile(r"^CR8:?\s*=?\s*0x([0-9a-fA-F]+)", re.M),
    "efer": re.compile(r"^EFER=0x([0-9a-fA-F]+)", re.M),
    "xcr0": re.compile(r"^XCR0=0x([0-9a-fA-F]+)", re.M),
}


def parse_creg(text: str) -> dict[str, int]:
    """`creg`: CR0, CR2 ("CR2=page fault laddr=0x..."), CR3, CR4, CR8, EFER, XCR0."""
    out = {}
    for name, rx in _CREG.items():
        m = rx.search(text)
        if m:
            out[name] = int(m.group(1), 16)
    return out


_SEG = re.compile(r"^(es|cs|ss|ds|fs|gs|ldtr|tr):0x([0-9a-fA-F]+), dh=0x([0-9a-fA-F]+), dl=0x([0-9a-fA-F]+), "
                  r"valid=(\d)", re.M)
_DTR = re.compile(r"^(gdtr|idtr):base=0x([0-9a-fA-F]+), limit=0x([0-9a-fA-F]+)", re.M)


def parse_sreg(text: str) -> dict[str, dict[str, int]]:
    """`sreg`: selectors with their descriptor words, GDTR/IDTR base and limit."""
    out: dict[str, dict[str, int]] = {}
    for m in _SEG.finditer(text):
        out[m.group(1)] = {"selector": int(m.group(2), 16), "dh": int(m.group(3), 16),
                           "dl": int(m.group(4), 16), "valid": int(m.group(5))}
    for m in _DTR.finditer(text):
        out[m.group(1)] = {"base": int(m.group(2), 16), "limit": int(m.group(3), 16)}
    return out


@dataclass
class PageWalk:
    laddr: int
    entries: list[tuple[str, int]] = field(default_factory=list)   # ("PML4", value), ("PDPE", ..)
    paddr: int | None = None                                         # physical page, None if unmapped


_PAGE_ENTRY = re.compile(r"^\s*(PML5|PML4|PDPE|PDE|PTE):\s*0x([0-9a-fA-F]+)", re.M)
_PAGE_MAPS = re.compile(r"linear page 0x([0-9a-fA-F]+) maps to physical page 0x([0-9a-fA-F]+)")
_PAGE_NONE = re.compile(r"physical address not available for linear 0x([0-9a-fA-F]+)")


def parse_page(text: str) -> PageWalk:
    """`page LADDR`: the walk's entries, then the physical page or "not available"."""
    entries = [(m.group(1), int(m.group(2), 16)) for m in _PAGE_ENTRY.finditer(text)]
    m = _PAGE_MAPS.search(text)
    if m:
        return PageWalk(int(m.group(1), 16), entries, int(m.group(2), 16))
    m = _PAGE_NONE.search(text)
    if m:
        return PageWalk(int(m.group(1), 16), entries, None)
    raise BochsError(f"unexpected `page` output: {text.strip()[:300]!r}")


_XLINE = re.compile(r"^0x([0-9a-fA-F]+)\s*(?:<[^>]*>)?\s*:\s*(.*)$", re.M)
_UNIT = {"b": 1, "h": 2, "w": 4, "g": 8}
_HEXWORD = re.compile(r"0x[0-9a-fA-F]+")


def parse_x(text: str, unit: str = "b") -> dict[int, int]:
    """`xp /Nux ADDR` or `x /Nux ADDR` (u = b|h|w|g) -> {address of each unit: value}.

    Lines look like ``0x0000000001000000 <bogus+       0>:\\t0x4800803f51258d48\\t0x1b9fffffff23d8d``
    (values without leading zeros)."""
    size = _UNIT[unit]
    out: dict[int, int] = {}
    for m in _XLINE.finditer(text):
        base = int(m.group(1), 16)
        for i, word in enumerate(m.group(2).split()):
            if not _HEXWORD.fullmatch(word):
                break     # "bx_dbg_read_linear: physical address not available ...": the read stopped
            out[base + i * size] = int(word, 16)
    return out


def x_bytes(text: str, unit: str = "b") -> bytes:
    """The bytes an `x`/`xp` dump shows, in address order (little-endian units)."""
    vals = parse_x(text, unit)
    size = _UNIT[unit]
    return b"".join(vals[a].to_bytes(size, "little") for a in sorted(vals))


_TAB = re.compile(r"^0x([0-9a-fA-F]+)-0x([0-9a-fA-F]+) -> 0x([0-9a-fA-F]+)-0x([0-9a-fA-F]+)", re.M)


def parse_info_tab(text: str) -> list[tuple[int, int, int]]:
    """`info tab`: merged mappings as (linear start, linear end exclusive, physical start).
    Quirk (Bochs 2.7): the listing leaves out whole parts of the kernel's address space (the
    direct map at 0xffff888000000000, vmalloc) that `page` translates fine: do not use it as
    the list of mappings."""
    return [(int(a, 16), int(b, 16) + 1, int(p, 16)) for a, b, p, _ in _TAB.findall(text)]


@dataclass
class Stop:
    """Why and where the machine stopped."""
    reason: str            # "magic" | "vmexit" | "interrupt" | "watch" | "mode" | "halt" | "break" | "unknown"
    rip: int | None = None
    cs: int | None = None
    ticks: int | None = None
    linear: int | None = None     # the [0x...] address in the disassembly line (physical of RIP)
    text: str = ""
    cpu: int = 0                  # the CPU that stopped (rip, cs and linear are its)
    where: dict[int, tuple[int, int]] = field(default_factory=dict)   # every CPU: (cs, rip)


_NEXT = re.compile(r"Next at t=(\d+)")
_WHO = re.compile(r"^\((\d+)\) (?:Magic breakpoint|Caught|Breakpoint|.*watch point)", re.M)
_DIS = re.compile(r"^\((\d+)\)(?:\.\[\d+\])? \[0x([0-9a-fA-F]+)\] ([0-9a-fA-F]{4}):([0-9a-fA-F]+) ", re.M)


def parse_stop(text: str) -> Stop:
    """The report printed when `c` (or `s`) returns to the prompt."""
    if "Magic breakpoint" in text:
        reason = "magic"
    elif "Caught VMEXIT breakpoint" in text:
        reason = "vmexit"
    elif "watch point" in text:
        reason = "watch"
    elif "mode switch breakpoint" in text:
        reason = "mode"
    elif re.search(r"\bBreakpoint \d+", text) or "Caught time breakpoint" in text:
        reason = "break"
    elif "HALTED" in text:
        reason = "halt"
    elif _NEXT.search(text):
        reason = "interrupt"
    else:
        reason = "unknown"
    stop = Stop(reason, text=text)
    m = _NEXT.search(text)
    if m:
        stop.ticks = int(m.group(1))
    m = _WHO.search(text)
    if m:
        stop.cpu = int(m.group(1))
    lines = {int(m.group(1)): m for m in _DIS.finditer(text)}    # SMP: one line per CPU
    stop.where = {cpu: (int(m.group(3), 16), int(m.group(4), 16)) for cpu, m in lines.items()}
    m = lines.get(stop.cpu) or next(iter(lines.values()), None)
    if m:
        stop.linear = int(m.group(2), 16)
        stop.cs = int(m.group(3), 16)
        stop.rip = int(m.group(4), 16)
    return stop


_E820 = re.compile(r"BIOS-e820: \[mem 0x([0-9a-fA-F]+)-0x([0-9a-fA-F]+)\] (.+?)\s*$", re.M)


def parse_e820(console: str) -> list[tuple[int, int, str]]:
    """`BIOS-e820: [mem 0xSTART-0xLAST] TYPE` lines of a Linux boot log -> (start, end exclusive,
    type), as the kernel printed them (first boot only)."""
    out: list[tuple[int, int, str]] = []
    for m in _E820.finditer(console):
        r = (int(m.group(1), 16), int(m.group(2), 16) + 1, m.group(3))
        if r in out:       # a second boot (reboot) repeats the map
            break
        out.append(r)
    return out


# ---------------------------------------------------------------------------------------------
# The process
# ---------------------------------------------------------------------------------------------

class BochsDebugger(Debugger):
    """A Bochs process whose debugger we drive. Memory reads are `xp`/`x` (slow, text); bulk
    reads go through `writemem` (see `dump_linear`)."""

    keeps_physical_mode = True

    def __init__(self, argv: list[str], stderr_path: str | None = None, timeout: float = 30.0,
                 transcript: str | None = None):
        self.timeout = timeout
        self._stderr = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self._transcript = open(transcript, "w") if transcript else None
        # A session of its own: a Ctrl-C meant for us must not stop (or kill) Bochs.
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, start_new_session=True, bufsize=0)
        self._buf = ""
        self._pos = 0              # start of the answer being collected
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.running = False
        self.last_stop: Stop | None = None
        self.prompt_no = 0
        self.wait_prompt(timeout)   # Bochs starts stopped at the reset vector

    # -- plumbing ------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                text = chunk.decode("utf-8", "replace")
                self._buf += text
                if self._transcript:
                    self._transcript.write(text)
                    self._transcript.flush()
                self._cond.notify_all()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_prompt(self, timeout: float | None) -> str:
        """Wait for the next prompt; return the text since the last one (prompt removed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                m = PROMPT.search(self._buf, self._pos)
                if m:
                    text = self._buf[self._pos:m.start()]
                    self.prompt_no = int(m.group(1))
                    self._buf = ""
                    self._pos = 0
                    self.running = False
                    return text
                if self._eof:
                    raise TargetGone("Bochs exited; its last output:\n" + self._buf[-2000:])
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no Bochs prompt after {timeout:.0f}s")
                self._cond.wait(0.5 if left is None else min(left, 0.5))

    def _send(self, command: str) -> None:
        if self.running:
            raise BochsError(f"Bochs is running: stop it before `{command}`")
        try:
            self.proc.stdin.write((command + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise TargetGone("Bochs is not running any more") from exc

    def execute(self, command: str, timeout: float | None = None) -> str:
        """Run one debugger command and return what it printed (echoed command line removed)."""
        self._send(command)
        text = self.wait_prompt(self.timeout if timeout is None else timeout)
        first, _, rest = text.partition("\n")
        if first.strip() == command.strip():
            text = rest
        return text

    # -- run control ---------------------------------------------------------------------------
    def cont(self) -> None:
        """Let the machine run; `wait_stop` collects the stop report."""
        self._send("c")
        self.running = True

    def wait_stop(self, timeout: float | None = None) -> Stop:
        text = self.wait_prompt(timeout)
        first, _, rest = text.partition("\n")
        if first.strip() == "c":
            text = rest
        self.last_stop = parse_stop(text)
        return self.last_stop

    def step(self, count: int = 1, cpu: int | None = None) -> Stop:
        """Execute `count` instructions (`s`); on SMP, `cpu` alone executes them (`s CPU COUNT`)."""
        return parse_stop(self.execute(f"s {count}" if cpu is None else f"s {cpu} {count}"))

    def run_until_stop(self, timeout: float | None = None) -> Stop:
        """`c`, then wait for a stop; on timeout interrupt (SIGINT) and return that stop with
        reason "interrupt"."""
        self.cont()
        try:
            return self.wait_stop(timeout)
        except TimeoutError:
            return self.interrupt()

    def interrupt(self, timeout: float = 30.0) -> Stop:
        """Stop a running machine, as Ctrl-C does (SIGINT)."""
        if not self.running:
            return self.last_stop or Stop("interrupt")
        os.kill(self.proc.pid, signal.SIGINT)
        return self.wait_stop(timeout)

    def vmexit_break(self, on: bool) -> None:
        """`vmexitbp`: stop at every VM exit (it toggles; we track the state)."""
        if getattr(self, "_vmexitbp", False) == on:
            return
        reply = self.execute("vmexitbp")     # "vmexit switch break enabled" / "... disabled"
        self._vmexitbp = "enabled" in reply
        if self._vmexitbp != on:
            reply = self.execute("vmexitbp")
            self._vmexitbp = "enabled" in reply
        if self._vmexitbp != on:
            raise BochsError(f"vmexitbp did not switch {'on' if on else 'off'}: {reply.strip()!r}")

    # -- state ---------------------------------------------------------------------------------
    def read_registers(self, names: tuple[str, ...] = (), cpu: int | None = None) -> dict[str, int]:
        """General registers (`r`), control registers and EFER (`creg`) of the debugger's current
        CPU, or of CPU `cpu` (which becomes the current one: `set $cpu = N`)."""
        if cpu is not None:
            reply = self.execute(f"set $cpu = {cpu}")
            if reply.strip():
                raise BochsError(f"set $cpu = {cpu}: {reply.strip()!r}")
        regs = parse_regs(self.execute("r"))
        regs.update(parse_creg(self.execute("creg")))
        if names:
            return {n: regs[n] for n in names if n in regs}
        return regs

    def segments(self) -> dict[str, dict[str, int]]:
        return parse_sreg(self.execute("sreg"))

    def page(self, laddr: int) -> PageWalk:
        return parse_page(self.execute(f"page 0x{laddr:x}"))

    def info_tab(self) -> list[tuple[int, int, int]]:
        return parse_info_tab(self.execute("info tab", timeout=120))

    def read_memory(self, addr: int, size: int, physical: bool = False) -> bytes:
        """`xp` (physical) or `x` (linear, current CR3). Text, 8 bytes a unit: for small reads."""
        cmd = "xp" if physical else "x"
        out = bytearray()
        pos, end = addr, addr + size
        while pos < end:
            start = pos & ~7
            n = min((end - start + 7) // 8, 512)
            text = self.execute(f"{cmd} /{n}gx 0x{start:x}")
            data = x_bytes(text, "g")
            if len(data) < n * 8:
                raise MemoryReadError(addr, size, f"Bochs `{cmd}` answered: {text.strip()[:200]}")
            take = data[pos - start:]
            out += take[:end - pos]
            pos = start + n * 8
        return bytes(out[:size])

    def _read_memory(self, addr: int, size: int) -> bytes:
        return self.read_memory(addr, size, physical=False)

    def set_physical(self, on: bool) -> None:   # no mode to switch: xp vs x per read
        self._physical = on

    def dump_linear(self, path: str, laddr: int, size: int, timeout: float = 600.0) -> int:
        """`writemem` LEN bytes of linear memory at LADDR (current context) into PATH.
        Returns how many bytes Bochs wrote: fewer than LEN if it met an unmapped page."""
        if '"' in path:
            raise BochsError(f"path with a double quote: {path}")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        text = self.execute(f'writemem "{path}" 0x{laddr:x} {size}', timeout=timeout)
        written = os.path.getsize(path) if os.path.exists(path) else 0
        if written != size and "not available" not in text and text.strip():
            raise BochsError(f"writemem: {text.strip()[:300]}")
        return written

    # -- end -----------------------------------------------------------------------------------
    def quit(self, timeout: float = 10.0) -> None:
        if self.alive():
            if self.running:
                try:
                    self.interrupt(timeout)
                except (TimeoutError, TargetGone):
                    pass
            try:
                self.proc.stdin.write(b"q\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.close()

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)
        for f in (self._stderr, self._transcript):
            if f not in (None, subprocess.DEVNULL):
                try:
                    f.close()
                except OSError:
                    pass
