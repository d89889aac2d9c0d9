"""Policy rules that need no guest: `address-spaces` on a hand-made snapshot and kernel view."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from splitdbg.arch import x86_paging as xp
from splitdbg.policy import Checker, PolicyError
from splitdbg.target.snapshot import ContainerRec, ProcessRec, Snapshot


def container(cid: int, pgds: list[int], released: bool = False) -> ContainerRec:
    return ContainerRec(cid, 100 + cid, "split-run" if cid else "", released, {}, 0x1000 * cid, pgds, [], [],
                        {"violations": {}})


def snapshot(containers, processes) -> Snapshot:
    return Snapshot(format="splitdbg-snapshot/1", target="test", backend="test", taken=0.0, slat="EPT",
                    module={"version": 3}, cpus=[0, 1], containers=containers, processes=processes, events=[])


def session(held: dict[int, set[int]], guest_cr3: dict[int, int]):
    kernel = SimpleNamespace(cpu_pgds=lambda: held, mode=xp.PagingMode(levels=4))
    sk = SimpleNamespace(guest_regs=lambda cpu: {"cr3": guest_cr3[cpu]})
    return SimpleNamespace(kernel=kernel, splitkernel=lambda: sk)


RULE = {"kind": "address-spaces"}


def checker(snap, sess) -> Checker:
    return Checker(snap, kernel=sess.kernel, splitkernel=sess.splitkernel)


def test_an_address_space_no_process_owns_and_no_cpu_holds_is_stale():
    snap = snapshot([container(0, []), container(1, [0xA000, 0xB000]), container(2, [0xC000], released=True)],
                    [ProcessRec(10, 10, "sleep", 0xA000, 1)])
    # CPU 0 still holds the exited process's 0xB000 (lazy TLB); CPU 1 holds nothing of theirs.
    problems = checker(snap, session({0: {0x1000, 0xB000}, 1: {0x5000}}, {0: 0x1000, 1: 0x5000})).address_spaces(RULE)
    assert problems == ["container 2 (split-run, released) lists address space 0xc000, which no process owns "
                        "and no CPU holds (stale)"]


def test_a_cpu_caught_in_switch_mm_counts_with_the_cr3_the_handler_noted():
    snap = snapshot([container(0, []), container(1, [0xC000])], [])
    # In switch_mm, loaded_mm says nothing; the guest CR3 at the VM exit (PCID 5 in bits 11:0) does.
    assert checker(snap, session({0: set(), 1: {0x5000}}, {0: 0xC005, 1: 0x5000})).address_spaces(RULE) == []
    assert len(checker(snap, session({0: set(), 1: {0x5000}}, {0: 0xD005, 1: 0x5000})).address_spaces(RULE)) == 1


def test_without_kernel_symbols_the_rule_says_what_it_needs():
    snap = snapshot([container(0, [])], None)
    with pytest.raises(PolicyError, match="kernel symbols"):
        Checker(snap).address_spaces(RULE)


# -- the states behind the attacks of docs/security.md, made by hand ----------------------------

from splitdbg.target.snapshot import CpuRec, RangeRec  # noqa: E402
from splitdbg.target import trust  # noqa: E402


def test_a_fork_that_left_its_container_fails_contained_tasks():
    # 20 (split-run, contained) forked 21, which runs in root: the leader-exit escape of old.
    procs = [ProcessRec(1, 1, "init", 0x1000, 0, 0), ProcessRec(20, 20, "split-run", 0xA000, 1, 1),
             ProcessRec(21, 21, "sh", 0xB000, 0, 20), ProcessRec(22, 22, "sh", 0xC000, 1, 21),
             ProcessRec(30, 30, "kworker", 0, 0, 20)]
    snap = snapshot([container(0, []), container(1, [0xA000, 0xC000])], procs)
    got = Checker(snap).contained_tasks({"kind": "contained-tasks"})
    # 22's nearest contained ancestor is 20 (21 is not contained): it is in 1, fine; 30 has no mm.
    assert got == ["process 21 (sh) runs in root, but its ancestor 20 (split-run) is in container 1"]


def test_contained_tasks_holds_when_every_descendant_is_contained_and_survives_a_parent_loop():
    procs = [ProcessRec(20, 20, "a", 0xA000, 1, 21), ProcessRec(21, 21, "b", 0xB000, 0, 20),
             ProcessRec(5, 5, "c", 0xD000, 0, 5)]
    snap = snapshot([container(0, []), container(1, [0xA000])], procs)
    got = Checker(snap).contained_tasks({"kind": "contained-tasks"})
    assert got == ["process 21 (b) runs in root, but its ancestor 20 (a) is in container 1"]


def test_a_cpu_in_root_with_a_contained_cr3_fails_cpu_containers():
    snap = snapshot([container(0, []), container(1, [0xA000])], [])
    snap.cpu_state = [CpuRec(0, 0xA005, 0, 1), CpuRec(1, 0x5000, 0, 0), CpuRec(2, 0xA000, 1, 1)]
    got = Checker(snap).cpu_containers({"kind": "cpu-containers"})
    assert got == ["CPU 0 runs root (container 0) with CR3 0xa005, an address space of container 1"]


def test_cpu_containers_of_a_module_that_records_no_cpu_state_cannot_be_checked():
    from splitdbg.policy import Uncheckable

    snap = snapshot([container(0, []), container(1, [0xA000])], [])
    with pytest.raises(Uncheckable, match="ABI before 6"):
        Checker(snap).cpu_containers({"kind": "cpu-containers"})


def ranged(cid: int, ranges) -> ContainerRec:
    c = container(cid, [0xA000] if cid else [])
    c.ranges = [RangeRec(s, e, h, p, 0x1000) for s, e, h, p in ranges]
    return c


def test_writable_handler_or_module_pages_are_named_and_copies_are_not():
    snap = snapshot([ranged(0, [(0, 0x100000, 0, "rwxu")]),
                     ranged(1, [(0, 0x5000, 0, "rwxu"), (0x5000, 0x6000, 0x9000, "rwxu"),   # 0x5000: isolated copy
                                (0x6000, 0x8000, 0x6000, "r-xu"), (0x8000, 0x100000, 0x8000, "rwxu")])], [])
    pages = [trust.PageUse(0x3000, "state", "the handler's variables"), trust.PageUse(0x5000, "module-text", "m text"),
             trust.PageUse(0x6000, "code", "handler text"), trust.PageUse(0x9000, "module-rodata", "m rodata")]
    got = Checker(snap)._writable({}, pages)
    assert got == ["container 1 (split-run): the handler's variables at 0x3000 is rwxu",
                   "container 1 (split-run): m rodata at 0x9000 is rwxu"]


def test_module_pages_follow_the_core_layout():
    mods = [SimpleNamespace(name="sktest", base=0xFFFFFFFFC0000000, size=0x5000, text_size=0x2000, ro_size=0x3000),
            SimpleNamespace(name="bad", base=0xFFFFFFFFC0100000, size=0x1000, text_size=0x4000, ro_size=0x2000)]
    kernel = SimpleNamespace(modules=lambda problems=None: mods, translate=lambda va: 0x100000 + (va & 0xFFFFF))
    problems: list[str] = []
    pages = trust.module_pages(kernel, problems)
    assert [(p.pa, p.group) for p in pages] == [(0x100000, "module-text"), (0x101000, "module-text"),
                                               (0x102000, "module-rodata")]
    assert problems and "module bad" in problems[0]
