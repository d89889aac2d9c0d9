"""`splitdbg attach TARGET`, `splitdbg record TARGET -o FILE`, `splitdbg replay FILE`, `splitdbg open IMAGE`."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("attach", help="the live TUI of a split kernel")
    p.add_argument("target", help=":PORT or HOST:PORT")
    p.add_argument("--vmlinux")
    p.add_argument("--record", help="also record every snapshot to FILE (for replay)")
    p.add_argument("--force", action="store_true", help="with --record: append even to a file that is not a recording")
    p.add_argument("--interval", type=float, default=0.5)
    p.set_defaults(func=cmd_attach)
    p = sub.add_parser("replay", help="the TUI on a recording, without a guest")
    p.add_argument("file")
    p.add_argument("--interval", type=float, default=0.5)
    p.set_defaults(func=cmd_replay)
    p = sub.add_parser("open", help="the TUI on a memory image (splitdbg dump), offline")
    p.add_argument("image")
    p.add_argument("--vmlinux", help="kernel with symbols (default: the one the image's sidecar names)")
    p.set_defaults(func=cmd_open)
    p = sub.add_parser("record", help="record snapshots of a live target to a file")
    p.add_argument("target")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--vmlinux")
    p.add_argument("--force", action="store_true", help="append even to a file that is not a recording")
    p.set_defaults(func=cmd_record)


def cmd_attach(args) -> int:
    import os

    from ..tui.app import SplitdbgApp
    from ..tui.source import ImageSource, LiveSource

    if os.path.isfile(args.target):      # a memory image: there is nothing to attach to
        SplitdbgApp(ImageSource(args.target, vmlinux=args.vmlinux), interval=1.0).run()
        return 0
    if args.record:
        _appendable(args.record, args.force)
    SplitdbgApp(LiveSource(args.target, vmlinux=args.vmlinux, record=args.record), interval=args.interval).run()
    return 0


def cmd_replay(args) -> int:
    from ..tui.app import SplitdbgApp
    from ..tui.source import ReplaySource

    SplitdbgApp(ReplaySource(args.file), interval=args.interval).run()
    return 0


def cmd_open(args) -> int:
    from ..tui.app import SplitdbgApp
    from ..tui.source import ImageSource

    SplitdbgApp(ImageSource(args.image, vmlinux=args.vmlinux), interval=1.0).run()
    return 0


def cmd_record(args) -> int:
    from ..tui.source import record

    _appendable(args.output, args.force)
    n = record(args.target, args.output, args.seconds, vmlinux=args.vmlinux)
    print(f"{n} snapshots recorded to {args.output}")
    return 0


def _appendable(path: str, force: bool) -> None:
    """A recording is appended to: only an existing recording (or --force) may be."""
    from ..fileio import check_writable, is_recording

    check_writable(path, force=force, ours=is_recording, thing="recording")
