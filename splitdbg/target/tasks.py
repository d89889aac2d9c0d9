"""Task states and kernel stacks, read from guest memory: the first look at a hung guest.

Which tasks sleep, and where. The target kernel is built with the "guess" unwinder (no ORC, no
frame pointers), so Linux itself finds a sleeping task's frames by scanning its stack upward from
the saved stack pointer (thread.sp) for kernel text addresses, and its wait channel is the first
of them outside the scheduler and the lock functions (arch/x86/kernel/unwind_guess.c,
arch/x86/kernel/process.c __get_wchan, kernel/sched/core.c in_sched_functions). This does the same
from outside, so the guest's /proc/PID/wchan and /proc/PID/stat are its oracles. The frames are
guesses, as the kernel's "? " lines are: a stale return address left on the stack looks the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MemoryReadError, SplitdbgError
from .kernel import Kernel, Task
from .snapshot import module_symbols
from .types import TypeError_

THREAD_SIZE = 16384      # PAGE_SIZE << THREAD_SIZE_ORDER (2; no KASAN)

# include/linux/sched.h: the states /proc reports (TASK_REPORT), and how fs/proc/array.c names them.
TASK_INTERRUPTIBLE, TASK_UNINTERRUPTIBLE, TASK_NOLOAD, TASK_RTLOCK_WAIT = 0x1, 0x2, 0x400, 0x1000
TASK_REPORT = 0x7F
TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD
STATE_LETTERS = "RSDTtXZPI"      # task_state_array: running, sleeping, disk sleep, stopped, tracing
                                 # stop, dead, zombie, parked, idle


def state_letter(state: int, exit_state: int) -> str:
    """The letter of /proc/PID/stat for task_struct.__state and .exit_state (__task_state_index)."""
    s = (state | exit_state) & TASK_REPORT
    if state & TASK_IDLE == TASK_IDLE:
        s = TASK_REPORT + 1
    if state & TASK_RTLOCK_WAIT:
        s = TASK_UNINTERRUPTIBLE
    return STATE_LETTERS[s.bit_length()]


@dataclass(frozen=True)
class Frame:
    addr: int             # a kernel text address found on the stack (a return address, probably)
    slot: int             # where on the stack
    symbol: str | None    # "name+0xoff", or "name+0xoff [module]"


@dataclass
class TaskState:
    pid: int
    tgid: int
    comm: str
    state: str            # R S D T t X Z P I, as /proc/PID/stat says
    cpu: int              # the CPU it last ran on (task_cpu)
    on_cpu: bool          # running on that CPU now: its saved stack pointer is stale
    wchan: str            # where it sleeps (as /proc/PID/wchan), "" when running or unknown
    frames: list[Frame] = field(default_factory=list)   # with stacks=True: the stack's text addresses
    note: str = ""        # why the stack could not be read
    container: int = 0    # the split-kernel container its address space runs in (0: root mode)


class TaskReader:
    """Reads the scheduling state and kernel stacks of tasks (one Kernel, its vmlinux)."""

    def __init__(self, kernel: Kernel, problems: list[str] | None = None):
        self.k = kernel
        t = kernel.types
        t.load("thread_struct", "thread_info")
        self.o_state = t.offsetof("task_struct", "__state")
        self.o_exit_state = t.offsetof("task_struct", "exit_state")
        self.o_on_cpu = t.offsetof("task_struct", "on_cpu")
        self.o_on_rq = t.offsetof("task_struct", "on_rq")
        self.o_stack = t.offsetof("task_struct", "stack")
        self.o_sp = t.offsetof("task_struct", "thread.sp")
        # task_cpu(): thread_info.cpu since 5.16 (THREAD_INFO_IN_TASK), task_struct.cpu before.
        try:
            self.o_cpu = t.offsetof("task_struct", "thread_info.cpu")
        except TypeError_:
            self.o_cpu = t.offsetof("task_struct", "cpu")
        sym = kernel.symbols
        self.text = (sym.address("_stext"), sym.address("_etext"))
        self.not_wchan = [(sym.address("__sched_text_start"), sym.address("__sched_text_end")),
                          (sym.address("__lock_text_start"), sym.address("__lock_text_end"))]
        self.modules = [(m.base, m.base + (m.text_size or m.size), m.name) for m in kernel.modules(problems)]
        self.module_symbols = module_symbols(kernel)     # names inside the lab's own modules

    def is_text(self, addr: int) -> bool:
        return self.text[0] <= addr < self.text[1] or any(b <= addr < e for b, e, _ in self.modules)

    def symbolize(self, addr: int) -> str | None:
        hit = self.k.symbols.lookup(addr)
        if hit and self.text[0] <= addr < self.text[1]:
            return f"{hit[0].name}+{hit[1]:#x}"
        hit = self.module_symbols.lookup(addr) if self.module_symbols else None
        for b, e, name in self.modules:
            if b <= addr < e:
                return f"{hit[0].name.split(' ')[0]}+{hit[1]:#x} [{name}]" if hit else f"{addr - b:#x} [{name}]"
        return None

    def state(self, task: Task, stacks: bool = False) -> TaskState:
        k, a = self.k, task.addr
        state, exit_state = k.u32(a + self.o_state), k.u32(a + self.o_exit_state)
        ts = TaskState(task.pid, task.tgid, task.comm, state_letter(state, exit_state), k.u32(a + self.o_cpu),
                       bool(k.u32(a + self.o_on_cpu)), "")
        # get_wchan(): only for a task that is off every CPU and not runnable.
        sleeping = state not in (0, 0x200) and not k.u32(a + self.o_on_rq)   # TASK_RUNNING, TASK_WAKING
        if not (stacks or sleeping) or ts.on_cpu:
            return ts
        try:
            frames = self.frames(a)
        except SplitdbgError as exc:      # an unmapped or corrupt stack: say so, list the rest
            ts.note = f"stack unreadable: {exc}"
            return ts
        if sleeping:
            ts.wchan = next((f.symbol.split("+")[0] if not f.symbol.startswith("0x") else f.symbol
                             for f in frames if f.symbol and not any(b <= f.addr < e for b, e in self.not_wchan)), "")
        if stacks:
            ts.frames = frames
        return ts

    def frames(self, task_addr: int) -> list[Frame]:
        """Kernel text addresses on the task's stack, from its saved stack pointer up."""
        k = self.k
        base, sp = k.u64(task_addr + self.o_stack), k.u64(task_addr + self.o_sp)
        if not base:
            return []        # an exited task whose stack is gone
        if not base <= sp < base + THREAD_SIZE:
            raise MemoryReadError(sp, 8, f"saved stack pointer {sp:#x} is outside the stack at {base:#x}")
        sp &= ~7
        raw = k.read(sp, base + THREAD_SIZE - sp)
        out = []
        for off in range(0, len(raw), 8):
            addr = int.from_bytes(raw[off:off + 8], "little")
            if self.is_text(addr):
                out.append(Frame(addr, sp + off, self.symbolize(addr)))
        return out


def task_states(kernel: Kernel, stacks: bool = False, pids: set[int] | None = None, sk=None,
                problems: list[str] | None = None) -> list[TaskState]:
    """Every process's TaskState (or those in `pids`); with `sk` (a SplitKernel), its container.
    With `problems`, a corrupt task or module list, or a task whose state cannot be read, is a line
    there and the rest is still listed."""
    r = TaskReader(kernel, problems)
    out = []
    for t in kernel.tasks(problems):
        if pids is None or t.pid in pids:
            try:
                ts = r.state(t, stacks)
            except MemoryReadError as exc:
                if problems is None:
                    raise
                problems.append(f"task {t.pid} ({t.comm}) at {t.addr:#x}: {exc}: left out")
                continue
            ts.container = sk.container_of_cr3(t.pgd) if sk is not None and t.pgd else 0
            out.append(ts)
    return out
