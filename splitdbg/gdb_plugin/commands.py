"""The `split` prefix command; subcommands live in their own modules."""
import gdb


class Split(gdb.Command):
    """Inspect a split kernel's containers: split status, split pagetable, ..."""

    def __init__(self):
        super().__init__("split", gdb.COMMAND_DATA, gdb.COMPLETE_COMMAND, prefix=True)


Split()
