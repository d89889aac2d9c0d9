"""Target introspection: what the guest's kernel and the split-kernel module hold.

symbols.py  ELF symbols (pyelftools)      types.py  struct layouts from DWARF, cached by build id
"""
