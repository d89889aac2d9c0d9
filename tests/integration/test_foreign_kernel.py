"""A user's own guest with its own kernel: Debian's `linux-image-cloud-amd64` (6.1, its own build,
KASLR and PTI on), booted with the lab's initramfs, without the module and with no vmlinux that
matches it. splitdbg must say what it cannot know (no symbols: the lab's vmlinux is another
kernel) and still show what it can, truly: the page tables, checked against QEMU's `info mem`,
read through the gdbstub as with any QEMU."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from splitdbg import lab
from splitdbg.arch import qemu_monitor as qm
from splitdbg.arch import x86_paging as xp

CACHE = Path.home() / ".cache" / "splitdbg" / "foreign"


def debian_kernel() -> Path:
    """Debian's current cloud kernel image, downloaded once (apt, the package registry) and kept
    in the user's cache under its package name and version."""
    dep = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], capture_output=True, text=True,
                         check=True).stdout
    pkg = re.search(r"Depends: (linux-image-\S+)", dep).group(1)
    pol = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True, check=True).stdout
    ver = re.search(r"Candidate: (\S+)", pol).group(1)
    where = CACHE / f"{pkg}_{ver}"
    found = sorted(where.glob("boot/vmlinuz-*"))
    if not found:
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", f"{pkg}={ver}"], cwd=where, check=True, capture_output=True)
        deb = next(where.glob("*.deb"))
        subprocess.run(f"dpkg-deb --fsys-tarfile '{deb}' | tar -x -C '{where}' ./boot", shell=True, check=True)
        deb.unlink()
        found = sorted(where.glob("boot/vmlinuz-*"))
    return found[0]


@pytest.fixture(scope="module")
def foreign():
    vmlinuz = debian_kernel()
    arts = dict(lab.artifacts(), bzImage=str(vmlinuz))
    guest = lab.up(port=lab.free_port(16520), smp=2, arts=arts, append="")
    yield guest, vmlinuz.name.removeprefix("vmlinuz-")
    guest.down()


def splitdbg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splitdbg", *args], capture_output=True, text=True, timeout=timeout)


def test_status_says_the_lab_vmlinux_is_another_kernel_and_finds_no_module(foreign):
    guest, release = foreign
    rc, out = guest.run("uname -r")
    assert release in out                      # the guest runs Debian's kernel, not the lab's
    p = splitdbg("status", f":{guest.port}")
    assert p.returncode == 0, p.stderr
    assert "split kernel   : not loaded" in p.stdout, p.stdout
    assert re.search(r"note .*not this guest's kernel", p.stdout) and release in p.stdout, p.stdout
    # Processes need symbols: said, not an empty list.
    p = splitdbg("ps", f":{guest.port}")
    assert "no kernel symbols" in p.stdout, p.stdout


def test_an_explicit_vmlinux_of_another_kernel_is_an_error_naming_both(foreign):
    guest, release = foreign
    p = splitdbg("status", f":{guest.port}", "--vmlinux", lab.artifacts()["vmlinux"])
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "does not match the guest" in p.stderr and release in p.stderr, p.stderr


def test_pagetable_through_the_gdbstub_matches_info_mem(foreign):
    """Debian's kernel with KASLR and PTI: CPU 0's address space, dumped by `splitdbg pagetable`
    through the gdbstub (no RAM file), equals QEMU's `info mem` of the same paused CPU."""
    guest, _ = foreign
    guest.pause()
    try:
        p = splitdbg("pagetable", f":{guest.port}", "--backend", "gdbstub", "--json", timeout=300)
        assert p.returncode == 0, p.stderr
        theirs = guest.hmp("info mem")
        state = guest.hmp("info status")
    finally:
        guest.resume()
    d = json.loads(p.stdout)
    assert not d["problems"], d["problems"]
    ours = [xp.Range(r["start"], r["end"], r["phys"], r["page_size"],
                     (xp.ATTR_U if r["perms"][0] == "u" else 0) | (xp.ATTR_W if r["perms"][2] == "w" else 0)
                     | (xp.ATTR_NX if r["perms"][3] == "-" else 0)) for r in d["ranges"]]
    assert len(qm.parse_info_mem(theirs)) > 20
    assert qm.compare_info_mem(ours, theirs) == []
    assert "paused" in state                    # splitdbg left the paused guest paused
    # KASLR: the kernel text is not at the unrandomised 0xffffffff81000000 (or the test shows nothing).
    rc, out = guest.run("grep -m1 ' _text$' /proc/kallsyms")
    assert rc == 0 and not out.strip().startswith("ffffffff81000000"), out
