"""A connection to a target: a QEMU gdbstub (`:1234`, `host:1234`) or a memory image file.

For a live QEMU target, gdb (pygdbmi) attaches just long enough to find the shared RAM file and
read the vCPU registers, then detaches so the guest runs on while we read its memory from the
file. Without a shared file, gdb stays attached (the guest stays stopped) and memory is read
through the gdbstub.

A memory image (docs/images.md) is read through ImageFile; its sidecar supplies the registers and
the default vmlinux, and a snapshot of it carries the image's time.

A live session knows when its target goes: QEMU's process exits (watched by pidfd when it runs on
this machine), its RAM file is deleted or replaced (a new QEMU), the guest reboots (jiffies go
back). Then every read and snapshot raises TargetGone: nothing is read from a dead QEMU's RAM.

Through the gdbstub (no shared RAM file) memory comes at a few MiB/s, so the module's descriptor
is not looked for by a whole-RAM scan unless asked (`scan=True`): with kernel symbols the kernel's
module list says whether splitkernel is loaded, and its descriptor is searched in the module's
own pages; without symbols the module's state is reported unknown, with what a scan would cost.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..dbg.gdbmi import GdbMI
from ..errors import SplitdbgError, TargetGone
from ..mem import ImageFile, open_memory
from . import snapshot as snap
from .kernel import Kernel
from .splitkernel import ModuleNotLoaded, SplitKernel, is_live_descriptor


class ModuleStateUnknown(ModuleNotLoaded):
    """Whether the module is loaded is not known: finding out would take a long scan (--scan)."""


def default_vmlinux() -> str | None:
    try:
        from .. import lab

        return lab.artifacts()["vmlinux"]
    except (SplitdbgError, KeyError, OSError):
        return None


class Session:
    def __init__(self, target: str, vmlinux: str | None = None, prefer: str = "auto", keep_gdb: bool = False,
                 scan: bool = False):
        self.target = target
        self.dbg = None
        self.qemu = None                  # the local QEMU process (dbg/qemu.py), when we can see it
        self.state_before: str | None = None   # QEMU's run state before we attached
        self.scan = scan                  # a whole-RAM descriptor scan even through the gdbstub
        self._jiffies: int | None = None
        self._nonce: int | None = None
        self.regs: dict[str, int] = {}
        self.notes: list[str] = []        # said with every snapshot (e.g. a vmlinux that is gone)
        self.image = None                 # ImageMeta of an image with a sidecar
        explicit = vmlinux is not None
        if os.path.exists(target) and not target.startswith(":"):
            self.mem = ImageFile(target)
            self.image = self.mem.meta
            if self.image is None:
                self.notes.append("image without a sidecar: QEMU q35 layout assumed, no CPU registers")
            else:
                self.regs = self.image.guest_registers()
                if vmlinux is None and self.image.vmlinux:
                    vmlinux = self.image.vmlinux
                    if not Path(vmlinux).exists():
                        self.notes.append(f"the image names vmlinux {vmlinux}, which no longer exists: "
                                          f"give --vmlinux for processes and symbols")
                        vmlinux = ""     # not the lab's build either: it may be another kernel
        else:
            host, _, port = target.rpartition(":")
            if not port.isdigit():
                raise SplitdbgError(f"target {target!r}: expected :PORT, HOST:PORT or a memory image file")
            self.dbg = GdbMI.connect(f"{host or 'localhost'}:{port}")
            self.qemu, self.dbg.qemu = self.dbg.qemu, None     # ours now: it outlives gdb
            self.state_before = self.dbg.state_before
            try:
                self.mem = open_memory(self.dbg, prefer=prefer)
                self.regs = self.dbg.read_registers(("cr0", "cr3", "cr4", "efer"))
            except SplitdbgError:
                self.dbg.close()
                if self.qemu is not None:
                    self.qemu.close()
                raise
            if self.mem.name == "shared-ram-file":
                if self.qemu is not None:
                    self.mem.watch(self.qemu.gone)
                if not keep_gdb:
                    self.dbg.close()      # the guest runs on (or stays paused, as it was); we read its RAM file
                    self.dbg = None
            if self.state_before is None:
                why = (f"QEMU (pid {self.qemu.pid}) has no QMP socket" if self.qemu is not None and not self.qemu.qmp
                       else "its QMP socket did not answer" if self.qemu is not None
                       else "no QEMU process on this machine listens on the port")
                self.notes.append(f"QEMU's run state is unknown ({why}): the guest runs on when gdb detaches, "
                                  f"as QEMU resumes it")
        if explicit and vmlinux and not Path(vmlinux).exists():
            self.close()
            raise SplitdbgError(f"--vmlinux {vmlinux}: no such file")
        vmlinux = vmlinux if vmlinux is not None else default_vmlinux()
        self.kernel = None
        self._descriptor_pa: int | None = None    # where the module's descriptor was last found
        self.kernel_error = None
        if vmlinux and Path(vmlinux).exists():
            try:
                self.kernel = Kernel(self.mem, vmlinux)
                mismatch = self.kernel.banner_mismatch()     # the right symbols or none
                if mismatch and explicit:
                    self.close()
                    raise SplitdbgError(f"--vmlinux does not match the guest: {mismatch}")
                if mismatch:
                    raise SplitdbgError(f"not this guest's kernel: {mismatch}")
                self.kernel.kernel_cr3 and self.kernel.mode   # fails here if this memory is not that kernel's
            except SplitdbgError as exc:
                if explicit and str(exc).startswith("--vmlinux does not match"):
                    raise
                self.kernel, self.kernel_error = None, str(exc)
        if self.kernel is not None and self.image is None and hasattr(self.mem, "watch"):
            # On the read path too: `events --follow` reads rings, not snapshots.
            self.mem.watch(self._rebooted)

    @property
    def backend(self) -> str:
        return self.mem.describe()

    def splitkernel(self) -> SplitKernel:
        # Where the descriptor was last time: checked in one read, else found again by a scan
        # (through the gdbstub: by the bounded lookup of locate()).
        sk = SplitKernel(self.mem, self.locate())
        self._descriptor_pa = sk.pa
        return sk

    def locate(self) -> int | None:
        """Where the module's descriptor is, for SplitKernel: the last place when it is still live
        there; else None (SplitKernel scans RAM) unless memory comes through the gdbstub, where
        a scan reads all RAM at a few MiB/s: then the kernel's module list answers, or the state
        is unknown (ModuleStateUnknown, saying what a scan would cost) until `scan` is set."""
        pa = self._descriptor_pa
        if self.mem.name != "gdbstub" or self.scan:
            return pa
        if pa is not None and is_live_descriptor(self.mem, pa):
            return pa
        if self.kernel is None:
            raise ModuleStateUnknown(f"module state unknown: memory comes through the gdbstub and there are no "
                                     f"kernel symbols to look splitkernel up in the kernel's module list; "
                                     f"{self.scan_cost()}: --scan does it")
        m = next((m for m in self.kernel.modules() if m.name == "splitkernel"), None)
        if m is None:
            raise ModuleNotLoaded("module not loaded: splitkernel is not in the guest kernel's module list")
        # The descriptor is a page of the module's own data (sk_desc_page): look in its pages only.
        for va in range(m.base & ~0xFFF, m.base + m.size, 0x1000):
            try:
                pa = self.kernel.translate(va)
            except SplitdbgError:
                continue
            if is_live_descriptor(self.mem, pa):
                return pa
        raise ModuleNotLoaded("splitkernel is in the kernel's module list but has no live descriptor "
                              "(loading, unloading, or its load failed)")

    def scan_cost(self) -> str:
        """What a descriptor scan through the gdbstub would read, and how long it would take at
        the rate measured now (one 256 KiB read)."""
        if getattr(self, "_scan_cost", None):
            return self._scan_cost
        ranges = self.mem.ram_ranges()
        total = sum(e - s for s, e in ranges)
        start = next((s for s, e in ranges if e - s >= 2 << 20), ranges[0][0])
        t0 = time.monotonic()
        self.mem.read(start + (1 << 20), 256 << 10)
        rate = (256 << 10) / max(time.monotonic() - t0, 1e-6)
        self._scan_cost = (f"a scan for its descriptor reads up to {total >> 20} MiB through the stub, about "
                           f"{total / rate:.0f} s at the {rate / (1 << 20):.1f} MiB/s measured now")
        return self._scan_cost

    # -- liveness ------------------------------------------------------------------------------
    def check_alive(self) -> None:
        """TargetGone when the target is gone: QEMU exited, its RAM file went or was replaced,
        or the guest rebooted (its jiffies went back). A no-op for memory images."""
        if self.image is not None or not hasattr(self, "mem"):
            return
        if hasattr(self.mem, "check_alive"):
            self.mem.check_alive()            # the file, the QEMU process and _rebooted (watchers)
            return
        why = (self.qemu.gone() if self.qemu is not None else None) or self._rebooted()
        if why:
            raise TargetGone(f"target lost: {why}")

    def _rebooted(self) -> str | None:
        """Why the guest is another boot than the last look (its jiffies went back), or None."""
        if self.kernel is None or os.path.exists(self.target):
            return None
        try:
            j = self.kernel.u64(self.kernel.symbols.address("jiffies_64"))
        except TargetGone:
            raise
        except SplitdbgError:
            return None
        if self._jiffies is not None and j < self._jiffies:
            return "the guest rebooted (its jiffies went back: a new boot)"
        self._jiffies = j
        return None

    def run_state(self) -> str | None:
        """QEMU's run state now (running, paused, debug, ...), None when it cannot be asked."""
        return self.qemu.run_state() if self.qemu is not None else None

    def guest_control_regs(self, sk: SplitKernel | None = None) -> dict[str, int]:
        """CR0, CR3, CR4, EFER of the guest: as the root-mode handler recorded them at the last VM
        exit when the module runs (either vendor), else from gdb or the image's sidecar."""
        try:
            sk = sk or self.splitkernel()
            return sk.guest_regs(sk.cpus[0])
        except (ModuleNotLoaded, IndexError):
            if self.regs:
                return self.regs
            raise SplitdbgError("no CPU state: the module is not loaded and the target has no registers")

    def snapshot(self, **kw) -> snap.Snapshot:
        self.check_alive()
        if self.kernel is not None:
            self.kernel.flush()
        regs = None
        try:
            regs = self.guest_control_regs()
        except SplitdbgError:
            pass
        kw.setdefault("descriptor_pa", self._descriptor_pa)
        kw.setdefault("locate", self.locate)
        try:
            s = snap.take(self.mem, target=self.target, backend=self.backend, kernel=self.kernel, guest_regs=regs, **kw)
        except SplitdbgError as exc:
            if self.kernel is None:
                raise
            # A kernel we cannot read (rebooting, another kernel): the module's view still works.
            self.kernel_error = str(exc)
            s = snap.take(self.mem, target=self.target, backend=self.backend, kernel=None, guest_regs=regs, **kw)
        self.check_alive()            # what was read while the target died is not shown as its state
        if s.module is not None:
            self._descriptor_pa = s.module.get("descriptor_pa", self._descriptor_pa)
            nonce = s.module.get("load_nonce")
            if self._nonce is not None and nonce != self._nonce:
                s.notes.append("the module was reloaded since the last look (a new load nonce)")
            self._nonce = nonce
        if self.kernel_error:
            s.notes.append(f"kernel symbols unusable: {self.kernel_error}")
        s.notes += self.notes
        if self.image is not None and self.image.created_epoch:
            s.taken = self.image.created_epoch     # an image's state is as old as the image
        return s

    def close(self) -> None:
        if self.dbg is not None:
            self.dbg.close()
        if self.qemu is not None:
            self.qemu.close()
        self.mem.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
