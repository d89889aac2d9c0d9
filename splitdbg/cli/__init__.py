"""The `splitdbg` command line. One module per command group; each registers its sub-parser."""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import SplitdbgError
from . import check as check_cmd
from . import gdb as gdb_cmd
from . import inspect as inspect_cmd
from . import lab as lab_cmd
from . import tui as tui_cmd

COMMANDS = [lab_cmd, gdb_cmd, inspect_cmd, check_cmd, tui_cmd]
EX_SOFTWARE = 70          # sysexits.h: an internal error (a bug in splitdbg)
EX_PIPE = 141             # as a command killed by SIGPIPE reports it (128 + 13)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitdbg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def _quiet_stdout() -> None:
    """The reader of our stdout went away (`splitdbg events ... | head`): point stdout at /dev/null
    so that Python's own flush at exit does not complain about the broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):     # stdout is no file (a test's capture)
        pass


def main(argv: list[str] | None = None) -> int:
    """Exit codes: what the command says (0, or 1 for a check or diff that finds something), 2 for
    an error the user can act on (one line on stderr), 130 on Ctrl-C, 141 when the reader of stdout
    went away, 70 for an internal error (SPLITDBG_DEBUG=1 shows its traceback instead)."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "vmlinux", None):          # "" means none; a kernel ELF with symbols, else say so now
            from ..target.symbols import check_vmlinux

            check_vmlinux(args.vmlinux)
        rc = args.func(args) or 0
        sys.stdout.flush()                          # a closed pipe shows here, not at exit
        return rc
    except BrokenPipeError:
        _quiet_stdout()
        return EX_PIPE
    except (SplitdbgError, OSError, ValueError) as exc:
        print(f"splitdbg: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:                        # a bug: say so in one line, unless asked for the traceback
        if os.environ.get("SPLITDBG_DEBUG") == "1":
            raise
        what = " ".join(str(exc).split())[:400]
        print(f"splitdbg: internal error: {type(exc).__name__}: {what} (SPLITDBG_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EX_SOFTWARE
