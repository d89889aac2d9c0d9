"""Emulator quirk profiles: known deviations from the architecture (../shared/REFERENCE.md).

With a profile, the model predicts what that emulator does, and says so in
`Result.quirks_applied`, so a cross-check can tell "differs from the architecture in the way this
emulator is known to" from a real discrepancy.
"""
from __future__ import annotations

from .common import ModelError

PROFILES: dict[str, dict[str, str]] = {
    "qemu-tcg-7.2": {
        "npf-rsv-no-p": "a nested page fault caused by a reserved bit reports EXITINFO1 without the P bit",
        "guest-pf-rsv-no-p": "a guest #PF caused by a reserved bit has error code without the P bit (0x8, not 0x9)",
        "npf-id-ignores-smep": "host CR4.SMEP is not taken into account for the I/D bit of nested faults",
        "npt-pml4e-bit8-unchecked": "bit 8 of an nPML4E is not checked as reserved",
        "exitintinfo-type-exception": "EXITINTINFO gives external interrupts and NMIs TYPE 3 (exception), not 0 "
                                      "and 2; VMRUN refuses to inject them back with that type",
    },
    "bochs-2.7": {
        "npf-id-always": "the I/D bit of nested fetch faults is set even with host EFER.NXE=0 and CR4.SMEP=0",
        "ept-guest-ad-as-read": "guest A/D-bit updates through read-only EPT mappings do not cause EPT violations "
                                "(and with EPT A/D enabled, guest paging-structure accesses count as reads)",
    },
}


_EMPTY: frozenset = frozenset()
_SETS = {name: frozenset(q) for name, q in PROFILES.items()}


def quirk_set(profile: str | None) -> frozenset[str]:
    if profile is None:
        return _EMPTY
    try:
        return _SETS[profile]
    except KeyError:
        raise ModelError(f"unknown quirk profile {profile!r}; known: {', '.join(PROFILES)}") from None
