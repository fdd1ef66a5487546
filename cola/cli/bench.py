"""`cola bench`: the verdict on a model and a task, every method beside full depth and its control."""

from __future__ import annotations

import argparse
import sys

from .common import add_model_args, positive_int


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.plan import Bench

    task = args.task or ("synthetic_mc" if args.preset == "smoke" and args.bench_lm_eval_task is None else None)
    if task is None and args.bench_lm_eval_task is None:
        print("cola: error: give --task NAME or --lm-eval-task NAME (the smoke preset defaults to synthetic_mc)",
              file=sys.stderr)
        return 2
    task = task if args.bench_lm_eval_task is None else f"lm-eval:{args.bench_lm_eval_task}"  # one of them
    out = args.out or f"runs/bench-{args.model.replace('/', '_')}-{task.replace(':', '-')}-{args.preset}"
    bench = Bench(args.model, task, out, args.preset, args.data_dir, args.data_file, args.lm_eval_include,
                  args.mode or "score", args.dtype, args.device, args.seed, args.workers, tuple(args.adopt or ()),
                  tuple(args.transfer or ()))
    stages = bench.select(tuple(args.only or ()), tuple(args.skip or ()))
    splits = bench.splits()  # the samples are read (and a carved split drawn) before any weight loads
    plan = bench.plan(stages, splits)
    if args.dry_run:
        from ..bench.plan import estimate_seconds
        from ..bench.run import made

        seconds = estimate_seconds(bench, stages)
        here = made(bench, stages, splits)  # what the folder holds already: done, or a search part-way
        for name, got in here.items():
            seconds[name] *= 0 if got is None else (got[1] - got[0]) / got[1]
        found = {}
        if bench.adopt:
            from ..bench.run import adoptable

            found = adoptable(bench, stages, splits)
            for name, (_, recorded, n) in found.items():
                seconds[name] *= (n - recorded) / n  # what is left to search
        print(f"plan of {out} ({args.preset}: {len(stages)} stages; splits: "
              + ", ".join(f"{k} {v.split or 'carved'}{'' if v.ids is None else f' ({len(v.ids)} by id)'}"
                          for k, v in splits.items()) + ")")
        width = max(len(s.name) for s in stages)
        for s in stages:
            adopt = (f"  adopts {found[s.name][0]} ({found[s.name][1]} of {found[s.name][2]} recorded)"
                     if s.name in found else "")
            if s.name in here:
                adopt += "  done" if here[s.name] is None else "  {} of {} {} here".format(*here[s.name])
            print(f"  {s.name:{width}s} {s.family:11s} {s.kind:16s} {s.size:7d} chain evaluations  "
                  f"~{seconds[s.name]:7.0f} s  {_settings(s.settings)}{adopt}")
        if found:
            print("  (an adopted run's weights are compared with the model's when the bench runs)")
        left = "left" if here else "total"
        print(f"estimated {left}: {sum(seconds.values()) / 60:.0f} min on this machine (a timing probe, not a "
              "measurement; docs/bench.md has measured times)")
        return 0
    from tqdm import tqdm

    from ..bench.page import write_results
    from ..bench.run import run_bench
    from .common import Bars

    args.kept = lambda: f"the finished stages are kept in {out}; run the same command again to resume"
    with tqdm(total=len(stages), desc="cola bench", unit="stage", disable=args.quiet, position=0) as bar, \
            Bars(task) as bars:
        def overall(stage, ran):
            bar.set_postfix_str(stage.name + ("" if ran else " (done before)"))
            bar.update(1)

        left_out = run_bench(bench, stages, splits, plan, None if args.quiet else bars, overall)
    for name, why in left_out.items():
        print(f"cola: stage {name} left out: {why}", file=sys.stderr)
    table, page, transfers = write_results(bench, bench.stages())  # every finished stage, --only's or not
    _print_table(table)
    for task, rows in transfers.items():
        print(f"\ntransfer to {task} (chosen on {bench.task}):")
        _print_table(rows)
    print(f"page: {page}" if page else f"no results yet in {out} (full depth has not run)")
    return 0


def _settings(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items())


def _print_table(table: list[dict]) -> None:
    if not table:
        return
    names = [("ORACLE " if r["oracle"] else "") + r["method"] for r in table]
    width = max(len("method"), *map(len, names))  # whole names: two methods may differ only at the end
    print(f"{'method':{width}s} {'accuracy':>8s} {'95% CI':>15s} {'layers':>7s}  verdict")
    for name, r in zip(names, table):
        print(f"{name:{width}s} {r['accuracy']:8.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] {r['mean_layers']:7.1f}  "
              f"{r['verdict']}")


def add_parsers(sub) -> None:
    """The parser of `cola bench`, on ``cola``'s subcommands ``sub``."""
    from ..bench.plan import FAMILIES
    from ..bench.presets import PRESETS
    from ..evaluation.config import MODES

    p = sub.add_parser("bench", help="every way to spend depth per input on one model and task, each beside full "
                                     "depth and its chance control, in one resumable command (docs/bench.md)")
    add_model_args(p)
    p.add_argument("--task", default=None, help="task name (see `cola tasks`; smoke: default synthetic_mc)")
    p.add_argument("--lm-eval-task", dest="bench_lm_eval_task", default=None,
                   help="an lm-evaluation-harness task as the task")
    p.add_argument("--lm-eval-include", default=None, help="a folder of lm-eval YAML tasks")
    p.add_argument("--data-dir", default=None, help="folder in the layout of shared/data (default: the HF hub)")
    p.add_argument("--data-file", default=None,
                   help="a JSONL file of the task's shape (mc_jsonl, qa_jsonl): train, dev and test are carved from it")
    p.add_argument("--mode", default=None, choices=MODES, help="score (multiple choice, the default) or generate")
    p.add_argument("--preset", default="quick", choices=tuple(PRESETS),
                   help="smoke (minutes, every family present), quick (the default: 300 test samples; --dry-run "
                        "estimates its time) or study (the committed study's sizes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets and of carved splits (default 0)")
    p.add_argument("--out", default=None, help="the bench folder (default runs/bench-MODEL-TASK-PRESET)")
    p.add_argument("--only", nargs="+", default=None, metavar="STAGE",
                   help=f"run only these stages or families ({', '.join(FAMILIES)}), what they read and full depth")
    p.add_argument("--skip", nargs="+", default=None, metavar="STAGE", help="leave these stages or families out")
    p.add_argument("--adopt", nargs="+", default=None, metavar="DIR",
                   help="take a search run found in these folders (run folders or folders of them, e.g. "
                        "results/runs) instead of searching again, where its config is the stage's (but batch size "
                        "and software): a finished one linked into the bench folder, an unfinished one copied and "
                        "finished there")
    p.add_argument("--transfer", nargs="+", default=None, metavar="TASK",
                   help="also report every deployable method and its controls, as chosen on --task (chains, routers, "
                        "calibrated policies unchanged), on these tasks' own reported splits (e.g. arc_challenge "
                        "csqa): a section of the page each")
    p.add_argument("--workers", type=positive_int, default=None, help="run the searches on this many Ray workers")
    p.add_argument("--dry-run", action="store_true", help="print the plan, each stage's size and an estimated time; "
                                                          "load no weights")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench, dtype="auto")
