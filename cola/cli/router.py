"""`cola router fit`, `fit-layers`, `layer-control`, `fit-program`, `program-control`: routers fitted on search runs,
and their controls."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from ..storage import FolderLock
from .common import number_list, positive_float, positive_int


def _locked(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` holding the write lock of its ``--out`` folder from before the model loads until it returns: a
    second fit into the same folder stops at once, in one line, instead of mixing two routers' files."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        with FolderLock(args.out):
            return command(args)

    return run


@_locked
def cmd_router_fit(args: argparse.Namespace) -> int:
    """`cola router fit`: a chain library from train-split search runs, a router fitted on their samples and
    selected on dev samples, written as a folder."""
    from ..policies.library_router import LibraryFit, fit_from_runs

    fit = LibraryFit(size=args.k, most=args.candidates, min_support=args.min_support,
                     library=tuple(args.library.split(";")) if args.library else None, budget=args.budget,
                     feature_layers=tuple(args.features), fit_n=args.fit_n, dev_n=args.dev_n, seed=args.seed,
                     data=args.data_dir, data_file=args.data_file, dev_file=args.dev_file)
    router, summary = fit_from_runs(args.runs, fit, args.batch_size, args.device, args.allow_untested,
                                    progress=not args.quiet)
    router.save(args.out)
    info, depth = summary["library_search"], summary["depth"]
    if info is not None:
        print(f"library: {info['candidates']} candidate chains asked on the {info['searched']} searched samples; "
              f"{info['supported']} are right on at least {args.min_support}; the greedy cover keeps "
              f"{len(router.library) - 1} besides the full chain")
    chosen, config = summary["dev"], router.config
    print(f"router: {args.out} ({len(router.library)} chains, fitted on {config['train_samples']} train samples of "
          f"{len(args.runs)} run(s), selected on {config['dev_samples']} dev samples)")
    print("library (train / dev accuracy, each chain for every sample):")
    for c in summary["chains"]:
        print(f"  {c['length']:3d} layers  train {c['train_accuracy']:.3f}  dev {c['dev_accuracy']:.3f}  {c['chain']}")
    s = router.setting
    print(f"chosen on dev: features after {s.features} layers, C {s.c}, class weight {s.weight}, mu {s.mu}: dev "
          f"accuracy {chosen['dev_accuracy']:.3f} (full chain {summary['chains'][0]['dev_accuracy']:.3f}), mean layers "
          f"computed {chosen['dev_layers']:.2f} of {depth}, routed to the full chain {chosen['dev_full_share']:.1%}")
    if chosen["dev_layers"] > args.budget * depth:
        print(f"cola: warning: no setting computes at most {args.budget} x depth layers on dev; the cheapest is kept",
              file=sys.stderr)
    print(f"report it on held-out samples: cola eval --router {args.out} --task {summary['task']} --split test "
          f"--mode {summary['mode']} --out router-test.jsonl")
    return 0


@_locked
def cmd_router_fit_layers(args: argparse.Namespace) -> int:
    """`cola router fit-layers`: Dr.LLM's per-layer routers from drllm search runs, scored on dev runs."""
    from ..policies.layer_router import Recipe, fit_from_runs, save_routers

    recipe = Recipe(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
                    gamma=args.gamma, beta=args.beta, batch=args.batch, seed=args.seed)
    routers, config = fit_from_runs(args.runs, args.dev_runs, recipe, args.data_dir, not args.quiet,
                                    args.same_samples_as or ())
    save_routers(routers, args.out, config)
    for part in ("train", "dev"):
        c, s = config[part], config[f"{part}_scores"]
        used = f", {c['used']} of them also kept by {', '.join(args.same_samples_as)} and used" if "used" in c else ""
        print(f"{part}: {c['kept']} samples kept ({c['improved']} improved: wrong at full depth, right on a path), "
              f"{c['dropped']} dropped (no right path){used}; per-layer accuracy {s['per_layer_accuracy']:.3f}, "
              f"macro-F1 {s['macro_f1']:.3f}")
    m = config["dev_scores_majority"]
    print(f"dev, always each layer's most common train label: per-layer accuracy {m['per_layer_accuracy']:.3f}, "
          f"macro-F1 {m['macro_f1']:.3f}")
    print(f"routers: {args.out} ({routers.depth} layers, trained {args.epochs} epochs; routed on dev: "
          f"{config['dev_mean_layers']:.2f} layers per input)")
    print(f"evaluate them: cola eval --policy layer-router --router {args.out} --task {config['task'].split('+')[0]} "
          "--split test "
          f"--mode {config['mode']} --dtype {config['dtype']} --out layer-router-test.jsonl")
    return 0


@_locked
def cmd_router_layer_control(args: argparse.Namespace) -> int:
    """`cola router layer-control`: a per-layer routers folder that reads nothing (random at the trained routers'
    dev rates, or execute everywhere), to evaluate beside them."""
    from ..policies.layer_router import random_control

    config = random_control(args.routers, args.out, execute=args.kind == "execute", seed=args.seed)
    rates = config["rates"]
    skip, repeat = (sum(r[c] for r in rates) / len(rates) for c in (0, 2))
    print(f"{args.kind} control of {args.routers}: {args.out} (per layer on average: skip {skip:.3f}, repeat "
          f"{repeat:.3f})")
    return 0


@_locked
def cmd_router_fit_program(args: argparse.Namespace) -> int:
    """`cola router fit-program`: PoLar's program predictor from the right programs of search runs."""
    from ..policies.program_fit import fit_from_runs, fit_kept
    from ..policies.recipes import ProgramRecipe

    recipe = ProgramRecipe(epochs=args.epochs, batch=args.batch, lr=args.lr, warmup=args.warmup,
                           max_paths=args.max_paths, full_weight=args.full_weight, val_share=args.val_share,
                           seed=args.seed)
    args.kept = lambda: fit_kept(args.out, recipe.epochs)
    router, config = fit_from_runs(args.runs, args.encoder, recipe, args.data_dir, args.device, args.dtype,
                                   not args.quiet, args.out)
    router.save(args.out)
    c = config["counts"]
    print(f"supervision: {c.get('kept_samples', 0)} samples kept ({c['train_samples']} to train, {c['val_samples']} "
          f"held out to choose the epoch), {c.get('dropped_no_right_program', 0)} dropped with no right program, "
          f"{c.get('dropped_unparsable', 0)} dropped with none a program writes; {c.get('kept_programs', 0)} programs "
          f"kept, {c.get('unparsable_programs', 0)} unparsable (a layer three times, a jump back)")
    best = min(config["history"], key=lambda h: h["val_loss"]) if c["val_samples"] else config["history"][-1]
    print(f"validation loss {config['val_loss']:.4f} (epoch {best['epoch'] + 1} of {recipe.epochs} kept); top "
          f"programs on the held-out samples: {config['val_rates']['mean_length']:.2f} layers on average")
    print(f"predictor: {args.out} (encoder {args.encoder})")
    print(f"evaluate it (pass@1): cola eval --policy program --router {args.out} --task "
          f"{config['task'].split('+')[0]} --split test --mode score --out program-test.jsonl; PoLar's own best-of-5, "
          "an oracle: add --top-k 5")
    return 0


@_locked
def cmd_router_program_control(args: argparse.Namespace) -> int:
    """`cola router program-control`: a program router that reads nothing, to evaluate beside the predictor."""
    from ..policies.program_fit import program_control

    router = program_control(args.router, args.kind, args.with_full, args.seed)
    router.save(args.out)
    what = (f"random programs at {args.router}'s rates" + (", full depth first" if args.with_full else "")
            if args.kind == "random" else f"the fixed menu {'; '.join(router.config['menu'])}")
    print(f"{args.kind} control of {args.router}: {args.out} ({what})")
    return 0


def add_parsers(sub) -> None:
    """The parsers of this module's commands, on ``cola``'s subcommands ``sub``."""
    from ..policies.recipes import ProgramRecipe, Recipe
    from .common import DTYPES
    p = sub.add_parser("router", help="label-free depth adaptation: fit a router on train-split search runs")
    router = p.add_subparsers(dest="router_command", required=True)

    p = router.add_parser("fit", help="a chain library from search runs and a router over it, selected on dev")
    p.add_argument("--runs", nargs="+", required=True, help="per-sample search runs of the train split (one task)")
    p.add_argument("--out", required=True, help="the router folder to write (config.json, predictor.safetensors)")
    p.add_argument("--data-dir", default=None, help="where the runs' data is (default: as recorded in the runs)")
    p.add_argument("--data-file", default=None, help="the runs' JSONL file, for a task read from a user file")
    p.add_argument("--dev-file", default=None, help="dev samples for a task without a dev split (a JSONL file)")
    p.add_argument("--fit-n", type=positive_int, default=None,
                   help="fit on this many train samples: the runs' samples, then more of the same split in the runs' "
                        "seeded order (the library's verdicts on them are computed; default: the runs' samples only)")
    p.add_argument("--dev-n", type=int, default=200, help="dev samples to select on (default 200; 0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dev subset (default 0)")
    p.add_argument("--k", type=positive_int, default=8, help="library size, the full chain included (default 8)")
    p.add_argument("--candidates", type=positive_int, default=24,
                   help="chains found right most often by the searches, asked on every searched sample to choose the "
                        "library from (default 24)")
    p.add_argument("--min-support", type=positive_int, default=3,
                   help="a library chain must be right on at least this many train samples (default 3)")
    p.add_argument("--library", default=None,
                   help="the library itself, chains separated by ';' (instead of the greedy cover of the runs)")
    p.add_argument("--budget", type=positive_float, default=0.85,
                   help="most layers computed per input on dev, as a share of depth (default 0.85)")
    p.add_argument("--features", type=number_list(int), default=[2, 4, 8],
                   help="feature layer counts to choose from on dev (default 2,4,8)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="samples run together (default 16)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.add_argument("--allow-untested", action="store_true", help="as for the other commands")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_router_fit)

    p = router.add_parser("fit-layers", help="Dr.LLM's per-layer routers from `cola search --preset drllm` runs "
                                             "(docs/drllm.md)")
    p.add_argument("--runs", nargs="+", required=True, help="drllm search runs of the train split")
    p.add_argument("--dev-runs", nargs="+", required=True, help="drllm search runs of the dev split (scores only)")
    p.add_argument("--out", required=True, help="the routers folder to write (config.json, routers.safetensors)")
    p.add_argument("--data-dir", default=None, help="where the runs' data is (default: as recorded in the runs)")
    recipe = Recipe()  # Dr.LLM's published recipe: every setting a flag, defaulting to it
    p.add_argument("--epochs", type=positive_int, default=recipe.epochs,
                   help=f"training epochs (default {recipe.epochs})")
    p.add_argument("--lr", type=positive_float, default=recipe.lr, help=f"AdamW learning rate (default {recipe.lr:g})")
    p.add_argument("--weight-decay", type=float, default=recipe.weight_decay,
                   help=f"AdamW weight decay (default {recipe.weight_decay:g})")
    p.add_argument("--warmup", type=float, default=recipe.warmup,
                   help=f"share of steps warming up, then cosine (default {recipe.warmup:g})")
    p.add_argument("--gamma", type=float, default=recipe.gamma, help=f"focal loss gamma (default {recipe.gamma:g})")
    p.add_argument("--beta", type=float, default=recipe.beta,
                   help=f"effective-number class weights beta (default {recipe.beta:g})")
    p.add_argument("--batch", type=positive_int, default=recipe.batch,
                   help=f"samples per step (default {recipe.batch})")
    p.add_argument("--seed", type=int, default=recipe.seed,
                   help=f"seed of the initialisation and the order (default {recipe.seed})")
    p.add_argument("--same-samples-as", nargs="+", default=None, metavar="RUN",
                   help="train only on the samples these drllm runs keep too (the decoy control's, say), so that "
                        "two sets of routers are trained on the same inputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_router_fit_layers)

    p = router.add_parser("layer-control", help="a control for per-layer routers that reads nothing: random at their "
                                                "dev rates, or execute every layer")
    p.add_argument("kind", choices=("random", "execute"),
                   help="random: each layer skipped/executed/repeated at the rates the trained routers chose on dev, "
                        "seeded per input; execute: every layer once (must equal full depth)")
    p.add_argument("--routers", required=True, help="the trained routers folder (`cola router fit-layers`)")
    p.add_argument("--out", required=True, help="the control's folder to write (config.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random decisions (default 0)")
    p.set_defaults(func=cmd_router_layer_control)

    recipe = ProgramRecipe()
    p = router.add_parser("fit-program", help="PoLar's program predictor from the programs search runs found right "
                                              "(docs/polar.md)")
    p.add_argument("--runs", nargs="+", required=True,
                   help="search runs of the train split (`--preset polar`; any run whose right chains parse as "
                        "programs, Dr.LLM's too)")
    p.add_argument("--out", required=True, help="the predictor folder to write (config.json, program.safetensors)")
    p.add_argument("--encoder", default="target",
                   help="the frozen text encoder: target (the model's own final hidden states; the offline default) "
                        "or a hub id or folder (PoLar's: Qwen/Qwen3-Embedding-0.6B)")
    p.add_argument("--data-dir", default=None, help="where the runs' data is (default: as recorded in the runs)")
    p.add_argument("--epochs", type=positive_int, default=recipe.epochs, help=f"(default {recipe.epochs})")
    p.add_argument("--batch", type=positive_int, default=recipe.batch,
                   help=f"examples per step (default {recipe.batch})")
    p.add_argument("--lr", type=positive_float, default=recipe.lr, help=f"AdamW learning rate (default {recipe.lr:g})")
    p.add_argument("--warmup", type=int, default=recipe.warmup,
                   help=f"warm-up steps, then cosine (default {recipe.warmup})")
    p.add_argument("--max-paths", type=positive_int, default=recipe.max_paths,
                   help=f"right programs per sample, drawn beyond that (default {recipe.max_paths})")
    p.add_argument("--full-weight", type=float, default=recipe.full_weight,
                   help=f"the full program's weight where a shorter one is right (default {recipe.full_weight:g})")
    p.add_argument("--val-share", type=float, default=recipe.val_share,
                   help="share of the samples held out of train to choose the epoch on (default 1/6, PoLar's 250 of "
                        "1,500)")
    p.add_argument("--seed", type=int, default=recipe.seed, help=f"(default {recipe.seed})")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.add_argument("--dtype", default=None, choices=DTYPES, help="the model's dtype for the target encoder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_router_fit_program)

    p = router.add_parser("program-control", help="a control of a program predictor that reads nothing: random "
                                                  "programs at its rates, or a fixed menu")
    p.add_argument("kind", choices=("random", "menu"),
                   help="random: programs drawn at the rates of the predictor's top programs on its held-out train "
                        "samples, seeded per input; menu: the programs right on the most training samples")
    p.add_argument("--router", required=True, help="the trained predictor's folder (`cola router fit-program`)")
    p.add_argument("--out", required=True, help="the control's folder to write (config.json)")
    p.add_argument("--with-full", action="store_true",
                   help="random: full depth first, then random programs (the chance control of a best-of-k)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random programs (default 0)")
    p.set_defaults(func=cmd_router_program_control)
