"""A connection to a target: a QEMU gdbstub (`:1234`, `host:1234`) or a memory image file.

For a live QEMU target, gdb (pygdbmi) attaches just long enough to find the shared RAM file and
read the vCPU registers, then detaches so the guest runs on while we read its memory from the
file. Without a shared file, gdb stays attached (the guest stays stopped) and memory is read
through the gdbstub.

A memory image (docs/images.md) is read through ImageFile; its sidecar supplies the registers and
the default vmlinux, and a snapshot of it carries the image's time.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..dbg.gdbmi import GdbMI
from ..errors import SplitdbgError
from ..mem import ImageFile, open_memory
from . import snapshot as snap
from .kernel import Kernel
from .splitkernel import ModuleNotLoaded, SplitKernel


def default_vmlinux() -> str | None:
    try:
        from .. import lab

        return lab.artifacts()["vmlinux"]
    except (SplitdbgError, KeyError, OSError):
        return None


class Session:
    def __init__(self, target: str, vmlinux: str | None = None, prefer: str = "auto", keep_gdb: bool = False):
        self.target = target
        self.dbg = None
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
            try:
                self.mem = open_memory(self.dbg, prefer=prefer)
                self.regs = self.dbg.read_registers(("cr0", "cr3", "cr4", "efer"))
            except SplitdbgError:
                self.dbg.close()
                raise
            if self.mem.name == "shared-ram-file" and not keep_gdb:
                self.dbg.close()          # the guest runs on; we read its RAM file
                self.dbg = None
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
                self.kernel.kernel_cr3 and self.kernel.mode   # fails here if this memory is not that kernel's
            except SplitdbgError as exc:
                self.kernel, self.kernel_error = None, str(exc)

    @property
    def backend(self) -> str:
        return self.mem.describe()

    def splitkernel(self) -> SplitKernel:
        # Where the descriptor was last time: checked in one read, else found again by a scan.
        sk = SplitKernel(self.mem, self._descriptor_pa)
        self._descriptor_pa = sk.pa
        return sk

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
        if self.kernel is not None:
            self.kernel.flush()
        regs = None
        try:
            regs = self.guest_control_regs()
        except SplitdbgError:
            pass
        kw.setdefault("descriptor_pa", self._descriptor_pa)
        try:
            s = snap.take(self.mem, target=self.target, backend=self.backend, kernel=self.kernel, guest_regs=regs, **kw)
        except SplitdbgError as exc:
            if self.kernel is None:
                raise
            # A kernel we cannot read (rebooting, another kernel): the module's view still works.
            self.kernel_error = str(exc)
            s = snap.take(self.mem, target=self.target, backend=self.backend, kernel=None, guest_regs=regs, **kw)
        if self.kernel_error:
            s.notes.append(f"kernel symbols unusable: {self.kernel_error}")
        s.notes += self.notes
        if self.image is not None and self.image.created_epoch:
            s.taken = self.image.created_epoch     # an image's state is as old as the image
        return s

    def close(self) -> None:
        if self.dbg is not None:
            self.dbg.close()
        self.mem.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
