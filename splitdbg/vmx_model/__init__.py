"""An executable model of Intel VMX/EPT and AMD SVM/NPT: what the hardware must do.

    from splitdbg.vmx_model import translate, slat_ranges

`translate(...)` walks a guest-virtual address through the guest's page tables and the second
level (EPT or NPT), every guest paging-structure access included, and returns the outcome with
exact exit information (EPT-violation exit qualification, NPF EXITINFO1/2) and every step.
`slat_ranges(...)` lists what a container (an EPT or nested table) maps, merged.
Decoders: `vmcs` (field encodings, exit reasons, exit qualifications), `vmcb` (control and state
save area), `ept`/`npt` (entries, qualification bits). Quirk profiles for QEMU 7.2 TCG and
Bochs 2.7 in `quirks`. See docs/vmx_model.md.
"""
from .common import Caps, ModelError, Result, Step  # noqa: F401
from .quirks import PROFILES  # noqa: F401
from .ranges import SlatRange, slat_ranges  # noqa: F401
from .translate import slat_translate, translate  # noqa: F401
