"""Shared pieces of the model: capabilities, errors, walk steps and results."""
from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter

from ..errors import SplitdbgError


class ModelError(SplitdbgError):
    """Input the model cannot evaluate (an EPTP no VM entry would accept, a bad argument)."""


@dataclass(frozen=True)
class Caps:
    """What the processor supports (IA32_VMX_EPT_VPID_CAP, CPUID), with a recent part's values.

    For VMX: MAXPHYADDR 46 (a recent Xeon), execute-only translations, 1 GiB pages, 4- and
    5-level EPT, EPT A/D flags, advanced VM-exit information for EPT violations. `mbec` is the
    "mode-based execute control for EPT" VM-execution control (off unless the hypervisor sets it).
    For SVM: MAXPHYADDR 48 (EPYC), 1 GiB nested pages.
    """

    maxphyaddr: int = 46
    ept_execute_only: bool = True
    ept_1g: bool = True
    ept_5level: bool = True
    ept_ad: bool = True
    ept_advanced_exit_info: bool = True
    mbec: bool = False
    npt_1g: bool = True

    @classmethod
    def default(cls, arch: str) -> "Caps":
        return cls() if arch == "vmx" else cls(maxphyaddr=48)


ACCESSES = ("read", "write", "fetch")


class Step(tuple):
    """One entry read during a walk: (walk, level, entry_addr, entry, purpose).

    A tuple subclass so the walks can build it at C speed (`new_step(Step, (...))`): a 2D
    translation records about 24 of them and must cost well under 20 microseconds."""

    __slots__ = ()

    def __new__(cls, walk: str, level: int, entry_addr: int, entry: int, purpose: str):
        return tuple.__new__(cls, (walk, level, entry_addr, entry, purpose))

    walk = property(itemgetter(0), doc='"guest" (guest paging), "ept" or "npt" (second level)')
    level = property(itemgetter(1), doc="5..1")
    entry_addr = property(itemgetter(2), doc="guest-physical for guest entries, host-physical for SLAT entries")
    entry = property(itemgetter(3))
    purpose = property(itemgetter(4), doc='e.g. "guest PML4E", or "GPA of guest PDE", "final GPA"')

    def __repr__(self) -> str:
        return f"Step({self.walk} L{self.level} @{self.entry_addr:#x} = {self.entry:#018x} for {self.purpose})"

    def as_dict(self) -> dict:
        return {"walk": self.walk, "level": self.level, "entry_addr": self.entry_addr, "entry": self.entry,
                "purpose": self.purpose}


# Builds a Step from a 5-tuple without a Python-level __new__ (hot path of the walks).
new_step = tuple.__new__


@dataclass
class Result:
    """The outcome of a translation, with the exit information the hardware must report."""

    kind: str                      # ok | guest_pf | ept_violation | ept_misconfig | npf
    arch: str
    gva: int | None        # None for a second-level walk alone
    access: str
    gpa: int | None = None         # the guest-physical address involved (final, or of the guest entry)
    hpa: int | None = None         # host-physical address (kind == "ok")
    error_code: int | None = None  # guest #PF error code
    qualification: int | None = None  # EPT violation exit qualification
    exitinfo1: int | None = None   # NPF: error code bits + bit 32/33
    exitinfo2: int | None = None   # NPF: faulting guest-physical address
    guest_linear: int | None = None  # EPT violation: guest linear address field
    level: int | None = None       # level of the entry that stopped the walk
    during_guest_walk: bool = False  # the fault was on a guest paging-structure access
    reason: str = ""
    # The walks record plain 5-tuples (cheap to build on the hot path); `steps` turns them into
    # Step objects (named fields) when someone looks.
    raw_steps: list[tuple] = field(default_factory=list, repr=False)
    quirks_applied: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[Step]:
        raw = self.raw_steps
        cached = self.__dict__.get("_steps")
        if cached is None or len(cached) != len(raw):
            cached = self.__dict__["_steps"] = [s if s.__class__ is Step else new_step(Step, s) for s in raw]
        return cached

    def explain(self) -> str:
        from .explain import explain

        return explain(self)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("kind", "arch", "gva", "access", "gpa", "hpa", "error_code", "qualification",
                                           "exitinfo1", "exitinfo2", "guest_linear", "level", "during_guest_walk",
                                           "reason", "quirks_applied")}
        d["steps"] = [s.as_dict() for s in self.steps]
        return d
