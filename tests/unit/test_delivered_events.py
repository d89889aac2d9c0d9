"""EXITINTINFO / IDT-vectoring information decoding (values laid out as in the manuals)."""
from splitdbg.vmx_model.events import decode
from splitdbg.vmx_model.quirks import PROFILES


def test_not_valid_is_none():
    assert decode(0, "svm") is None and decode(0xF6, "vmx") is None


def test_svm_types_as_the_apm_names_them():
    d = decode((1 << 31) | (0 << 8) | 0xEC, "svm")
    assert (d.type_name, d.vector, d.error_code) == ("external interrupt", 0xEC, None)
    assert d.describe() == "external interrupt, vector 0xec"
    d = decode((0x5 << 32) | (1 << 31) | (1 << 11) | (3 << 8) | 14, "svm")
    assert (d.type_name, d.error_code) == ("exception", 5)
    assert d.describe() == "exception #PF (vector 14), error code 0x5"
    assert decode((1 << 31) | (4 << 8) | 0x80, "svm").describe() == "software interrupt, vector 0x80"


def test_qemu_types_interrupts_as_exceptions():
    # QEMU 7.2: an external interrupt and an NMI both arrive with TYPE 3 (exception).
    assert "exitintinfo-type-exception" in PROFILES["qemu-tcg-7.2"]
    irq = decode((1 << 31) | (3 << 8) | 0xF6, "svm")
    assert irq.type == 3 and irq.type_name == "external interrupt" and "QEMU" in irq.note
    nmi = decode((1 << 31) | (3 << 8) | 2, "svm")
    assert nmi.describe().startswith("NMI (")
    # An exception with an exception's vector stays one.
    assert decode((1 << 31) | (3 << 8) | 13, "svm").note == ""


def test_vmx_types_as_the_sdm_names_them():
    assert decode((1 << 31) | (2 << 8) | 2, "vmx").describe() == "NMI"
    assert decode((1 << 31) | (6 << 8) | 3, "vmx").describe() == "software exception #BP (vector 3)"
    assert decode((1 << 31) | (5 << 8) | 1, "vmx").type_name == "privileged software exception"
    d = decode((1 << 31) | (3 << 8) | 0xF6, "vmx")      # no QEMU reading under VMX
    assert d.type_name == "hardware exception" and d.note == ""
