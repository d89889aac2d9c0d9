"""The `splitdbg` command line. One module per command group; each registers its sub-parser."""
from __future__ import annotations

import argparse
import sys

from ..errors import SplitdbgError
from . import check as check_cmd
from . import gdb as gdb_cmd
from . import inspect as inspect_cmd
from . import lab as lab_cmd
from . import tui as tui_cmd

COMMANDS = [lab_cmd, gdb_cmd, inspect_cmd, check_cmd, tui_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitdbg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (SplitdbgError, OSError, ValueError) as exc:
        print(f"splitdbg: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
