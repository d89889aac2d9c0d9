"""Guest-physical spans as users write them: "START-END", hexadecimal, end exclusive."""
from __future__ import annotations

from ..errors import SplitdbgError


def parse_range(text, what: str = "range") -> tuple[int, int]:
    """"START-END", hexadecimal (0x optional), START < END: the guest-physical span [START, END)."""
    if not isinstance(text, str):
        raise SplitdbgError(f"{what} = {text!r}: must be a string \"START-END\" (hexadecimal)")
    a, sep, b = text.strip().partition("-")
    if not sep:
        raise SplitdbgError(f"{what} {text!r}: must be START-END (hexadecimal, end exclusive), e.g. 0x1000000-0x1400000")
    try:
        lo, hi = int(a, 16), int(b, 16)
    except ValueError:
        raise SplitdbgError(f"{what} {text!r}: START and END must be hexadecimal numbers") from None
    if lo < 0 or hi < 0:
        raise SplitdbgError(f"{what} {text!r}: addresses cannot be negative")
    if lo >= hi:
        raise SplitdbgError(f"{what} {text!r}: START must be below END (the range is empty)")
    return lo, hi
