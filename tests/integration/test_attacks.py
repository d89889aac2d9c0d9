"""The attack suite of docs/security.md, against the real module in a real guest (QEMU, SVM/NPT).

Each attack is made the way its tier's attacker would make it: a contained program with no kernel
bug (sk-attack), the same with a kernel write primitive (sktest's write-sym, hypercall), the same
with kernel code execution (sktest's insn, cr4-reserved, efer-reserved). For each: the attack is
blocked, the guest is still up, and the module recorded it as an event that splitdbg names.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from splitdbg.mem import SharedRamFile
from splitdbg.target.splitkernel import SplitKernel

from .conftest import boot

HC = {"PING": 0x5301, "DEVIRT": 0x5302, "NEW_CONTAINER": 0x5303, "ADD_PGD": 0x5304, "FREE_CONTAINER": 0x5306,
      "QUERY": 0x5307, "PROBE_SET": 0x530C, "MODTEXT_DEL": 0x5310}
TEXT = 0xFFFFFFFF81000000          # kernel text (_text): the QUERY of old wrote its counters there


@pytest.fixture(scope="module", params=[1, 2], ids=["1cpu", "2cpu"])
def g(request):
    """The whole suite on one CPU and on two (races between CPUs, and a single CPU's own order)."""
    guest = boot(smp=request.param, append="splitdbg.load=splitkernel,sktest", base_port=15700)
    assert "module-loaded name=splitkernel" in guest.serial_text()
    yield guest
    guest.down()


def alive(g) -> bool:
    rc, out = g.run("echo alive", timeout=30)
    return rc == 0 and "alive" in out


def sk(g) -> SplitKernel:
    return SplitKernel(SharedRamFile(g.ram_file))


def attacks_since(g, seq: dict) -> list:
    return [e for e in sk(g).events(seq) if e.kind_name in ("attack", "violation")]


def ring_heads(g) -> dict:
    k = sk(g)
    return {key: k.ring_header(*key)[0] for key in k.ring_keys()}


def in_container(g, command: str, policy: str = "", timeout: float = 60) -> tuple[int, str]:
    return g.run(f"split-run {policy} -- sh -c {sh_quote(command)}", timeout=timeout)


def sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def peek_text(g) -> str:
    rc, out = g.run("echo peek-text > /proc/sktest; cat /proc/sktest")
    return re.search(r"value=(0x[0-9a-f]+)", out).group(1)


# -- tier 1: a contained program, no kernel bug ------------------------------------------------

def test_leader_exit_then_fork_stays_contained(g):
    rc, out = in_container(g, "sk-attack leader-exit")
    assert rc == 0 and "ok leader-exit" in out, out
    assert alive(g)


def test_exec_from_a_non_leader_thread_stays_contained(g):
    rc, out = in_container(g, "sk-attack nonleader-exec")
    assert rc == 0 and "mode=NR" in out, out
    assert alive(g)


def test_rmmod_with_a_contained_process_is_refused(g):
    rc, pid = g.run("split-run -- sh -c 'while :; do sk-scenario thread2; done' > /dev/null 2>&1 & echo $!")
    try:
        rc, out = g.run("sleep 0.5; rmmod splitkernel; echo rc=$?")
        assert "rc=0" not in out, out        # each container holds a reference on the module
        rc, mods = g.run("grep -c '^splitkernel ' /proc/modules")
        assert mods.strip().endswith("1")
        rc, mode = g.run(f"split-query {pid.strip()} | cut -d' ' -f1")
        assert mode.strip() == "mode=NR"
    finally:
        g.run(f"kill -9 {pid.strip()}; pkill -9 sk-scenario; sleep 0.3")
    assert alive(g)


def test_protected_page_is_scrubbed_when_its_owner_dies(g):
    rc, out = g.run("split-run -- sk-protect 0 > /tmp/prot.out 2>&1; cat /tmp/prot.out")
    pa = re.search(r"pa=(0x[0-9a-f]+)", out).group(1)
    secret = re.search(r"secret=(0x[0-9a-f]+)", out).group(1)
    rc, after = g.run(f"echo read-phys {pa} > /proc/sktest; cat /proc/sktest")
    value = re.search(r"value=(0x[0-9a-f]+)", after).group(1)
    assert int(value, 16) != int(secret, 16), (pa, secret, value)


def test_a_flood_of_user_hypercalls_does_not_erase_a_violation(g):
    before = peek_text(g)
    seq = ring_heads(g)
    in_container(g, "echo write-text > /proc/sktest")          # denied: the violation to keep
    rc, out = in_container(g, "sk-attack flood 10000", timeout=120)
    assert rc == 0 and "ok flood" in out, out
    evs = attacks_since(g, seq)
    denied = [e for e in evs if e.kind_name == "violation" and e.region_name == "text" and e.action_name == "deny"]
    assert denied, "the denied text write vanished under the flood"
    floods = [e for e in evs if e.kind_name == "attack" and e.extra == HC["DEVIRT"] and e.cpl == 3]
    assert 64 <= len(floods) < 200            # sampled: the first 64, then every power of two
    k = sk(g)
    counted = max(c.counters.attacks for c in k.containers())
    assert counted >= 10000
    assert peek_text(g) == before
    assert alive(g)


def test_an_unprivileged_user_cannot_take_every_container(g):
    rc, out = g.run("sk-attack quota 8", timeout=60)
    assert rc == 0 and "ok quota" in out, out


# -- tier 2: a kernel write primitive in a container --------------------------------------------

@pytest.mark.parametrize("sym", ["sk_state_page", "sk_desc_page", "sk_write"],
                         ids=["handler-state", "descriptor", "later-module-text"])
def test_kernel_writer_cannot_touch_what_the_handler_trusts(g, sym):
    """The handler's state page (its lock word is the first field the lock spins on), the
    descriptor, and the text of sktest, a module loaded after splitkernel."""
    seq = ring_heads(g)
    rc, out = in_container(g, f"echo write-sym {sym} > /proc/sktest; cat /proc/sktest")
    assert rc != 0 and "after=" not in out, out        # the write faulted: the writer died
    evs = [e for e in attacks_since(g, seq) if e.kind_name == "violation" and e.action_name == "deny"]
    assert evs and evs[-1].region_name in ("sk-state", "module-text"), evs
    assert alive(g)


def test_module_text_of_a_later_module_stays_writable_for_root(g):
    """The protection is per container: a root write (no container) is not a violation."""
    rc, out = g.run("echo hypercall 5301 > /proc/sktest; cat /proc/sktest")
    assert "rax=0x4e524b54494c5053" in out       # PING from root kernel mode: SK_MAGIC


def test_query_writes_nothing_on_the_callers_behalf(g):
    before = peek_text(g)
    seq = ring_heads(g)
    rc, out = in_container(g, f"echo hypercall {HC['QUERY']:x} 1 {TEXT:x} > /proc/sktest; cat /proc/sktest")
    assert "rax=0xffffffffffffffff" in out, out     # an index out of range: refused
    assert peek_text(g) == before
    evs = [e for e in attacks_since(g, seq) if e.kind_name == "attack"]
    assert any(e.extra == HC["QUERY"] and e.cpl == 0 and e.container != 0 for e in evs)
    assert alive(g)


@pytest.mark.parametrize("name,args", [("DEVIRT", ""), ("NEW_CONTAINER", "0 1"), ("FREE_CONTAINER", "0"),
                                       ("ADD_PGD", "0 1000"), ("PROBE_SET", "1000 1 0"), ("MODTEXT_DEL", "1000")])
def test_hypercalls_outside_the_callers_rights_are_refused(g, name, args):
    seq = ring_heads(g)
    cpus = sk(g).cpus
    rc, out = in_container(g, f"echo hypercall {HC[name]:x} {args} > /proc/sktest; cat /proc/sktest")
    assert "rax=0xffffffffffffffff" in out, out
    assert sk(g).cpus == cpus
    evs = [e for e in attacks_since(g, seq) if e.kind_name == "attack" and e.extra == HC[name]]
    assert evs and evs[0].container != 0 and evs[0].pid != 0
    assert alive(g)


# -- tier 3: kernel code execution in a container ------------------------------------------------

@pytest.mark.parametrize("insn", ["vmsave", "vmload", "vmrun", "stgi", "clgi", "skinit", "invlpga"])
def test_svm_instructions_raise_ud(g, insn):
    seq = ring_heads(g)
    rc, out = in_container(g, f"echo insn {insn} > /proc/sktest; cat /proc/sktest")
    assert f"insn {insn} faulted=yes" in out, out
    assert any(e.kind_name == "attack" for e in attacks_since(g, seq))
    assert alive(g)


@pytest.mark.parametrize("what", ["cr4-reserved", "efer-reserved"])
def test_reserved_control_bits_raise_gp_and_the_cpu_goes_on(g, what):
    seq = ring_heads(g)
    rc, out = in_container(g, f"echo {what} > /proc/sktest; cat /proc/sktest")
    assert f"{what} faulted=yes" in out, out
    assert any(e.kind_name == "attack" for e in attacks_since(g, seq))
    assert alive(g)
    assert sk(g).cpus == list(range(g.smp))       # every CPU still under the handler


# -- splitdbg names them --------------------------------------------------------------------------

def test_events_name_the_attacks(g):
    out = subprocess.run([sys.executable, "-m", "splitdbg", "events", f":{g.port}", "--kind", "attack", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    evs = json.loads(out.stdout)
    assert evs and all(e["kind"] == "attack" and e["ring"] == 1 for e in evs)
    assert {e["container"] != 0 for e in evs} >= {True}
    assert all("pid" in e for e in evs)


def test_a_follower_that_falls_behind_says_what_it_lost(g):
    """`events --follow` stopped while a ring wraps (400 `split-query`, each 18 hypercalls: some
    7,000 events on two CPUs, rings of 4,096): when it runs again it says how many events of
    which ring it never saw, instead of going on silently."""
    import os
    import queue
    import signal
    import threading
    import time

    p = subprocess.Popen([sys.executable, "-m", "splitdbg", "events", f":{g.port}", "--follow", "--json"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in p.stderr], daemon=True).start()

    def wait_line(word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if word in line:
                return line
        return ""

    try:
        assert wait_line("following", 60)
        os.kill(p.pid, signal.SIGSTOP)
        g.run("for i in $(seq 400); do split-query > /dev/null; done", timeout=240)
        os.kill(p.pid, signal.SIGCONT)
        line = wait_line("lost", 60)
        assert re.search(r"lost \d+ events on CPU \d \(busy ring\)", line), line
    finally:
        p.kill()
        p.wait()


def test_modtext_add_cannot_map_the_pool_or_a_hole(g):
    """MODTEXT_ADD (any container may protect a module's page) must not make the pool, the
    handler's pages or a hole in RAM "module text", readable everywhere (found by review)."""
    k = sk(g)
    pool, desc = k.d["pool_pa"], k.pa
    for pa in (pool, pool + 0x3FF000, desc, 100 << 30):
        rc, out = in_container(g, f"echo hypercall 530f {pa:x} 1 > /proc/sktest; cat /proc/sktest")
        assert "rax=0xffffffffffffffff" in out, (hex(pa), out)
    assert alive(g)


def test_an_unprivileged_user_cannot_relax_the_policy_of_shared_text(g):
    """log on text lets a container write the frames every process runs; isolate lets it run
    kernel code of its own making: CAP_SYS_ADMIN only. Policies the handler has no meaning for
    are refused, not ignored."""
    rc, out = g.run("sk-attack unpriv-policy", timeout=60)
    assert rc == 0 and "ok unpriv-policy" in out, out


def test_a_contained_process_cannot_control_one_outside(g):
    """ptrace, /proc/PID/mem and process_vm_writev of its uncontained parent shell would run the
    attacker's code in root: refused, and each refusal is an attack event (REPORT, ptrace)."""
    seq = ring_heads(g)
    rc, out = in_container(g, "sk-attack ptrace-out")
    assert rc == 0 and "ok ptrace-out" in out, out
    reports = [e for e in attacks_since(g, seq) if e.kind_name == "attack" and e.region_name == "report"
               and e.extra == 1]
    assert len(reports) >= 3, reports        # attach, seize, /proc/PID/mem (process_vm_writev: not configured)
    rc, out = g.run("sleep 30 & p=$!; cat /proc/$p/stat > /dev/null && echo read-ok; kill $p")
    assert "read-ok" in out                  # reading /proc of others (PTRACE_MODE_READ) is the kernel's call
    assert alive(g)


def test_a_contained_process_cannot_type_into_a_terminal(g):
    """TIOCSTI pushes input into a terminal an uncontained shell reads: commands run outside."""
    seq = ring_heads(g)
    rc, out = g.run("sk-attack tty-inject")           # it enters a container itself, its console fd open
    assert rc == 0 and "ok tty-inject" in out, out
    assert "INJECTED-FROM-A-CONTAINER" not in g.serial_text()
    reports = [e for e in attacks_since(g, seq) if e.region_name == "report" and e.extra == 2]
    assert len(reports) >= 7, reports        # 4 ioctls, 3 opens
    assert alive(g)


def test_a_contained_root_cannot_have_the_kernel_run_or_show_things_outside(g):
    """kernel.modprobe names the helper request_module runs as root outside any container; a
    CPU-wide perf event samples other processes' registers and stacks."""
    rc, out = in_container(g, "sk-attack kernel-helpers")
    assert rc == 0 and "ok kernel-helpers" in out, out
    rc, out = g.run("cat /proc/sys/kernel/modprobe")
    assert "/tmp/x" not in out
    assert alive(g)


def test_a_cpu_that_held_the_address_space_lazily_runs_its_new_thread_contained(g):
    """After ENTER, CPU 1 may still hold the caller's address space from a moment ago, with no CR3
    write to come when the caller's new thread runs there: ENTER has every CPU re-derive its
    container, or that thread runs in root."""
    for _ in range(5):
        rc, out = g.run("sk-attack lazy-enter", timeout=60)
        assert rc == 0 and "ok lazy-enter" in out, out


def test_entering_with_an_address_space_shared_with_another_process_is_refused(g):
    """A CLONE_VM child or a vfork child entering would take the process it shares its address
    space with into the container too (and two of them racing left a container no one could
    release)."""
    rc, out = g.run("sk-attack enter-shared", timeout=60)
    assert rc == 0 and "ok enter-shared" in out, out
    assert alive(g)


def test_threads_leaving_at_the_same_instant_release_their_container(g):
    """Both threads of a contained process call SYS_exit at once, 60 times: every container is
    released (a probe that read signal->live at do_exit's entry saw 2 in both and leaked)."""
    rc, out = g.run("sk-attack exit-race 60", timeout=300)
    assert rc == 0 and "ok exit-race" in out, out
    live = [c.id for c in sk(g).containers() if c.owner_comm == "sk-exit-race" and not c.released]
    assert not live, f"containers {live} outlived their processes: {out}"
    assert alive(g)


def test_events_say_what_each_attack_was(g):
    """After the suite: every attack event names what was refused (hypercall, instruction,
    MSR, control register, a guest-side refusal), in `events --json` and in the table."""
    out = subprocess.run([sys.executable, "-m", "splitdbg", "events", f":{g.port}", "--kind", "attack", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    evs = json.loads(out.stdout)
    whats = {e["what"] for e in evs}
    assert all(whats), evs
    assert "hypercall DEVIRT refused" in whats, whats
    assert any(w.startswith("VMSAVE ") for w in whats), whats
    assert any(w.startswith("ptrace ") for w in whats), whats
    assert any(w.startswith("TIOCSTI") for w in whats), whats
    assert any(w.startswith("MOV to CR4") for w in whats), whats
    assert "WRMSR EFER refused" in whats, whats
    text = subprocess.run([sys.executable, "-m", "splitdbg", "events", f":{g.port}", "--kind", "attack"],
                          capture_output=True, text=True, timeout=120).stdout
    assert "hypercall DEVIRT refused" in text and "ptrace (attach" in text


def test_a_forged_module_reference_count_makes_rmmod_wait_not_crash(g):
    """With a kernel write primitive a contained process sets splitkernel's reference count to
    none: rmmod then runs while its container lives. The module must neither free itself under
    CPUs in guest mode (a crash) nor return the process to root: the unload waits, with the
    hooks still tracking, until the container's process ends. Last in this file: it unloads the
    module and loads it again, which also checks that a module loaded before splitkernel (sktest
    now) is protected in containers from the start."""
    import time
    rc, pid = g.run("split-run -- sh -c 'echo forge-refcount splitkernel > /proc/sktest; exec sleep 600' "
                    "> /dev/null 2>&1 & echo $!")
    pid = pid.strip().splitlines()[-1]
    time.sleep(1)
    g.run("rmmod splitkernel > /tmp/rmmod.out 2>&1 &")
    try:
        time.sleep(2)
        rc, out = g.run("grep -c '^splitkernel ' /proc/modules; dmesg | grep -c 'waiting for it to end'")
        assert out.split()[-2:] == ["1", "1"], out          # still loaded, and waiting
        k = sk(g)
        mine = [c for c in k.containers() if c.owner_pid == int(pid) and not c.released]
        assert mine, "the forging process's container is gone while it runs"
        assert alive(g)
    finally:
        g.run(f"kill -9 {pid}")
    rc, out = g.run("for i in $(seq 50); do grep -q '^splitkernel ' /proc/modules || break; sleep 0.2; done; "
                    "grep -c '^splitkernel ' /proc/modules; cat /tmp/rmmod.out", timeout=60)
    assert out.split()[0] == "0", out                    # the unload finished once the process ended
    assert alive(g)
    rc, out = g.run("insmod /lib/modules/splitdbg/splitkernel.ko; echo rc=$?")
    assert "rc=0" in out, out
    seq = ring_heads(g)
    rc, out = in_container(g, "echo write-sym sk_write > /proc/sktest; cat /proc/sktest")
    assert rc != 0 and "after=" not in out, out
    evs = [e for e in attacks_since(g, seq) if e.kind_name == "violation" and e.action_name == "deny"]
    assert evs and evs[-1].region_name == "module-text", evs
    assert alive(g)
