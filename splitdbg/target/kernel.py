"""The guest kernel seen from outside: virtual reads, processes, modules.

Everything is read from guest-physical memory through a PhysicalMemory backend; kernel virtual
addresses are translated with the x86 walker over the kernel's own page tables (init_top_pgt), so
this works while the guest runs (shared RAM file) as well as when it is stopped (gdbstub).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..arch import x86_paging
from ..errors import MemoryReadError, SplitdbgError
from .symbols import ElfSymbols, check_vmlinux
from .types import DwarfTypes

START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map: the kernel image's virtual base
PAGE = 0x1000
MAX_TASKS = 65536  # a task list longer than this is corrupt (or we are reading a moving target)


class KernelError(SplitdbgError):
    pass


@dataclass(frozen=True)
class Task:
    addr: int        # struct task_struct *
    pid: int
    tgid: int
    comm: str
    mm: int          # struct mm_struct * (0 for kernel threads)
    pgd: int         # physical address of the top-level page table (0 for kernel threads)
    ppid: int = 0    # tgid of real_parent (the process that forked it, not the reaper it has now)


@dataclass(frozen=True)
class LoadedModule:
    addr: int        # struct module *
    name: str
    base: int        # core_layout.base: start of the module's text
    size: int
    text_size: int
    ro_size: int


LOADED_MM_SWITCHING = 1     # arch/x86/mm/tlb.c: cpu_tlbstate.loaded_mm while switch_mm runs


class Kernel:
    """A Linux 6.1 x86-64 kernel in guest memory, with vmlinux's symbols and DWARF."""

    STRUCTS = ("task_struct", "mm_struct", "module", "module_layout", "list_head", "module_sect_attrs",
               "module_sect_attr", "bin_attribute", "attribute", "cpuinfo_x86")

    def __init__(self, mem, vmlinux: str, mode: x86_paging.PagingMode | None = None):
        self.mem = mem
        check_vmlinux(vmlinux, what="vmlinux")     # a user program, a .ko, a truncated file: say so, in one line
        self.symbols = ElfSymbols(vmlinux)
        self.types = DwarfTypes(vmlinux, self.symbols.build_id)
        self.types.load(*self.STRUCTS)
        self._mode = mode
        self._tlb: dict[int, int] = {}

    def banner_mismatch(self) -> str | None:
        """Why this vmlinux is not the guest's kernel (None when it is): its `linux_banner` ("Linux
        version 6.1.192 ... #1 SMP ...") against the one in guest memory at the same address."""
        from elftools.elf.elffile import ELFFile

        if "linux_banner" not in self.symbols:
            return None
        addr = self.symbols.address("linux_banner")
        with open(self.symbols.path, "rb") as f:
            elf = ELFFile(f)
            sec = next((s for s in elf.iter_sections()
                        if s["sh_addr"] <= addr < s["sh_addr"] + s["sh_size"] and s["sh_type"] != "SHT_NOBITS"), None)
            if sec is None:
                return None
            f.seek(sec["sh_offset"] + addr - sec["sh_addr"])
            ours = f.read(160).split(b"\0", 1)[0]
        try:
            theirs = self.mem.read(self.image_pa(addr), 160).split(b"\0", 1)[0]
        except SplitdbgError:
            theirs = b""
        if theirs == ours:
            return None
        if theirs.startswith(b"Linux version"):
            said = theirs.decode(errors="replace").strip()
        else:      # KASLR or another kernel: its banner is elsewhere; found where RAM can be searched
            pa = self.mem.find(b"Linux version ") if hasattr(self.mem, "find") else None
            found = self.mem.read(pa, 160).split(b"\0", 1)[0].split(b"\n", 1)[0] if pa is not None else b""
            said = found.decode(errors="replace").strip() if found else \
                "no Linux banner at that address (another kernel, or one with KASLR)"
        return f"{self.symbols.path} is {ours.decode(errors='replace').strip()!r}; the guest has {said!r}"

    # -- addresses -----------------------------------------------------------------------------
    def image_pa(self, va: int) -> int:
        """Physical address of a kernel-image symbol (KASLR is off, phys_base is read once)."""
        return va - START_KERNEL_MAP + self.phys_base

    @cached_property
    def phys_base(self) -> int:
        # phys_base lives in the image itself; with an unrelocated kernel it is 0, which is also
        # what makes its own address computable. A non-zero value means KASLR-like relocation.
        pa = self.symbols.address("phys_base") - START_KERNEL_MAP
        return int.from_bytes(self.mem.read(pa, 8), "little")

    @cached_property
    def kernel_cr3(self) -> int:
        return self.image_pa(self.symbols.address("init_top_pgt"))

    @cached_property
    def mode(self) -> x86_paging.PagingMode:
        if self._mode is not None:
            return self._mode
        # The kernel records its own choices: __pgtable_l5_enabled is 1 under 5-level paging, and
        # boot_cpu_data.x86_phys_bits is MAXPHYADDR (40 under QEMU TCG, not the architectural 52),
        # which decides which entry bits are reserved.
        levels = 5 if "__pgtable_l5_enabled" in self.symbols and self.read_image_u32("__pgtable_l5_enabled") else 4
        maxphyaddr = 52
        if "boot_cpu_data" in self.symbols:
            pa = self.image_pa(self.symbols.address("boot_cpu_data") + self.types.offsetof("cpuinfo_x86", "x86_phys_bits"))
            bits = self.mem.read(pa, 1)[0]
            if 32 <= bits <= 52:
                maxphyaddr = bits
        return x86_paging.PagingMode(levels=levels, maxphyaddr=maxphyaddr)

    def read_image_u32(self, name: str) -> int:
        return int.from_bytes(self.mem.read(self.image_pa(self.symbols.address(name)), 4), "little")

    def translate(self, va: int) -> int:
        page = va & ~(PAGE - 1)
        frame = self._tlb.get(page)
        if frame is None:
            t = x86_paging.walk(self.mem, self.kernel_cr3, page, self.mode)
            if t.pa is None:
                raise MemoryReadError(va, 1, f"kernel virtual address not mapped ({t.fault})")
            frame = t.pa & ~(PAGE - 1)
            self._tlb[page] = frame
        return frame | (va & (PAGE - 1))

    def flush(self) -> None:
        """Forget cached translations (the guest runs on: mappings can change)."""
        self._tlb.clear()

    def read(self, va: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            n = min(size, PAGE - (va & (PAGE - 1)))
            out += self.mem.read(self.translate(va), n)
            va, size = va + n, size - n
        return bytes(out)

    def u64(self, va: int) -> int:
        return int.from_bytes(self.read(va, 8), "little")

    def u32(self, va: int) -> int:
        return int.from_bytes(self.read(va, 4), "little")

    def cstr(self, va: int, size: int) -> str:
        return self.read(va, size).split(b"\0", 1)[0].decode(errors="replace")

    def direct_map_pa(self, va: int) -> int:
        return self.translate(va)

    # -- lists ---------------------------------------------------------------------------------
    def list_entries(self, head: int, struct: str, member: str, limit: int = MAX_TASKS,
                     problems: list[str] | None = None):
        """Addresses of the structs on a list_head list (like list_for_each_entry). A list that
        loops without coming back to its head, runs past `limit` nodes or leads to an unreadable
        node raises KernelError; with `problems`, the walk instead stops there with a line in it
        (the nodes before are still yielded)."""
        off = self.types.offsetof(struct, member)
        seen = {head}
        what = f"list at {head:#x} ({struct}.{member})"
        n = 0
        try:
            node = self.u64(head)
            while node != head:
                if node in seen:
                    raise KernelError(f"{what} loops: node {node:#x} comes again after {n} nodes "
                                      f"without the head: corrupt")
                if len(seen) > limit:
                    raise KernelError(f"{what} is longer than {limit} nodes: corrupt")
                seen.add(node)
                nxt = self.u64(node)            # readable before it is yielded: a wild pointer ends here
                yield node - off
                n += 1
                node = nxt
        except (KernelError, MemoryReadError) as exc:
            if problems is None:
                raise KernelError(str(exc) if isinstance(exc, KernelError) else f"{what}: node unreadable: {exc}") \
                    from exc
            problems.append((str(exc) if isinstance(exc, KernelError) else f"{what}: node unreadable: {exc}")
                            + f": the walk stops after {n} nodes")

    # -- processes and modules -----------------------------------------------------------------
    def tasks(self, problems: list[str] | None = None) -> list[Task]:
        """Every process (thread-group leader) on init_task.tasks, init_task included. With
        `problems`, a corrupt list ends the walk (and a task whose fields cannot be read is left
        out) with a line there, instead of raising KernelError."""
        t = self.types
        o_pid, o_tgid, o_comm, o_mm = (t.offsetof("task_struct", m) for m in ("pid", "tgid", "comm", "mm"))
        o_pgd = t.offsetof("mm_struct", "pgd")
        o_parent = t.offsetof("task_struct", "real_parent")
        init = self.symbols.address("init_task")
        out = []
        for addr in [init, *self.list_entries(init + t.offsetof("task_struct", "tasks"), "task_struct", "tasks",
                                              problems=problems)]:
            try:
                mm = self.u64(addr + o_mm)
                pgd = self.translate(self.u64(mm + o_pgd)) if mm else 0
                parent = self.u64(addr + o_parent)
                out.append(Task(addr, self.u32(addr + o_pid), self.u32(addr + o_tgid),
                                self.cstr(addr + o_comm, 16), mm, pgd, self.u32(parent + o_tgid) if parent else 0))
            except MemoryReadError as exc:
                if problems is None:
                    raise
                problems.append(f"task_struct at {addr:#x}: {exc}: left out")
        return out

    def cpu_pgds(self) -> dict[int, set[int]]:
        """CPU -> guest-physical pgds of the address spaces it still holds: the one in its CR3
        (cpu_tlbstate.loaded_mm) and the scheduler's lazy references (rq->curr and rq->idle's
        active_mm, rq->prev_mm). An idle CPU keeps the last process's, which may have exited and
        which x86 may already have swapped for init_mm in CR3. Inside switch_mm, loaded_mm is a
        marker and says nothing: the CR3 being left is then known only to a hypervisor."""
        t = self.types
        t.load("tlb_state", "rq")
        per_cpu = self.symbols.address("__per_cpu_offset")
        tlb_state, runqueues = self.symbols.address("cpu_tlbstate"), self.symbols.address("runqueues")  # per-CPU offsets
        o_pgd, o_active = t.offsetof("mm_struct", "pgd"), t.offsetof("task_struct", "active_mm")
        n = self.u32(self.symbols.address("nr_cpu_ids"))
        if not 0 < n <= 8192:
            raise KernelError(f"nr_cpu_ids is {n}: corrupt or not this kernel")
        out: dict[int, set[int]] = {}
        for cpu in range(n):
            base = self.u64(per_cpu + 8 * cpu)
            rq = runqueues + base
            mms = {self.u64(tlb_state + base + t.offsetof("tlb_state", "loaded_mm")),
                   self.u64(rq + t.offsetof("rq", "prev_mm"))}
            for task in (self.u64(rq + t.offsetof("rq", "curr")), self.u64(rq + t.offsetof("rq", "idle"))):
                if task:
                    mms.add(self.u64(task + o_active))
            out[cpu] = {self.translate(self.u64(mm + o_pgd)) for mm in mms - {0, LOADED_MM_SWITCHING}}
        return out

    def modules(self, problems: list[str] | None = None) -> list[LoadedModule]:
        """The loaded modules (the `modules` list). With `problems`, as tasks()."""
        t = self.types
        head = self.symbols.address("modules")
        out = []
        for addr in self.list_entries(head, "module", "list", limit=4096, problems=problems):
            try:
                out.append(self._module(addr, addr + t.offsetof("module", "core_layout")))
            except MemoryReadError as exc:
                if problems is None:
                    raise
                problems.append(f"struct module at {addr:#x}: {exc}: left out")
        return out

    def _module(self, addr: int, base: int) -> LoadedModule:
        t = self.types
        return LoadedModule(addr, self.cstr(addr + t.offsetof("module", "name"), 56),
                            self.u64(base + t.offsetof("module_layout", "base")),
                            self.u32(base + t.offsetof("module_layout", "size")),
                            self.u32(base + t.offsetof("module_layout", "text_size")),
                            self.u32(base + t.offsetof("module_layout", "ro_size")))

    def module_sections(self, mod: LoadedModule) -> dict[str, int]:
        """Section name -> load address of a module (module->sect_attrs, as /sys/module/X/sections)."""
        t = self.types
        attrs = self.u64(mod.addr + t.offsetof("module", "sect_attrs"))
        if not attrs:
            return {}
        n = self.u32(attrs + t.offsetof("module_sect_attrs", "nsections"))
        if n > 256:
            raise KernelError(f"module {mod.name}: {n} sections: corrupt sect_attrs")
        first = attrs + t.offsetof("module_sect_attrs", "attrs")
        size = t.sizeof("module_sect_attr")
        name_off = t.offsetof("module_sect_attr", "battr") + t.offsetof("bin_attribute", "attr") + \
            t.offsetof("attribute", "name")
        out = {}
        for i in range(n):
            a = first + i * size
            name = self.cstr(self.u64(a + name_off), 64)
            out[name] = self.u64(a + t.offsetof("module_sect_attr", "address"))
        return out
