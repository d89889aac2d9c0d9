"""The two-dimensional walk of a process's virtual address, as the model sees it: guest tables
(the process's CR3), each entry read through its container's nested table, then the access."""
from __future__ import annotations

from ..errors import SplitdbgError
from ..vmx_model import translate
from .splitkernel import SplitKernel


def walk_process(mem, kernel, pid: int, gva: int, access: str = "read") -> dict:
    if kernel is None:
        raise SplitdbgError("a walk needs the kernel's symbols (vmlinux) to find the process")
    problems: list[str] = []
    task = next((t for t in kernel.tasks(problems) if t.pid == pid), None)
    if task is None or not task.pgd:
        raise SplitdbgError(f"no user process {pid}" + (f" ({problems[0]})" if problems else ""))
    sk = SplitKernel(mem)
    if not sk.cpus:
        raise SplitdbgError("no CPU is under the root-mode handler")
    regs = sk.guest_regs(sk.cpus[0])   # CR0/CR4/EFER are the same on every CPU of this kernel
    cid = sk.container_of_cr3(task.pgd)
    cont = next((c for c in sk.containers() if c.id == cid), None)
    if cont is None:
        raise SplitdbgError(f"container {cid} of process {pid} cannot be read (corrupt: `splitdbg containers` says why)")
    ncr3 = sk.slat_root(cont.ncr3)
    r = translate(mem=mem, arch=sk.arch, gva=gva, access=access, cpl=0, cr0=regs["cr0"], cr3=task.pgd,
                  cr4=regs["cr4"], efer=regs["efer"], slat_root=ncr3, host_efer=regs["efer"], host_cr4=regs["cr4"],
                  caps=sk.caps())
    return dict(r.as_dict(), pid=pid, comm=task.comm, container=cid, guest_cr3=task.pgd, slat_root=ncr3, slat=sk.slat_name,
                explanation=r.explain())
