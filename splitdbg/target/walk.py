"""The two-dimensional walk of a process's virtual address, as the model sees it: guest tables
(the process's CR3), each entry read through its container's nested table, then the access."""
from __future__ import annotations

from ..errors import SplitdbgError
from ..vmx_model import translate, vmcb
from .splitkernel import SplitKernel


def walk_process(mem, kernel, pid: int, gva: int, access: str = "read") -> dict:
    if kernel is None:
        raise SplitdbgError("a walk needs the kernel's symbols (vmlinux) to find the process")
    task = next((t for t in kernel.tasks() if t.pid == pid), None)
    if task is None or not task.pgd:
        raise SplitdbgError(f"no user process {pid}")
    sk = SplitKernel(mem)
    if not sk.cpus:
        raise SplitdbgError("no CPU is under the root-mode handler")
    save = vmcb.decode(mem.read(sk.vmcb_pa(sk.cpus[0]), 4096))["save"]
    cid = sk.container_of_cr3(task.pgd)
    ncr3 = next(c.ncr3 for c in sk.containers() if c.id == cid)
    r = translate(mem=mem, arch="svm", gva=gva, access=access, cpl=0, cr0=save["cr0"], cr3=task.pgd, cr4=save["cr4"],
                  efer=save["efer"], slat_root=ncr3, host_efer=save["efer"], host_cr4=save["cr4"])
    return dict(r.as_dict(), pid=pid, comm=task.comm, container=cid, guest_cr3=task.pgd, slat_root=ncr3,
                explanation=r.explain())
