"""`cola eval`: a chain, a router or a policy on a task's samples, beside full depth."""

from __future__ import annotations

import argparse
import sys

from .common import (
    Bars,
    add_model_args,
    add_task_args,
    eval_config,
    number_list,
    positive_int,
    resolve_mode,
    selection,
)


def cmd_eval(args: argparse.Namespace) -> int:
    """`cola eval`: the job from the arguments (:class:`~cola.policies.job.EvalJob`), run, its lines printed."""
    from ..policies.job import EvalJob

    resolve_mode(args)
    settings = dict(signal=args.signal, norm=args.norm or None, rule=args.rule, k=args.k,
                    temperature=args.temperature, seed=args.sample_seed)
    job = EvalJob(selection(args), eval_config(args), args.model, args.device, args.dtype, args.allow_untested,
                  chains=tuple(args.chain or ()), router=args.router, policy=args.policy, settings=settings,
                  chains_from=args.chains_from, top=args.top, thresholds=tuple(args.threshold or ()),
                  calibrate=args.calibrate, dev_n=args.dev_n, ks=tuple(args.ks),
                  rules=tuple(args.rules.split(",")) if args.rules else (), temperatures=tuple(args.temperatures),
                  sweep=args.sweep, replay=args.replay, top_k=args.top_k, trust_runs=tuple(args.trust_runs or ()),
                  batch=args.batch_size, name=args.name, out=args.out)
    args.kept = job.kept
    with Bars(args.task) as bars:
        result = job.run(bars)
    summary = result.summary
    if result.reused:
        print(f"{args.out}: this evaluation is finished already (same config); its results follow (delete the file to "
              "run it again)", file=sys.stderr)
    if result.kind == "policy":
        if result.calibration is not None:
            chosen = result.calibration["points"][result.calibration["chosen"]]
            print(f"calibrated on {result.calibration['n']} dev samples ({args.calibrate}): {chosen['name']} — dev "
                  f"accuracy {chosen['accuracy']:.4f}, {chosen['mean_layers']:.2f} layers per input, agreement with "
                  f"full depth {chosen['agreement']:.1%}")
        _print_policy(summary)
    elif result.kind == "router":
        if summary["seen_in_fit"]:
            print(f"cola: warning: {summary['seen_in_fit']} of these samples were used to fit or select "
                  f"{args.router} (first: {summary['seen_ids'][:3]}); its numbers here are not held-out",
                  file=sys.stderr)
        _print_router(summary, result.router, args.router)
    if result.kind != "policy":
        for name in ("acc", "acc_norm") if args.mode == "score" else ("acc",):
            m = summary[name]
            print(f"{args.task} {name}: {m['accuracy']:.4f} ({m['k']}/{len(result.rows)}), 95% CI [{m['ci'][0]:.4f}, "
                  f"{m['ci'][1]:.4f}]  {'router ' + args.router if args.router else 'chain ' + summary['chain']}")
    if summary.get("wall_processes") and summary["wall_processes"] > 1:
        print(f"note: resumed; wall times are sums of each batch's time over {summary['wall_processes']} processes",
              file=sys.stderr)
    if args.out:
        print(f"per-sample answers: {args.out}; summary: {result.summary_path}")
    return 0


def _print_policy(summary: dict) -> None:
    """A policy evaluation's lines: its accuracy and cost, and full depth's beside it, paired and timed."""
    n, acc, full = summary["n"], summary["acc"], summary["baselines"]["full"]
    print(f"policy {summary['name']} ({summary['task']} {summary['split'] or summary['data']}, {summary['mode']} mode)")
    print(f"  policy:     accuracy {acc['accuracy']:.4f} ({acc['k']}/{n}) [{acc['ci'][0]:.4f}, {acc['ci'][1]:.4f}], "
          f"{summary['mean_layers']:.2f} layers computed per input ({summary['layers_ratio']:.3f} x full), "
          f"{summary['mean_chains']:.2f} chains asked, {summary['mean_tokens']:.1f} tokens decoded, "
          + ("replayed from the sweep (not timed)" if summary["replayed"] else
             f"{summary['wall_s']:.1f} s ({summary['wall_ratio']:.3f} x full)"))
    print(f"  full depth: accuracy {full['accuracy']:.4f} ({full['k']}/{n}) [{full['ci'][0]:.4f}, {full['ci'][1]:.4f}], "
          f"{full['mean_layers']:.2f} layers" + ("" if summary["replayed"] else f", {full['wall_s']:.1f} s")
          + f"; policy right only {full['policy_only']}, full right only {full['other_only']}: McNemar exact p = "
          f"{full['mcnemar_p']:.4g}")
    if summary.get("mean_layer_tokens"):
        print(f"  layers x generated tokens (Dr.LLM's count): policy {summary['mean_layer_tokens']:.1f}, full depth "
              f"{full['mean_layer_tokens']:.1f} per input")
    print(f"  agreement with full depth {summary['agreement']:.1%}; stops: "
          + ", ".join(f"{k} ({v})" for k, v in summary["stops"].items()))
    if "oracle" in summary:
        _print_oracle(summary["oracle"])
    if summary["seen_in_calibration"]:
        print(f"cola: warning: {summary['seen_in_calibration']} of these samples were used to calibrate the policy "
              f"(first: {summary['seen_ids'][:3]}); its numbers here are not held-out", file=sys.stderr)


def _print_oracle(oracle: dict) -> None:
    """PoLar's own metric, each line labelled an oracle (checked against the gold), beside the deployable pass@1."""
    k, n = oracle["top_k"], oracle["n"]

    def line(label: str, r: dict, layers: str) -> str:
        return (f"  {label} accuracy {r['accuracy']:.4f} ({r['k']}/{n}) [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}], "
                f"{r['mean_layers']:.2f} {layers}")

    print(f"{oracle['label']}: right when any of the top {k} programs is right by the gold answer; not what a "
          "deployed predictor gives (pass@1, above): compare it only with a control's best-of-k")
    print(line(f"ORACLE best-of-{k} online:    ", oracle["best_of_k_online"], "layers per input (all run)"))
    if "as_released" in oracle:
        r = oracle["as_released"]
        print(line(f"ORACLE as released (top {k}):", r, f"layers per input run ({r['programs_trusted']} programs "
                                                       f"taken from {', '.join(r['trust_runs'])} unrun)"))
    print(line("pass@1 of the same programs: ", oracle["pass1"], "layers per input"))


def _print_router(summary: dict, router, folder: str) -> None:
    """The router evaluation's lines: what it is, its accuracy and layers, each baseline paired with it."""
    n, depth, config = summary["n"], summary["depth"], router.config
    acc = summary["acc"]
    print(f"router {folder}: {len(router.library)} chains, features after {router.setting.features} layers "
          f"(fitted on {config.get('task')} {config.get('split')}, control {config.get('control')})")
    print(f"  routed:      accuracy {acc['accuracy']:.4f} ({acc['k']}/{n}) [{acc['ci'][0]:.4f}, {acc['ci'][1]:.4f}], "
          f"mean chain length {summary['mean_length']:.2f}, mean layers computed {summary['mean_layers']:.2f} "
          f"({summary['mean_layers'] / depth:.3f} x depth, feature layers included), {summary['routed_s']:.1f} s")
    for name, b in summary["baselines"].items():
        print(f"  {name + ':':12s} accuracy {b['accuracy']:.4f} ({b['k']}/{n}) [{b['ci'][0]:.4f}, {b['ci'][1]:.4f}], "
              f"mean chain length {b['mean_length']:.2f}; router right only {b['router_only']}, {name} right only "
              f"{b['other_only']}: McNemar exact p = {b['mcnemar_p']:.4g}")
    print(f"  routed to the full chain: {summary['full_share']:.1%} of inputs; picks: "
          + ", ".join(f"{c} ({count})" for c, count in summary["picks"].items()))


def _add_policy_args(parser: argparse.ArgumentParser) -> None:
    from ..policies.spec import KINDS, RULES
    from ..policies.spec import GENERATE_SIGNALS, SCORE_SIGNALS

    g = parser.add_argument_group("label-free policies (docs/policies.md)")
    g.add_argument("--policy", default=None,
                   help=f"answer with a policy: {', '.join(KINDS)}, or a spec FILE.json (a spec, or an earlier "
                        "--policy evaluation's summary); full depth runs beside it, paired and timed")
    g.add_argument("--chains-from", default=None,
                   help="add chains from a `cola prune --out` file, a `--static` search run, a router folder or a "
                        "per-sample search run (its fixed-menu ranking), after any --chain")
    g.add_argument("--top", type=positive_int, default=None, help="take at most this many chains from --chains-from")
    g.add_argument("--threshold", type=float, action="append", default=None,
                   help="cascade: keep a step's answer when its confidence is at least this (one per step but the "
                        "last; 0 always keeps, 1 never)")
    g.add_argument("--signal", default=None, choices=SCORE_SIGNALS + GENERATE_SIGNALS,
                   help="confidence: max_prob, margin or certainty of the option softmax (score mode, default "
                        "max_prob); answer_prob (generate mode)")
    g.add_argument("--norm", action="store_true", help="score mode: answers and confidences per character (acc_norm)")
    g.add_argument("--rule", default=None, choices=RULES, help="vote: majority (default), confident or weighted")
    g.add_argument("--k", type=positive_int, default=None,
                   help="vote: the first k chains (default all); self-consistency: samples per input")
    g.add_argument("--temperature", type=float, default=None, help="self-consistency: sampling temperature")
    g.add_argument("--sample-seed", type=int, default=None, help="self-consistency: seed of the samples (default 0)")
    g.add_argument("--calibrate", default=None,
                   help="choose the thresholds (cascade), k and rule (vote), k and temperature (self-consistency) on "
                        "the dev split: consistency=S (fewest layers agreeing with full depth on a share S, no "
                        "labels), budget=B (most accurate within B x depth layers) or accuracy")
    g.add_argument("--dev-n", type=positive_int, default=300, help="dev samples to calibrate on (default 300)")
    g.add_argument("--ks", type=number_list(int), default=(), help="k values to calibrate over, e.g. 1,3,5,9")
    g.add_argument("--rules", default=None, help="vote rules to calibrate over, e.g. majority,confident,weighted")
    g.add_argument("--temperatures", type=number_list(float), default=(), help="temperatures to calibrate over, e.g. 0.5,0.7,1.0")
    g.add_argument("--sweep", action="store_true",
                   help="also answer every setting of the calibrated family on these samples (one table of answers, "
                        "replayed): the curve of `cola report`; nothing is chosen from it")
    g.add_argument("--top-k", type=positive_int, default=1,
                   help="--policy program: also PoLar's own metric, an ORACLE: right when any of the k best programs "
                        "is right by the gold answer (PoLar: 5); pass@1 stays the policy's number")
    g.add_argument("--trust-runs", nargs="+", default=None, metavar="RUN",
                   help="with --top-k: PoLar's released metric, an ORACLE: a program these search runs evaluated on "
                        "the sample counts with their verdict, unrun (its trust_valid_cache)")
    g.add_argument("--replay", action="store_true",
                   help="with --sweep: answer the policy and full depth from the sweep's table instead of running them "
                        "again (the same answers and layers, one pass less, no wall times)")


def add_parsers(sub) -> None:
    """The parsers of this module's commands, on ``cola``'s subcommands ``sub``."""
    p = sub.add_parser("eval", help="accuracy of one chain on a task, with a 95%% confidence interval")
    add_model_args(p)
    add_task_args(p)
    p.add_argument("--chain", action="append", default=None,
                   help="chain notation (default: full); with --policy cascade or vote, repeat it: the chains in order")
    p.add_argument("--router", default=None,
                   help="a router folder (`cola router fit`): each input through the chain it routes it to, compared "
                        "with full depth and a random pick from its library on the same samples; with --policy "
                        "layer-router, a per-layer routers folder (`cola router fit-layers` or `layer-control`)")
    _add_policy_args(p)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples run together (default: 16 in generate mode, with --router or --policy; 1 in score mode: each "
                        "alone, exactly as lm-eval; larger is faster, and bitwise the same on a CPU with a dense model)")
    p.add_argument("--name", default=None, help="a name for this evaluation in `cola report` (default: the chain)")
    p.add_argument("--out", default=None,
                   help="write one JSON line per sample to this file (F.jsonl) and the summary beside it (F.json)")
    p.set_defaults(func=cmd_eval)
