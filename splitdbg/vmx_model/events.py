"""The event a CPU was delivering when a VM exit interrupted it: SVM's EXITINTINFO (APM vol. 2,
15.7.2) and VMX's IDT-vectoring information (SDM vol. 3, 25.9.3 and 28.2.4).

Both fields share one layout: vector in bits 7:0, type in 10:8, "error code valid" in bit 11,
valid in bit 31; splitkernel records the error code in bits 63:32. The handler must deliver such
an event again, or it is lost (an acknowledged interrupt that never gets its EOI blocks every
lower-priority vector): the event detail says which one it was."""
from __future__ import annotations

from dataclasses import dataclass

VALID = 1 << 31
ERROR_CODE_VALID = 1 << 11

SVM_TYPES = {0: "external interrupt", 2: "NMI", 3: "exception", 4: "software interrupt"}
VMX_TYPES = {0: "external interrupt", 2: "NMI", 3: "hardware exception", 4: "software interrupt",
             5: "privileged software exception", 6: "software exception", 7: "other event"}
EXCEPTIONS = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
              10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC",
              19: "#XM", 20: "#VE", 21: "#CP"}


@dataclass(frozen=True)
class DeliveredEvent:
    vector: int
    type: int
    type_name: str
    error_code: int | None
    note: str = ""

    def describe(self) -> str:
        if self.type_name in ("exception", "hardware exception", "software exception") and self.vector < 32:
            what = f"{self.type_name} {EXCEPTIONS.get(self.vector, '')} (vector {self.vector})".replace("  ", " ")
        elif self.type_name == "NMI":
            what = "NMI"
        else:
            what = f"{self.type_name}, vector {self.vector:#x}"
        if self.error_code is not None:
            what += f", error code {self.error_code:#x}"
        return what + (f" ({self.note})" if self.note else "")


def decode(value: int, arch: str = "svm") -> DeliveredEvent | None:
    """None when the exit did not interrupt an event delivery."""
    if not value & VALID:
        return None
    vector, type_ = value & 0xFF, (value >> 8) & 7
    error_code = (value >> 32) & 0xFFFFFFFF if value & ERROR_CODE_VALID else None
    name = (VMX_TYPES if arch == "vmx" else SVM_TYPES).get(type_, f"type {type_}")
    note = ""
    if arch == "svm" and type_ == 3 and (vector >= 32 or vector == 2):
        # QEMU 7.2 TCG types every event but INTn as an exception (quirk exitintinfo-type-exception):
        # no exception has these vectors, so name the event that it was.
        name = "NMI" if vector == 2 else "external interrupt"
        note = "TYPE 3: QEMU types interrupts as exceptions"
    return DeliveredEvent(vector, type_, name, error_code, note)
