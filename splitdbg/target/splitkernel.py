"""The split-kernel module's state, read from guest-physical memory.

Mirrors kernel/include/splitkernel.h (checked against the module's own DWARF by the tests). The
debug descriptor is found without symbols: it fills a page of its own and starts with SK_MAGIC
and its own physical address, so a scan of page starts finds and confirms it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import MemoryReadError, SplitdbgError

SK_MAGIC = 0x4E524B54494C5053
SK_ABI_VERSION = 6
MAX_CPUS = 8
NR_REGIONS = 6

VENDORS = {1: "SVM", 2: "VMX"}
VENDOR_SVM, VENDOR_VMX = 1, 2
EVENT_KINDS = {1: "exit", 2: "violation", 3: "cr3-switch", 4: "hypercall", 5: "enter-nr", 6: "cr4-blocked",
               7: "lifecycle", 8: "attack", 9: "fatal"}
KIND_ATTACK = 8
SECURITY_KINDS = (2, 6, 8, 9)     # recorded in each CPU's security ring (SK_EV_IS_SECURITY)
RING_ALL, RING_SECURITY = 0, 1
ACTIONS = {0: "none", 1: "allow", 2: "deny", 3: "isolate", 4: "switch", 5: "emulate", 6: "probe"}
REGIONS = {0: "none", 1: "text", 2: "rodata", 3: "module-text", 4: "sk-state", 5: "protected"}
POLICIES = {0: "deny", 1: "isolate", 2: "log"}
HYPERCALLS = {0x5301: "PING", 0x5302: "DEVIRT", 0x5303: "NEW_CONTAINER", 0x5304: "ADD_PGD", 0x5305: "DEL_PGD",
              0x5306: "FREE_CONTAINER", 0x5307: "QUERY", 0x5308: "RELEASE", 0x5309: "PROTECT", 0x530A: "UNPROTECT",
              0x530B: "PROBE_GET", 0x530C: "PROBE_SET", 0x530D: "PROBE_CLEAR", 0x530E: "WHOAMI",
              0x530F: "MODTEXT_ADD", 0x5310: "MODTEXT_DEL", 0x5311: "BEGIN_UNLOAD",
              0x5312: "CONTAINER_OF", 0x5313: "REPORT"}
# An attack event's `region` says what its `extra` is (SK_ATTACK_* in splitkernel.h).
ATTACK_HYPERCALL, ATTACK_EXIT, ATTACK_MSR, ATTACK_CR, ATTACK_REPORT = 1, 2, 3, 4, 5
ATTACK_CLASSES = {1: "hypercall", 2: "instruction", 3: "msr", 4: "cr", 5: "report"}
REPORTS = {1: "ptrace (attach, /proc/PID/mem, process_vm_writev) of a process outside its container",
           2: "TIOCSTI/TIOCLINUX (typing into a terminal) from a container"}
MSRS = {0x1B: "IA32_APIC_BASE", 0x3A: "IA32_FEATURE_CONTROL", 0x79: "IA32_BIOS_UPDT_TRIG", 0x9B: "IA32_SMM_MONITOR_CTL",
        0xC0000080: "EFER", 0xC0010114: "VM_CR", 0xC0010117: "VM_HSAVE_PA", 0xC0010118: "SVM_KEY",
        **{0x200 + i: f"MTRR_PHYS{'BASE' if i % 2 == 0 else 'MASK'}{i // 2}" for i in range(20)}, 0x2FF: "MTRR_DEF_TYPE"}


def attack_what(region: int, extra: int, vendor: int) -> str:
    """An attack event's `extra`, in words (vendor: VENDOR_SVM or VENDOR_VMX, for exit codes)."""
    from ..vmx_model.vmcb import EXIT_CODES
    from ..vmx_model.vmcs import EXIT_REASONS

    if region == ATTACK_HYPERCALL:
        return f"hypercall {HYPERCALLS.get(extra, hex(extra))} refused"
    if region == ATTACK_EXIT:
        names = EXIT_REASONS if vendor == VENDOR_VMX else EXIT_CODES
        return f"{names.get(extra, hex(extra))} (an instruction only an attacker runs)"
    if region == ATTACK_MSR:
        return f"WRMSR {MSRS.get(extra, hex(extra))} refused"
    if region == ATTACK_CR:
        return f"MOV to CR{extra} with a reserved or host-owned bit"
    if region == ATTACK_REPORT:
        return f"{REPORTS.get(extra, f'report {extra}')} refused"
    return f"attack {extra:#x}"

# struct layouts, field by field as in the header (little-endian, natural alignment = packed here)
EVENT = struct.Struct("<QQIIIIQQQQQQHHIQQQ")
EVENT_FIELDS = ("seq", "tsc", "cpu", "container", "pid", "kind", "exit_code", "exitinfo1", "exitinfo2", "rip",
                "cr3", "slat_root", "cpl", "region", "action", "extra", "guest_linear", "exitintinfo")
RING_HEADER = struct.Struct("<QQIIII")        # head, overflow, entries, event_size, cpu, ring_kind
_SEQ_TSC = struct.Struct("<QQ")
WALK_LEVELS = 5
WALK = struct.Struct(f"<{WALK_LEVELS}Q")      # struct sk_walk, beside each security-ring entry
COUNTERS = struct.Struct("<6Q6Q5Q")
COUNTER_FIELDS = ("exits", "exits_npf", "exits_cr3", "exits_vmmcall", "exits_other", "cr3_switches_in")
CONTAINER_HEAD = struct.Struct("<IIIIQII")     # id, active, owner_pid, policy, ncr3, npgds, nisolated
MAX_PGDS, MAX_ISOLATED, MAX_PROTECTED = 64, 64, 16
CONTAINER_TAIL = struct.Struct(f"<II{MAX_PROTECTED}Q")   # nprotected, protected_flags, protected_pa[]
CONTAINER_SIZE = CONTAINER_HEAD.size + 8 * (MAX_PGDS + 2 * MAX_ISOLATED) + COUNTERS.size + 16 + CONTAINER_TAIL.size
GUEST_REGS = ("cr0", "cr3", "cr4", "efer")
CPU_NOW = ("cr3", "ncr3", "container", "reserved")     # struct sk_cpu_now, per CPU
DESCRIPTOR = struct.Struct(f"<QIIQIIIIQIIII8Q8QQQQQQQQQQQII{4 * MAX_CPUS}Q8QQQQQ" + "QQII" * MAX_CPUS)
DESCRIPTOR_FIELDS = ("magic", "version", "size", "self_pa", "vendor", "ncpus", "cpu_mask", "max_containers",
                     "containers_pa", "container_size", "event_size", "ring_entries", "slat_levels") + \
    tuple(f"rings_pa{i}" for i in range(MAX_CPUS)) + tuple(f"vmcb_pa{i}" for i in range(MAX_CPUS)) + \
    ("pool_pa", "pool_size", "kernel_text_pa", "kernel_text_end_pa", "rodata_pa", "rodata_end_pa", "total_exits",
     "hypercalls", "load_count", "slat_caps", "maxphyaddr", "reserved") + \
    tuple(f"guest{i}_{r}" for i in range(MAX_CPUS) for r in GUEST_REGS) + \
    tuple(f"sec_rings_pa{i}" for i in range(MAX_CPUS)) + ("load_nonce", "module_core_va", "state_page_pa", "host_cr3") + \
    tuple(f"now{i}_{r}" for i in range(MAX_CPUS) for r in CPU_NOW)


_CPU_MASK_OFFSET = struct.calcsize("<QIIQII")   # magic, version, size, self_pa, vendor, ncpus


class ModuleNotLoaded(SplitdbgError):
    """No split-kernel descriptor in guest memory."""


class ModuleUnusable(SplitdbgError):
    """A descriptor that names the module but whose fields cannot be right (corrupt memory, a torn
    read): nothing of the module's state can be read through it."""


class AbiMismatch(ModuleUnusable):
    pass


# Bounds of what a sane descriptor, ring or container can hold (splitkernel.h).
MAX_CONTAINERS = 32
MAX_RING_ENTRIES = 65536
MAX_SPAN = 1 << 30            # kernel text / rodata: 1 GiB at most
MAX_HEAD = 1 << 48            # events ever written to one ring: centuries at any real rate
SEC_RING_RATIO = 4            # SK_RING_ENTRIES / SK_SEC_RING_ENTRIES


def span_problem(name: str, lo: int, hi: int, mem=None) -> str | None:
    """Why [lo, hi) is no span of guest RAM (of `mem`, when given) of a sane size (None when it is)."""
    if not lo < hi:
        return f"{name} {lo:#x}-{hi:#x} is empty or reversed"
    if hi - lo > MAX_SPAN:
        return f"{name} {lo:#x}-{hi:#x} spans {(hi - lo) >> 20} MiB (more than {MAX_SPAN >> 20} MiB)"
    if mem is not None and not mem.contains(lo, hi - lo):
        return f"{name} {lo:#x}-{hi:#x} is not inside guest RAM"
    return None


@dataclass(frozen=True)
class Event:
    seq: int
    tsc: int
    cpu: int
    container: int
    pid: int
    kind: int
    exit_code: int
    exitinfo1: int
    exitinfo2: int
    rip: int
    cr3: int
    slat_root: int
    cpl: int
    region: int
    action: int
    extra: int
    guest_linear: int = 0     # VMX EPT violations: the guest-linear address (exit qualification bit 7)
    exitintinfo: int = 0      # the event being delivered: EXITINTINFO / IDT-vectoring info, error code in 63:32
    ring: int = 0             # which of the CPU's rings held it: RING_ALL (0) or RING_SECURITY (1); not in the struct
    slat_walk: tuple[int, ...] = ()   # violations: the second-level entries on the walk at the exit, top first

    @property
    def kind_name(self) -> str:
        return EVENT_KINDS.get(self.kind, str(self.kind))

    @property
    def action_name(self) -> str:
        return ACTIONS.get(self.action, str(self.action))

    @property
    def region_name(self) -> str:
        if self.kind == KIND_ATTACK:      # there the field says what `extra` is
            return ATTACK_CLASSES.get(self.region, str(self.region))
        return REGIONS.get(self.region, str(self.region))

    def as_dict(self) -> dict:
        d = {f: getattr(self, f) for f in EVENT_FIELDS + ("ring",)}
        d["slat_walk"] = list(self.slat_walk)
        d.update(kind_name=self.kind_name, action_name=self.action_name, region_name=self.region_name)
        return d


@dataclass(frozen=True)
class Counters:
    exits: int
    exits_npf: int
    exits_cr3: int
    exits_vmmcall: int
    exits_other: int
    cr3_switches_in: int
    violations: dict
    denied: int
    allowed: int
    isolated: int
    cr4_blocked: int
    attacks: int = 0          # refused attack attempts (a flood is sampled in the ring, counted here)

    @classmethod
    def unpack(cls, raw: bytes) -> "Counters":
        v = COUNTERS.unpack(raw)
        return cls(*v[:6], {REGIONS[i]: v[6 + i] for i in range(NR_REGIONS)}, *v[12:17])


@dataclass(frozen=True)
class Container:
    id: int
    owner_pid: int
    owner_comm: str
    policy: dict          # region name -> policy name
    ncr3: int
    pgds: tuple[int, ...]
    isolated: tuple[tuple[int, int], ...]   # (guest-physical page, private copy)
    counters: Counters
    released: bool = False   # its last process exited; freed once no address space uses it
    protected: tuple[int, ...] = ()          # pages present only in this container
    protected_visible_to_root: tuple[int, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.id == 0


@dataclass(frozen=True)
class CpuNow:
    cpu: int
    cr3: int          # guest CR3 it runs
    ncr3: int         # nested table of the container it runs
    container: int


@dataclass
class Ring:
    cpu: int
    head: int
    overflow: int
    entries: int
    events: list[Event] = field(default_factory=list)
    kind: int = RING_ALL      # RING_ALL or RING_SECURITY


def find_descriptor(mem, hint: int | None = None) -> int:
    """Physical address of the live descriptor: a page start holding SK_MAGIC and its own address,
    with CPUs under the handler. The module clears the magic when it unloads or fails to load, but
    a page freed by a crash, or by a module built before it did, may still look like one: such a
    copy has no CPU left in its mask (each CPU's bit is cleared as it leaves the handler)."""
    if hint is not None and is_live_descriptor(mem, hint):
        return hint
    # In address order, up to the first live one: reading the rest of a shared RAM file would
    # make tmpfs allocate every page that the guest never touched.
    dead = []
    for start, end in mem.ram_ranges():
        chunk = 64 << 20
        for base in range(start, end, chunk):
            n = min(chunk, end - base)
            words = mem.page_heads(base, base + n)     # the first word of each page
            for i in np.flatnonzero(words == np.uint64(SK_MAGIC)).tolist():
                pa = base + i * 4096
                if _is_descriptor(mem, pa):
                    if _cpu_mask(mem, pa):
                        return pa
                    dead.append(pa)
    said = f" ({len(dead)} dead cop{'y' if len(dead) == 1 else 'ies'} of it from earlier loads at " + \
        ", ".join(f"{pa:#x}" for pa in dead) + ")" if dead else ""
    raise ModuleNotLoaded(f"no live split-kernel descriptor in guest memory{said}: is splitkernel.ko loaded?")


def is_live_descriptor(mem, pa: int) -> bool:
    """A descriptor at `pa` (its magic and its own address) with CPUs under the handler: a
    loaded module's, not a freed copy of an earlier load's."""
    return _is_descriptor(mem, pa) and bool(_cpu_mask(mem, pa))


def _is_descriptor(mem, pa: int) -> bool:
    try:
        magic, _version, _size, self_pa = struct.unpack_from("<QIIQ", mem.read(pa, 24))
    except MemoryReadError:
        return False
    return magic == SK_MAGIC and self_pa == pa


def _cpu_mask(mem, pa: int) -> int:
    try:
        return struct.unpack_from("<I", mem.read(pa + _CPU_MASK_OFFSET, 4))[0]
    except MemoryReadError:
        return 0


class ModuleReloaded(ModuleNotLoaded):
    """The descriptor now belongs to another load of the module (its nonce changed)."""


class SplitKernel:
    """The module's state in one guest: descriptor, containers, rings. Re-read with refresh()."""

    def __init__(self, mem, descriptor_pa: int | None = None, event_cache: dict | None = None):
        self.mem = mem
        self.pa = find_descriptor(mem, descriptor_pa)
        # Decoded events by (cpu, seq, tsc): a poller re-reads the same ring slots many times.
        self.event_cache = event_cache if event_cache is not None else {}
        self.refresh()

    def refresh(self) -> None:
        raw = self.mem.read(self.pa, DESCRIPTOR.size)
        d = dict(zip(DESCRIPTOR_FIELDS, DESCRIPTOR.unpack(raw)))
        if d["magic"] != SK_MAGIC or d["self_pa"] != self.pa:
            raise ModuleNotLoaded("module unloaded: the split-kernel descriptor is gone (or the guest rebooted)")
        if getattr(self, "d", None) is not None and d.get("load_nonce") != self.d.get("load_nonce"):
            raise ModuleReloaded("module reloaded: the descriptor now belongs to a new load")
        if d["version"] != SK_ABI_VERSION or d["size"] != DESCRIPTOR.size or d["event_size"] != EVENT.size \
                or d["container_size"] != CONTAINER_SIZE:
            raise AbiMismatch(f"module ABI version {d['version']} (descriptor {d['size']} bytes, event "
                              f"{d['event_size']}, container {d['container_size']}) differs from splitdbg's "
                              f"version {SK_ABI_VERSION} ({DESCRIPTOR.size}, {EVENT.size}, {CONTAINER_SIZE})")
        self.problems = self._check_descriptor(d)
        self.d = d

    def _check_descriptor(self, d: dict) -> list[str]:
        """Raise ModuleUnusable for a field nothing can be read without; return the problems that
        leave the rest readable (a CPU's ring, a region, the physical-address width)."""
        where = f"split-kernel descriptor at {self.pa:#x}"

        def bad(what: str):
            return ModuleUnusable(f"{where} is corrupt: {what}")

        if d["vendor"] not in VENDORS:
            raise bad(f"vendor {d['vendor']} (not 1 SVM or 2 VMX)")
        if d["slat_levels"] not in (4, 5):
            raise bad(f"slat_levels {d['slat_levels']} (not 4 or 5)")
        if not 0 < d["ncpus"] <= MAX_CPUS:
            raise bad(f"ncpus {d['ncpus']} (1 to {MAX_CPUS})")
        if not 0 < d["max_containers"] <= MAX_CONTAINERS:
            raise bad(f"max_containers {d['max_containers']} (1 to {MAX_CONTAINERS})")
        n = d["ring_entries"]
        if not (0 < n <= MAX_RING_ENTRIES and n & (n - 1) == 0) or n < SEC_RING_RATIO:
            raise bad(f"ring_entries {n} (a power of two, {SEC_RING_RATIO} to {MAX_RING_ENTRIES})")
        pool, size = d["pool_pa"], d["pool_size"]
        if not 0 < size <= MAX_SPAN or pool & 0xFFF or not self.mem.contains(pool, size):
            raise bad(f"pool {pool:#x} + {size:#x} is not a page-aligned span of guest RAM of at most "
                      f"{MAX_SPAN >> 20} MiB")
        cpa, csize = d["containers_pa"], CONTAINER_SIZE * d["max_containers"]
        if not (pool <= cpa and cpa + csize <= pool + size):
            raise bad(f"containers {cpa:#x}-{cpa + csize:#x} are not inside the pool {pool:#x}-{pool + size:#x}")
        problems = []
        extra = d["cpu_mask"] & ~((1 << d["ncpus"]) - 1)
        if extra:
            problems.append(f"{where}: cpu_mask {d['cpu_mask']:#x} names CPUs beyond ncpus {d['ncpus']}: "
                            f"ignored ({extra:#x})")
            d["cpu_mask"] &= (1 << d["ncpus"]) - 1
        if d["maxphyaddr"] and not 32 <= d["maxphyaddr"] <= 52:
            problems.append(f"{where}: maxphyaddr {d['maxphyaddr']} (not 32 to 52): the architectural default is used")
            d["maxphyaddr"] = 0
        for name, lo, hi in (("kernel text", d["kernel_text_pa"], d["kernel_text_end_pa"]),
                             ("kernel rodata", d["rodata_pa"], d["rodata_end_pa"])):
            why = span_problem(name, lo, hi, self.mem)
            if why:
                problems.append(f"{where}: {why}: not checked")
        return problems

    def region(self, name: str) -> tuple[int, int] | None:
        """(start, end) guest-physical of "text" or "rodata" when the descriptor's span is sane."""
        lo, hi = (self.d["kernel_text_pa"], self.d["kernel_text_end_pa"]) if name == "text" else \
            (self.d["rodata_pa"], self.d["rodata_end_pa"])
        return None if span_problem(name, lo, hi, self.mem) else (lo, hi)

    # -- descriptor ---------------------------------------------------------------------------
    @property
    def vendor(self) -> str:
        return VENDORS.get(self.d["vendor"], "?")

    @property
    def arch(self) -> str:
        """The model's name for the backend: "svm" (NPT) or "vmx" (EPT)."""
        return "vmx" if self.d["vendor"] == 2 else "svm"

    @property
    def slat_name(self) -> str:
        return "EPT" if self.arch == "vmx" else "NPT"

    def delivery(self, event: Event) -> str:
        """The event whose delivery this exit interrupted, in words ("" if none)."""
        from ..vmx_model.events import decode

        d = decode(event.exitintinfo, self.arch)
        return d.describe() if d else ""

    @property
    def levels(self) -> int:
        return self.d["slat_levels"] or 4

    def slat_root(self, table_pa: int) -> int:
        """What the hardware is given for a container's top table: nCR3 itself, or the EPTP the
        module builds (write-back, page-walk length - 1 in bits 5:3; sk_eptp)."""
        if self.arch == "vmx":
            return table_pa | 6 | (self.levels - 1) << 3
        return table_pa

    def caps(self):
        """The model's capabilities from what the module read off the CPU (descriptor)."""
        from ..vmx_model.common import Caps

        maxphy = self.d["maxphyaddr"] or None
        if self.arch == "vmx":
            cap = self.d["slat_caps"]
            return Caps(maxphyaddr=maxphy or 46, ept_execute_only=bool(cap & 1), ept_1g=bool(cap >> 17 & 1),
                        ept_5level=bool(cap >> 7 & 1), ept_ad=bool(cap >> 21 & 1),
                        ept_advanced_exit_info=bool(cap >> 22 & 1))
        return Caps(maxphyaddr=maxphy or 48)

    def cpu_now(self, cpu: int) -> CpuNow:
        """What `cpu` runs next, as its last exit's handling left it: the guest CR3 and the
        container (with its nested table) the handler chose for it."""
        return CpuNow(cpu, self.d[f"now{cpu}_cr3"], self.d[f"now{cpu}_ncr3"], self.d[f"now{cpu}_container"])

    def guest_regs(self, cpu: int) -> dict[str, int]:
        """CR0, CR3, CR4, EFER of the guest on `cpu` at its last VM exit (written by the handler)."""
        return {r: self.d[f"guest{cpu}_{r}"] for r in GUEST_REGS}

    @property
    def cpus(self) -> list[int]:
        return [i for i in range(MAX_CPUS) if self.d["cpu_mask"] >> i & 1]

    def vmcb_pa(self, cpu: int) -> int:
        return self.d[f"vmcb_pa{cpu}"]

    # -- containers ---------------------------------------------------------------------------
    def containers(self, problems: list[str] | None = None) -> list[Container]:
        """The live containers. One whose fields cannot be right (an id that is not its slot, a
        count past its array) is left out, with a line in `problems` saying why."""
        out = []
        size = self.d["container_size"]
        raw = self.mem.read(self.d["containers_pa"], size * self.d["max_containers"])
        for i in range(self.d["max_containers"]):
            c = raw[i * size:(i + 1) * size]
            cid, active, owner, policy, ncr3, npgds, niso = CONTAINER_HEAD.unpack_from(c)
            if not active:
                continue
            o = CONTAINER_HEAD.size
            nprot = CONTAINER_TAIL.unpack_from(c, o + 8 * (MAX_PGDS + 2 * MAX_ISOLATED) + COUNTERS.size + 16)[0]
            why = [w for w, ok in ((f"active {active} (not 1 or 2)", active in (1, 2)),
                                   (f"id {cid} in slot {i}", cid == i),
                                   (f"npgds {npgds} > {MAX_PGDS}", npgds <= MAX_PGDS),
                                   (f"nisolated {niso} > {MAX_ISOLATED}", niso <= MAX_ISOLATED),
                                   (f"nprotected {nprot} > {MAX_PROTECTED}", nprot <= MAX_PROTECTED)) if not ok]
            if why:
                if problems is not None:
                    problems.append(f"container slot {i} at {self.d['containers_pa'] + i * size:#x} is corrupt "
                                    f"({', '.join(why)}): left out")
                continue
            pgds = struct.unpack_from(f"<{MAX_PGDS}Q", c, o)[:npgds]
            gpas = struct.unpack_from(f"<{MAX_ISOLATED}Q", c, o + 8 * MAX_PGDS)[:niso]
            copies = struct.unpack_from(f"<{MAX_ISOLATED}Q", c, o + 8 * (MAX_PGDS + MAX_ISOLATED))[:niso]
            o += 8 * (MAX_PGDS + 2 * MAX_ISOLATED)
            counters = Counters.unpack(c[o:o + COUNTERS.size])
            comm = c[o + COUNTERS.size:o + COUNTERS.size + 16].split(b"\0", 1)[0].decode(errors="replace")
            nprot, pflags, *prot = CONTAINER_TAIL.unpack_from(c, o + COUNTERS.size + 16)
            prot = prot[:nprot]
            pol = {REGIONS[r]: POLICIES.get(policy >> (4 * r) & 0xF, "?") for r in (1, 2, 3)}
            out.append(Container(i, owner, comm, pol, ncr3, tuple(pgds), tuple(zip(gpas, copies)), counters,
                                 released=active == 2, protected=tuple(prot),
                                 protected_visible_to_root=tuple(p for k, p in enumerate(prot) if pflags >> k & 1)))
        return out

    def container_of_cr3(self, cr3: int) -> int:
        pgd = cr3 & 0x000FFFFFFFFFF000
        for c in self.containers():
            if pgd in c.pgds:
                return c.id
        return 0

    # -- rings --------------------------------------------------------------------------------
    # Each CPU has two rings: the busy one and the security one (violations, blocked CR4 writes,
    # attacks), which no flood of ordinary exits overwrites. A ring is named by (cpu, kind).
    def _ring_pa(self, cpu: int, kind: int = RING_ALL) -> int:
        return self.d[f"sec_rings_pa{cpu}" if kind == RING_SECURITY else f"rings_pa{cpu}"]

    def ring_header(self, cpu: int, kind: int = RING_ALL) -> tuple[int, int, int, int, int, int]:
        """(head, overflow, entries, event_size, cpu, ring_kind) of one of a CPU's rings."""
        return RING_HEADER.unpack(self.mem.read(self._ring_pa(cpu, kind), RING_HEADER.size))

    def ring_problem(self, cpu: int, kind: int = RING_ALL) -> str | None:
        """Why one of a CPU's rings cannot be read (None when its header is sane): its address, and
        each header field against the descriptor and the ABI."""
        name = f"CPU {cpu}'s {'security' if kind == RING_SECURITY else 'busy'} ring"
        pa = self._ring_pa(cpu, kind)
        pool, pool_end = self.d["pool_pa"], self.d["pool_pa"] + self.d["pool_size"]
        if not pool <= pa < pool_end or pa & 7:
            return f"{name}: address {pa:#x} is not inside the module's pool {pool:#x}-{pool_end:#x}"
        try:
            head, overflow, entries, event_size, rcpu, rkind = self.ring_header(cpu, kind)
        except MemoryReadError as exc:
            return f"{name} at {pa:#x}: {exc}"
        want = self.d["ring_entries"] // (SEC_RING_RATIO if kind == RING_SECURITY else 1)
        slot = event_size + (WALK.size if kind == RING_SECURITY else 0)
        why = [w for w, ok in ((f"entries {entries} (the descriptor says {want})", entries == want),
                               (f"event_size {event_size} (not {EVENT.size})", event_size == EVENT.size),
                               (f"cpu {rcpu}", rcpu == cpu), (f"ring_kind {rkind} (not {kind})", rkind == kind),
                               (f"head {head:#x} (more than {MAX_HEAD:#x} events)", head < MAX_HEAD),
                               (f"overflow {overflow:#x} > head {head:#x}", overflow <= head)) if not ok]
        if not why and pa + RING_HEADER.size + entries * slot > pool_end:
            why.append(f"its {entries} entries end past the pool at {pool_end:#x}")
        return f"{name} at {pa:#x} is corrupt: {', '.join(why)}" if why else None

    def ring_keys(self, problems: list[str] | None = None) -> list[tuple[int, int]]:
        """(cpu, kind) of every readable ring; with `problems`, why each other ring is left out."""
        keys = []
        for cpu in self.cpus:
            for kind in (RING_ALL, RING_SECURITY):
                why = self.ring_problem(cpu, kind)
                if why is None:
                    keys.append((cpu, kind))
                elif problems is not None:
                    problems.append(f"{why}: its events are not shown")
        return keys

    def overflow(self) -> int:
        """Events overwritten in every readable ring (each ring counts its own)."""
        return sum(self.ring_header(cpu, kind)[1] for cpu, kind in self.ring_keys())

    def ring(self, cpu: int, since: int = 0, kind: int = RING_ALL, problems: list[str] | None = None) -> Ring:
        """Events of one of a CPU's rings with seq > since (those still in the ring), oldest first.
        A ring whose header is corrupt raises ModuleUnusable; an entry naming another CPU is left
        out (with a line in `problems`)."""
        why = self.ring_problem(cpu, kind)
        if why:
            raise ModuleUnusable(why)
        pa = self._ring_pa(cpu, kind)
        head, overflow, entries, event_size, rcpu, _ = RING_HEADER.unpack(self.mem.read(pa, RING_HEADER.size))
        ring = Ring(rcpu, head, overflow, entries, kind=kind)
        first = max(since + 1, head - entries + 1, 1)
        if head < first:
            return ring
        # Read the whole array once and pick the live slots; torn or stale ones are skipped. The
        # security ring keeps each violation's second-level walk after the entries, slot for slot.
        walks = kind == RING_SECURITY
        raw = self.mem.read(pa + RING_HEADER.size, entries * (event_size + (WALK.size if walks else 0)))
        cache = self.event_cache
        strays = 0
        for seq in range(first, head + 1):
            off = ((seq - 1) % entries) * event_size
            slot_seq, tsc = _SEQ_TSC.unpack_from(raw, off)
            if slot_seq != seq:
                continue                       # torn or already overwritten
            ev = cache.get((rcpu, kind, seq, tsc))
            if ev is None:
                walk = ()
                if walks:
                    walk = WALK.unpack_from(raw, entries * event_size + ((seq - 1) % entries) * WALK.size)
                    walk = walk if any(walk) else ()
                ev = Event(*EVENT.unpack_from(raw, off), ring=kind, slat_walk=walk)
                if ev.cpu != rcpu:
                    strays += 1                # corrupt: it would be judged with another CPU's registers
                    continue
                cache[(rcpu, kind, seq, tsc)] = ev
            ring.events.append(ev)
        if strays and problems is not None:
            problems.append(f"CPU {cpu}'s {'security' if walks else 'busy'} ring at {pa:#x}: {strays} "
                            f"entr{'y' if strays == 1 else 'ies'} naming another CPU left out (corrupt)")
        if len(cache) > 8 * MAX_CPUS * entries:
            cache.clear()
        return ring

    def events(self, since: dict[tuple[int, int], int] | None = None,
               problems: list[str] | None = None) -> list[Event]:
        """Events of every readable ring (newer than since[(cpu, ring)]), merged in TSC order; with
        `problems`, why a ring or an entry was left out."""
        since = since or {}
        evs = [e for cpu, kind in self.ring_keys(problems)
               for e in self.ring(cpu, since.get((cpu, kind), 0), kind, problems).events]
        return sorted(evs, key=lambda e: (e.tsc, e.cpu, e.ring, e.seq))


def follow(sk: "SplitKernel", seconds: float | None = None, pid: int | None = None, kind: str | None = None,
           on_ready=None, on_loss=None):
    """Yield (event, model verdict) for each event that arrives from now on, for `seconds` (or
    until the caller stops iterating). The rings are polled every 0.1 s from guest memory.
    `on_ready()` is called once "now" is fixed: every event after that call is yielded.
    `on_loss(cpu, ring, n)` is called when n events of a ring were overwritten (or torn) before
    this reader saw them: a follower that falls behind says so, never silently."""
    import time

    from ..vmx_model.crosscheck import crosscheck_event

    since = {key: sk.ring_header(*key)[0] for key in sk.ring_keys()}
    if on_ready is not None:
        on_ready()
    deadline = time.monotonic() + seconds if seconds else None
    while deadline is None or time.monotonic() < deadline:
        sk.refresh()                       # ModuleNotLoaded when the module goes away
        conts = sk.containers()
        live = {sk.slat_root(c.ncr3) for c in conts}
        pgds = {sk.slat_root(c.ncr3): list(c.pgds) for c in conts}
        new = []
        for key in sk.ring_keys():
            ring = sk.ring(key[0], since.get(key, 0), key[1])
            seen = since.get(key, 0)
            # Everything between what we saw last and the head that is not in the ring any more.
            lost = (ring.head - seen) - len(ring.events) if ring.head > seen else 0
            if lost > 0 and on_loss is not None:
                on_loss(key[0], key[1], lost)
            since[key] = max(seen, ring.head)
            new += ring.events
        for e in sorted(new, key=lambda e: (e.tsc, e.cpu, e.ring, e.seq)):
            if (pid is not None and e.pid != pid) or (kind and e.kind_name != kind):
                continue
            check = crosscheck_event(sk.mem, e, levels=sk.levels, live_roots=live, arch=sk.arch, caps=sk.caps(),
                                     guest_regs=sk.guest_regs(e.cpu), live_pgds=pgds) \
                if e.kind_name == "violation" else ""
            yield e, check
        time.sleep(0.1)
