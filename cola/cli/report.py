"""`cola report` (the study's tables) and `cola tasks`."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..storage import check_folder


def cmd_report(args: argparse.Namespace) -> int:
    from ..report.pages import build_report

    if not args.runs and not args.evals:
        raise UsageError("give search run folders and/or --evals F.jsonl (cola eval outputs)")
    check_folder(args.out)
    out = build_report(args.runs, args.out, args.evals or [])
    print(f"report: {out / 'report.md'} and {out / 'report.html'}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from ..tasks import TASKS

    print(f"{'task':15s} {'modes':15s} {'splits':16s} description")
    for name, task in TASKS.items():
        splits = ",".join(task.splits) or "-"
        print(f"{name:15s} {'/'.join(task.modes):15s} {splits:16s} {task.description}")
    return 0


def add_parsers(sub) -> None:
    """The parsers of this module's commands, on ``cola``'s subcommands ``sub``."""
    p = sub.add_parser("report", help="the study's tables, findings and figures from search runs")
    p.add_argument("runs", nargs="*", help="run folders of cola search")
    p.add_argument("--evals", nargs="+", default=None,
                   help="`cola eval --out F.jsonl` outputs (chains, routers) for the sections Per-sample or static? and "
                        "Label-free adaptation")
    p.add_argument("--out", required=True, help="folder for report.md, report.html, PNG figures and CSV tables")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("tasks", help="list the registered tasks")
    p.set_defaults(func=cmd_tasks)
