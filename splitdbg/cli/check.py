"""`splitdbg check TARGET POLICY.toml`: does a live split kernel obey a policy? Exit 0 if every
rule holds, 1 otherwise, with a readable report. The policy language is in docs/policies.md; the
rules are checked by splitdbg/policy.py."""
from __future__ import annotations

import json

from ..errors import SplitdbgError
from ..policy import Checker, load_policy
from ..target.session import Session


def register(sub) -> None:
    p = sub.add_parser("check", help="check a policy (TOML) against a live target; exit 1 when it fails")
    p.add_argument("target", help=":PORT, HOST:PORT or a memory image")
    p.add_argument("policy", help="policy file (TOML), see docs/policies.md")
    p.add_argument("--vmlinux")
    p.add_argument("--backend", choices=["auto", "shared-ram-file", "gdbstub"], default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)



def check(s: Session, snap, rules) -> list[dict]:
    """The rules against a CLI session's target."""
    return Checker(snap, mem=s.mem, kernel=s.kernel, splitkernel=s.splitkernel).run(rules)


def cmd_check(args) -> int:
    rules = load_policy(args.policy)
    with Session(args.target, vmlinux=args.vmlinux, prefer=args.backend) as s:
        snap = s.snapshot(crosscheck=False)
        if snap.module_unusable:
            raise SplitdbgError(snap.problems[0] if snap.problems else snap.notes[0])
        if snap.module is None:
            raise SplitdbgError("the split-kernel module is not loaded: " + "; ".join(snap.notes))
        results = check(s, snap, rules)
    ok = all(r["ok"] for r in results)
    from .inspect import say_problems

    say_problems(snap.problems)
    if args.json:
        print(json.dumps({"ok": ok, "rules": results}))
    else:
        for r in results:
            print(f"{'VACUOUS' if r.get('vacuous') else 'PASS' if r['ok'] else 'FAIL'}  {r['name']}")
            for p in r["problems"][:20]:
                print(f"      {p}")
            if len(r["problems"]) > 20:
                print(f"      ... and {len(r['problems']) - 20} more")
        print(f"{sum(r['ok'] for r in results)} of {len(results)} rules hold")
    return 0 if ok else 1
