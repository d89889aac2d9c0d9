"""splitdbg: see what a split kernel's second-level page-table containers hold, and check it.

Layers, each depending only on those above it in this list:
  splitdbg.mem        memory backends (shared RAM file, gdbstub, file image): physical bytes
  splitdbg.arch       x86-64 paging decoders;  splitdbg.vmx_model: VMX/EPT and SVM/NPT semantics
  splitdbg.target     introspection of the guest (kernel, split-kernel module, containers)
  splitdbg.gdb_plugin, splitdbg.cli, splitdbg.tui   presentation
"""
__version__ = "0.1.0"
