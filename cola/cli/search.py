"""`cola search` (per-sample MCTS, the static search and the controls) and `cola prune`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..storage import check_out_file
from .common import (
    add_model_args,
    add_task_args,
    eval_config,
    positive_float,
    positive_int,
    resolve_mode,
    selection,
)


def cmd_search(args: argparse.Namespace) -> int:
    from ..search.launch import check_launch, default_folder, run_job
    from ..search.presets import search_settings
    from ..search.run import SearchJob
    from ..storage import FolderLock
    from ..tasks import with_control

    resolve_mode(args)
    chosen = selection(args)
    samples, task = with_control(chosen.load(), args.control), chosen.get_task()
    distributed = args.workers is not None or args.ray_address is not None
    check_launch(task, args.control, args.menu, args.static, distributed)
    space, mcts = search_settings(args.preset, actions=args.actions, max_k=args.max_k, max_r=args.max_r,
                                  min_len=args.min_len, max_len=args.max_len, sims=args.sims, lam=args.lam, c=args.c,
                                  epsilon=args.epsilon, widening=args.widening, stop_on_fix=args.stop_on_fix,
                                  stop_shorter_by=args.stop_shorter_by)
    args.sims, args.actions = mcts.sims, space["actions"]
    job = SearchJob(
        model=args.model, task=args.task, eval_config=eval_config(args), device=args.device, dtype=args.dtype, **space,
        allow_untested=args.allow_untested, mcts=mcts, seed=args.seed, reward=args.reward, control=args.control,
        menu=_menu(args), level=args.level, split=chosen.split_name,
        data=chosen.source, batch=args.batch, prefix_bytes=int(args.prefix_gib * (1 << 30)),
        lm_eval_include=args.lm_eval_include)
    if distributed:
        from ..search.distributed import require_ray

        require_ray()  # before a run folder is made
    out = args.out or default_folder(job, len(samples), static=args.static)

    def kept() -> str:
        from ..storage import read_records

        done = len(read_records(out)) if (Path(out) / "config.json").exists() else 0
        what = "chain evaluations" if args.static else f"of {len(samples)} samples"
        return f"{done} {what} recorded in {out}; run the same command again to resume"

    args.kept = kept
    with FolderLock(out) as lock:  # a second writer stops here, before the model loads
        if args.static:
            return _static_search(args, job, samples, out, lock)
        result = run_job(job, samples, out, args.workers, args.ray_address, args.gpus_per_worker,
                         progress=not args.quiet, lock=lock)
    if not result.records:
        print(f"run: {out}: no sample finished", file=sys.stderr)
    else:
        _print_search(args, out, result.records, result.depth)
    for sample_id, error in result.failures:
        print(f"cola: error: sample {sample_id!r} failed: {error}", file=sys.stderr)
    if result.failures:
        print(f"cola: error: {len(result.failures)} sample(s) failed and are not recorded; fix them and re-run the "
              "same command to search them (the others are kept)", file=sys.stderr)
        return 1
    return 0


def _menu(args: argparse.Namespace) -> dict | None:
    """The chains of ``--menu RUN_DIR``, checked to come from a per-sample search of the same model, before the
    model loads."""
    if args.menu is None:
        return None
    from ..search.menu import load_menu

    return load_menu(args.menu, args.model)


def _static_search(args: argparse.Namespace, job, samples: list, out: str, lock) -> int:
    """`cola search --static`: one chain for all ``samples`` (a dev subset), reward its accuracy on them."""
    from ..search.static import best_static, run_static

    records = run_static(job, samples, out, progress=not args.quiet, lock=lock)
    full, best = records[0], best_static(records)
    print(f"run: {out} (one chain for {len(samples)} samples, {len(records)} chain evaluations)")
    print(f"full depth:        accuracy {full['accuracy']:.4f} ({full['k']}/{full['n']}), {full['length']} layers")
    print(f"best static chain: accuracy {best['accuracy']:.4f} ({best['k']}/{best['n']}), {best['length']} layers: "
          f"{best['chain']}")
    print(f"selected on these samples; report it on held-out ones: cola eval --task {args.task} --split test "
          f"--chain {best['chain']} --mode {args.mode}")
    return 0


def _print_search(args: argparse.Namespace, out: str, records: list[dict], depth: int) -> None:
    """The run's headline: original and oracle accuracy (said to be an oracle), chain length, the chance control."""
    from ..search.records import headline

    h = headline(records)
    n = h["n"]
    print(f"run: {out} ({n} samples, {args.sims} simulations each, actions {args.actions})")
    if args.control == "decoy":
        print("control: decoy golds; the accuracies below count answers equal to the decoy")
    if args.control == "sample":
        print(f"control: no search; the full model tried {args.sims} times per sample (best of N sampling)")
    if args.control == "menu":
        print(f"control: no search; every sample tries the same menu of chains from {args.menu} (leave-one-out)")
    print(f"original accuracy: {h['original'] / n:.4f} ({h['original']}/{n})")
    tries = "answers of the full model" if args.control == "sample" else "chains"
    print(f"oracle accuracy (best of up to {args.sims + 1} {tries}, chosen with the gold answer): "
          f"{h['oracle'] / n:.4f} ({h['oracle']}/{n})")
    print(f"mean best-chain length: {h['mean_best_length']:.2f} layers (model depth {depth})")
    if args.control == "none":
        print("chance control: the oracle counts any chain that happens to answer right; run the same command with "
              "--control decoy to see how often the search reaches a wrong answer set as gold (`cola report` compares "
              "both)")
    print(f"the study's tables: cola report {out} --out report/")


def cmd_prune(args: argparse.Namespace) -> int:
    from ..search.prune import least_influential, prune

    if args.out:
        check_out_file(args.out)  # before the model loads
    resolve_mode(args)
    chosen = selection(args)
    cm, influence, chains = prune(args.model, chosen, eval_config(args), args.out, args.device, args.dtype,
                                  args.allow_untested, progress=not args.quiet)
    split = args.data_file or chosen.split_name
    print(f"block influence of {cm.name} ({cm.depth} layers) on {len(chosen.load())} {args.task} prompts ({split}, "
          f"{args.mode} mode), least influential first:")
    for rank, layer in enumerate(least_influential(influence), 1):
        print(f"{rank:4d}. layer {layer:3d}  BI {influence[layer]:.5f}")
    print("chains without the m least influential layers:")
    for m, chain in chains.items():
        print(f"  m={m:<3d} {len(chain):3d} layers  {chain}")
    return 0


def add_parsers(sub) -> None:
    """The parsers of this module's commands, on ``cola``'s subcommands ``sub``."""
    from ..search import ACTION_SETS
    from ..search.presets import PRESETS
    from ..search.presets import CONTROLS, REWARDS
    p = sub.add_parser("search", help="per-sample MCTS over chains of layers, stored and resumable")
    add_model_args(p)
    add_task_args(p)
    p.add_argument("--preset", default="study", choices=tuple(PRESETS),
                   help="the search protocol: study (Li et al.: the defaults below), drllm (Dr.LLM's supervision: "
                        "layers in order each 0-2 times, skip blocks <= 2, repeat one layer once, 50 simulations, "
                        "lambda 3, c 1.8, early stops) or polar (PoLar's supervision: drop or double one position, "
                        "blocks of 2-4 at the root, each layer at most twice, its length bounds, 100 simulations, no "
                        "early stop); any option below overrides its value")
    p.add_argument("--sims", type=positive_int, default=None, help="chains evaluated per sample (default 200)")
    p.add_argument("--actions", default=None, choices=ACTION_SETS,
                   help="all (CoLa), skip only, repeat only; drllm (Dr.LLM's paths); polar (PoLar's edits and tree) "
                        "(default all)")
    p.add_argument("--lambda", dest="lam", type=float, default=None, help="length penalty on len(chain)/depth (default 5)")
    p.add_argument("--c", type=float, default=None, help="UCB exploration constant (default sqrt 2)")
    p.add_argument("--epsilon", type=float, default=None, help="chance of a random unexplored child (default 0.1)")
    p.add_argument("--widening", type=float, default=None, help="progressive widening exponent (default 0.5)")
    p.add_argument("--max-k", type=positive_int, default=None, help="largest block an action skips or repeats (default 4)")
    p.add_argument("--max-r", type=positive_int, default=None, help="most extra repeats of a block (default 4)")
    p.add_argument("--min-len", type=int, default=None, help="shortest chain (default depth/2; polar: its bounds)")
    p.add_argument("--max-len", type=int, default=None, help="longest chain (default 2*depth; polar: its bounds)")
    p.add_argument("--stop-on-fix", action=argparse.BooleanOptionalAction, default=None,
                   help="end a sample's search at its first right chain when the full model is wrong (drllm: on)")
    p.add_argument("--stop-shorter-by", type=int, default=None,
                   help="end a search at the first right chain at least this many layers shorter than depth (0: "
                        "never; drllm: 2)")
    p.add_argument("--reward", default="correct", choices=REWARDS, help="correct (0/1), or margin (score mode)")
    p.add_argument("--control", default="none", choices=CONTROLS,
                   help="decoy: replace each gold by a deterministic wrong answer (chance control); sample: no search, "
                        "the full model tried --sims times per sample (generate: sampled at temperature 1; score: "
                        "options drawn from its option distribution)")
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL-TASK-MODE-ACTIONS[-decoy]-nN-sSEED)")
    p.add_argument("--batch", type=positive_int, default=1,
                   help="search this many samples at once; their chains run together in the same layer calls, "
                        "faster, and bitwise the same on a CPU with a dense model (default 1: one at a time)")
    p.add_argument("--prefix-gib", type=positive_float, default=4.0,
                   help="memory for the prefix caches (hidden states and KV entries of chain prefixes already run) of "
                        "the searches in flight, shared among them; least recently used entries are dropped beyond it "
                        "(default 4)")
    p.add_argument("--menu", default=None,
                   help="with --control menu: the per-sample search run whose chains, ranked by the samples they got "
                        "right (leaving the sample itself out), every sample tries")
    p.add_argument("--static", action="store_true",
                   help="one chain for all the samples (use a dev split), the reward its accuracy on them; every chain "
                        "evaluated is recorded, and a re-run resumes")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="search on this many Ray workers (a local cluster unless --ray-address), each loading the "
                        "model once and taking the next sample when free; needs `pip install -e .[ray]`")
    p.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (`auto`: the one Ray finds) instead of starting a local one; "
                        "--workers defaults to its GPUs / --gpus-per-worker, else 1")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs each Ray worker holds (default: 1 where the cluster has GPUs, else 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("prune", help="block influence of every layer on calibration prompts, and the pruned chains")
    add_model_args(p)
    add_task_args(p)
    p.add_argument("--out", default=None, help="write the influences and chains to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prune)
