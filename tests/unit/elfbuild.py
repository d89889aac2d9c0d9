"""Tiny ELF64 files for tests: a kernel-like executable (text linked at 0xffffffff81000000) with a
symbol table, or the same as a relocatable object (a .ko). Written by hand, no toolchain needed."""
from __future__ import annotations

import struct

TEXT_VA = 0xFFFFFFFF81000000


def elf(e_type: int = 2, text_va: int = TEXT_VA, symbols: bool = True, machine: int = 62) -> bytes:
    text = b"\x90" * 64
    strtab = b"\0startup_64\0linux_banner\0"
    syms = bytes(24)                                                           # the null symbol
    if symbols:
        syms += struct.pack("<IBBHQQ", 1, 0x12, 0, 1, text_va, 16)              # FUNC GLOBAL in .text
        syms += struct.pack("<IBBHQQ", 12, 0x11, 0, 1, text_va + 32, 8)         # OBJECT GLOBAL
    shstr = b"\0.text\0.symtab\0.strtab\0.shstrtab\0"
    body, offs = b"", []
    for blob in (text, syms, strtab, shstr):
        offs.append(64 + len(body))
        body += blob + bytes(-len(blob) % 8)
    shoff = 64 + len(body)
    sh = bytes(64)
    sh += struct.pack("<IIQQQQIIQQ", 1, 1, 6, text_va if e_type == 2 else 0, offs[0], len(text), 0, 0, 16, 0)
    sh += struct.pack("<IIQQQQIIQQ", 7, 2, 0, 0, offs[1], len(syms), 3, 1, 8, 24)
    sh += struct.pack("<IIQQQQIIQQ", 15, 3, 0, 0, offs[2], len(strtab), 0, 0, 1, 0)
    sh += struct.pack("<IIQQQQIIQQ", 23, 3, 0, 0, offs[3], len(shstr), 0, 0, 1, 0)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    hdr = ident + struct.pack("<HHIQQQIHHHHHH", e_type, machine, 1, text_va if e_type == 2 else 0, 0, shoff,
                              0, 64, 0, 0, 64, 5, 4)
    return hdr + body + sh
