"""Struct layouts from DWARF (pyelftools), cached by the ELF's build id.

A full pass over vmlinux's DWARF takes about 14 s, so lookups stop at the first compilation unit
that defines every struct asked for, and what was found is cached as JSON under
``~/.cache/splitdbg/types/<build-id>.json``: later runs pay nothing.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.elffile import ELFFile

from ..errors import SplitdbgError

CACHE = Path(os.environ.get("SPLITDBG_CACHE", Path.home() / ".cache" / "splitdbg")) / "types"


class TypeError_(SplitdbgError):
    pass


@dataclass(frozen=True)
class Member:
    name: str
    offset: int
    size: int
    type: str          # C spelling, e.g. "struct mm_struct *", "unsigned long", "char[16]"
    struct: str | None  # the struct's name when the member is itself a (named) struct or union


@dataclass(frozen=True)
class StructLayout:
    name: str
    size: int
    members: dict[str, Member]

    def offsetof(self, member: str) -> int:
        try:
            return self.members[member].offset
        except KeyError:
            raise TypeError_(f"struct {self.name} has no member {member!r}") from None


class DwarfTypes:
    def __init__(self, path: str | Path, build_id: str | None = None, cache_dir: Path | None = CACHE):
        self.path = Path(path)
        if not self.path.exists():
            raise TypeError_(f"DWARF file {self.path} not found")
        self.build_id = build_id
        self._cache_file = None
        self._layouts: dict[str, StructLayout] = {}
        if cache_dir is not None and build_id:
            self._cache_file = Path(cache_dir) / f"{build_id}.json"
            if self._cache_file.exists():
                try:
                    raw = json.loads(self._cache_file.read_text())
                    self._layouts = {n: StructLayout(l["name"], l["size"], {m: Member(**v) for m, v in l["members"].items()})
                                     for n, l in raw.items()}
                except (ValueError, KeyError, TypeError):
                    self._layouts = {}  # a damaged cache is rebuilt, not trusted

    def struct(self, name: str) -> StructLayout:
        if name not in self._layouts:
            self.load(name)
        return self._layouts[name]

    def offsetof(self, struct: str, path: str) -> int:
        """Offset of a member path such as "mm" or "se.vruntime" in struct `struct`."""
        off, layout = 0, self.struct(struct)
        parts = path.split(".")
        for i, part in enumerate(parts):
            m = layout.members.get(part)
            if m is None:
                raise TypeError_(f"struct {layout.name} has no member {part!r}")
            off += m.offset
            if i + 1 < len(parts):
                if m.struct is None:
                    raise TypeError_(f"{layout.name}.{part} is not a struct")
                layout = self.struct(m.struct)
        return off

    def sizeof(self, struct: str) -> int:
        return self.struct(struct).size

    def load(self, *names: str) -> None:
        """Find the definitions of these structs (and nothing more) and cache them."""
        wanted = {n for n in names if n not in self._layouts}
        if not wanted:
            return
        try:
            with open(self.path, "rb") as f:
                elf = ELFFile(f)
                if not elf.has_dwarf_info():
                    raise TypeError_(f"{self.path} has no DWARF debug info")
                dwarf = elf.get_dwarf_info()
                for cu in dwarf.iter_CUs():
                    for die in cu.get_top_DIE().iter_children():
                        if die.tag in ("DW_TAG_structure_type", "DW_TAG_union_type") and "DW_AT_declaration" not in die.attributes:
                            name = _name(die)
                            if name in wanted:
                                self._layouts[name] = _layout(die, name)
                                wanted.discard(name)
                    if not wanted:
                        break
        except (OSError, ELFError, DWARFError) as exc:
            raise TypeError_(f"cannot read DWARF from {self.path}: {exc}") from exc
        if wanted:
            raise TypeError_(f"{self.path.name}: no DWARF definition of struct {', '.join(sorted(wanted))}")
        self._save()

    def _save(self) -> None:
        if self._cache_file is None:
            return
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: {"name": l.name, "size": l.size, "members": {k: asdict(m) for k, m in l.members.items()}}
                                   for n, l in self._layouts.items()}))
        tmp.replace(self._cache_file)


def _name(die) -> str | None:
    a = die.attributes.get("DW_AT_name")
    return a.value.decode() if a else None


def _strip(die):
    """Follow typedefs and qualifiers to the underlying type DIE (None for void)."""
    while die is not None and die.tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
                                          "DW_TAG_restrict_type", "DW_TAG_atomic_type"):
        die = die.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in die.attributes else None
    return die


def _type_of(die):
    return die.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in die.attributes else None


def _describe(t) -> tuple[str, int, str | None]:
    """(C spelling, size in bytes, struct name) of a type DIE."""
    if t is None:
        return "void", 0, None
    if t.tag == "DW_TAG_typedef":
        spelled = _name(t)
        _, size, struct = _describe(_strip(t))
        return spelled, size, struct
    if t.tag in ("DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_atomic_type"):
        return _describe(_type_of(t))
    if t.tag == "DW_TAG_pointer_type":
        inner = _type_of(t)
        return (_describe_name(inner) + " *"), 8, None
    if t.tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
        kw = "struct" if t.tag == "DW_TAG_structure_type" else "union"
        n = _name(t)
        size = t.attributes["DW_AT_byte_size"].value if "DW_AT_byte_size" in t.attributes else 0
        return f"{kw} {n or '<anonymous>'}", size, n
    if t.tag == "DW_TAG_array_type":
        spelled, esize, _ = _describe(_type_of(t))
        count = 1
        for sub in t.iter_children():
            if sub.tag == "DW_TAG_subrange_type":
                if "DW_AT_count" in sub.attributes:
                    count *= sub.attributes["DW_AT_count"].value
                elif "DW_AT_upper_bound" in sub.attributes:
                    count *= sub.attributes["DW_AT_upper_bound"].value + 1
                else:
                    count = 0
        return f"{spelled}[{count}]", esize * count, None
    if t.tag in ("DW_TAG_base_type", "DW_TAG_enumeration_type"):
        size = t.attributes["DW_AT_byte_size"].value if "DW_AT_byte_size" in t.attributes else 0
        return (_name(t) or "enum"), size, None
    return t.tag, 0, None


def _describe_name(t) -> str:
    if t is None:
        return "void"
    if t.tag == "DW_TAG_pointer_type":
        return _describe_name(_type_of(t)) + " *"
    if t.tag in ("DW_TAG_const_type", "DW_TAG_volatile_type"):
        return _describe_name(_type_of(t))
    if t.tag == "DW_TAG_subroutine_type":
        return "func"
    return _describe(t)[0] if t.tag != "DW_TAG_typedef" else (_name(t) or "?")


def _layout(die, name: str) -> StructLayout:
    members: dict[str, Member] = {}
    _collect(die, 0, members)
    size = die.attributes["DW_AT_byte_size"].value if "DW_AT_byte_size" in die.attributes else 0
    return StructLayout(name, size, members)


def _collect(die, base: int, members: dict[str, Member]) -> None:
    for m in die.iter_children():
        if m.tag != "DW_TAG_member":
            continue
        loc = m.attributes.get("DW_AT_data_member_location")
        off = base + (loc.value if loc is not None and isinstance(loc.value, int) else 0)
        t = _type_of(m)
        name = _name(m)
        if name is None:
            # Anonymous struct/union (the kernel uses them a lot, e.g. in task_struct): its members
            # belong to the parent.
            inner = _strip(t)
            if inner is not None and inner.tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
                _collect(inner, off, members)
            continue
        spelled, size, struct = _describe(t)
        members.setdefault(name, Member(name, off, size, spelled, struct))
