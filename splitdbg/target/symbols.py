"""ELF symbols of vmlinux or a module, without gdb (pyelftools).

Symbol tables load in well under a second even for a 58 MB vmlinux: only .symtab is read.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from ..errors import SplitdbgError


class SymbolError(SplitdbgError):
    pass


@dataclass(frozen=True)
class Symbol:
    name: str
    addr: int
    size: int
    kind: str  # STT_FUNC, STT_OBJECT, ...
    section: str = ""   # the section it lives in (addresses are section offsets in a relocatable .ko)


class ElfSymbols:
    """Name -> address and address -> name+offset for one ELF file (linked addresses)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise SymbolError(f"symbol file {self.path} not found")
        try:
            with open(self.path, "rb") as f:
                elf = ELFFile(f)
                self.build_id = _build_id(elf)
                self.sections = {s.name: (s["sh_addr"], s["sh_size"]) for s in elf.iter_sections() if s.name}
                table = elf.get_section_by_name(".symtab")
                if not isinstance(table, SymbolTableSection):
                    raise SymbolError(f"{self.path} has no symbol table (stripped?)")
                names = [sec.name for sec in elf.iter_sections()]
                syms = []
                for sym in table.iter_symbols():
                    kind = sym["st_info"]["type"]
                    shndx = sym["st_shndx"]
                    if sym.name and kind in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE") and shndx != "SHN_UNDEF":
                        sec = names[shndx] if isinstance(shndx, int) and shndx < len(names) else ""
                        syms.append(Symbol(sym.name, sym["st_value"], sym["st_size"], kind, sec))
        except (OSError, ELFError) as exc:
            raise SymbolError(f"cannot read symbols from {self.path}: {exc}") from exc
        self.by_name: dict[str, Symbol] = {}
        for s in syms:
            # Prefer a sized, typed symbol over a bare label of the same name.
            old = self.by_name.get(s.name)
            if old is None or (old.size == 0 and s.size):
                self.by_name[s.name] = s
        # At one address, a typed sized symbol (startup_64) sorts after a bare label (_text):
        # lookup() takes the last one at or below an address.
        self._sorted = sorted((s for s in self.by_name.values() if s.addr),
                              key=lambda s: (s.addr, s.kind != "STT_NOTYPE", s.size))
        self._addrs = [s.addr for s in self._sorted]

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def address(self, name: str) -> int:
        try:
            return self.by_name[name].addr
        except KeyError:
            raise SymbolError(f"symbol {name!r} not in {self.path.name}") from None

    def lookup(self, addr: int) -> tuple[Symbol, int] | None:
        """The symbol containing addr (or the nearest one below it) and the offset into it."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        sym = self._sorted[i]
        if sym.size and addr >= sym.addr + sym.size:
            return None
        if not sym.size and addr - sym.addr > 0x10000:
            return None   # a bare label far below (such as _end): not where addr is
        return sym, addr - sym.addr

    def symbolize(self, addr: int) -> str:
        hit = self.lookup(addr)
        if hit is None:
            return f"{addr:#x}"
        sym, off = hit
        return f"{sym.name}+{off:#x}" if off else sym.name


START_KERNEL_MAP = 0xFFFFFFFF80000000    # where an x86-64 vmlinux's text is linked


def check_vmlinux(path: str | Path, what: str = "--vmlinux") -> None:
    """Raise SymbolError (one line) unless `path` is an x86-64 Linux kernel ELF with a symbol table:
    not a user program (/bin/ls), not a module (.ko, relocatable), not text, not a truncated file.
    Reads the ELF and section headers only (milliseconds, even for a 58 MB vmlinux)."""
    p = Path(path)
    if not p.exists():
        raise SymbolError(f"{what} {p}: no such file")
    if not p.is_file():
        raise SymbolError(f"{what} {p}: not a file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise SymbolError(f"{what} {p}: not an ELF file (a kernel with symbols is the vmlinux of the build)")
            f.seek(0)
            elf = ELFFile(f)
            h = elf.header
            if elf.elfclass != 64 or h["e_machine"] != "EM_X86_64":
                raise SymbolError(f"{what} {p}: an ELF for {h['e_machine']} ({elf.elfclass}-bit), not x86-64")
            if h["e_type"] == "ET_REL":
                raise SymbolError(f"{what} {p}: a relocatable object (a module .ko?), not the kernel's vmlinux")
            if h["e_type"] != "ET_EXEC":
                raise SymbolError(f"{what} {p}: an ELF {h['e_type']} (a user program or library?), not vmlinux")
            if h["e_shoff"] + h["e_shnum"] * h["e_shentsize"] > size:
                raise SymbolError(f"{what} {p}: truncated: its section headers end at {h['e_shoff'] + h['e_shnum'] * h['e_shentsize']:#x}, "
                                  f"the file at {size:#x}")
            text = symtab = None
            for sec in elf.iter_sections():
                if sec["sh_type"] != "SHT_NOBITS" and sec["sh_offset"] + sec["sh_size"] > size:
                    raise SymbolError(f"{what} {p}: truncated: section {sec.name} ends at "
                                      f"{sec['sh_offset'] + sec['sh_size']:#x}, the file at {size:#x}")
                if sec.name == ".text":
                    text = sec
                elif sec.name == ".symtab":
                    symtab = sec
    except SymbolError:
        raise
    except (OSError, ELFError, ConstructError, ValueError, KeyError, IndexError) as exc:   # pyelftools on junk
        raise SymbolError(f"{what} {p}: not a readable ELF file: {' '.join(str(exc).split())}") from exc
    if text is None or text["sh_addr"] < START_KERNEL_MAP:
        raise SymbolError(f"{what} {p}: not a Linux kernel (its .text is not linked at {START_KERNEL_MAP:#x})")
    if not isinstance(symtab, SymbolTableSection) or symtab.num_symbols() <= 1:    # entry 0 is the null symbol
        raise SymbolError(f"{what} {p}: the kernel has no symbol table (stripped?)")


def _build_id(elf: ELFFile) -> str | None:
    for sec in elf.iter_sections():
        if sec["sh_type"] == "SHT_NOTE":
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return note["n_desc"]
    return None


class ModuleSymbols:
    """Text symbols of loaded modules: each .ko's own symbol table placed at its load address."""

    def __init__(self):
        self.modules: list[tuple[str, int, int, ElfSymbols]] = []   # name, text base, text size, symbols

    def add(self, name: str, ko_path: str | Path, text_base: int, text_size: int) -> None:
        self.modules.append((name, text_base, text_size, ElfSymbols(ko_path)))

    def lookup(self, addr: int) -> tuple[Symbol, int] | None:
        for name, base, size, syms in self.modules:
            if base <= addr < base + size:
                best = None
                for s in syms.by_name.values():
                    if s.section == ".text" and s.addr <= addr - base and (best is None or s.addr > best.addr):
                        best = s
                if best is not None:
                    return Symbol(f"{best.name} [{name}]", base + best.addr, best.size, best.kind, ".text"), \
                        addr - base - best.addr
        return None
