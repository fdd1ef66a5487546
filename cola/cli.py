"""The ``cola`` command line: ``generate``, ``layers``, ``tasks``, ``eval``, ``search`` and ``report``.

Each command imports what it needs when it runs, so ``cola --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import sys

from .chain import as_chain
from .models import DEFAULT_MODEL, ModelLoadError, load_model


DTYPES = ("float32", "bfloat16", "float16")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"alias, .gguf file, folder or hub id (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="weights and activations (default: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--allow-untested", action="store_true",
                        help="load a model family CoLa is not tested on (refused otherwise); it must still pass the "
                             "exactness check against the model's own forward")


def cmd_generate(args: argparse.Namespace) -> int:
    from .generation import generate_text

    cm = load_model(args.model, device=args.device, dtype=args.dtype, allow_untested=args.allow_untested)
    chain = as_chain(args.chain, cm.depth)
    out = generate_text(cm, chain, [args.prompt], chat=args.chat, max_new_tokens=args.max_new_tokens)[0]
    if args.json:
        print(json.dumps({"chain": str(chain), "tokens": out.tokens, "text": out.text}))
    else:
        print(out.text)
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    cm = load_model(args.model, device=args.device, dtype=args.dtype, allow_untested=args.allow_untested)
    print(f"model: {cm.name} ({cm.config.model_type}), depth: {cm.depth}")
    for i, layer_type in enumerate(cm.layer_types):
        experts = cm.experts(i)
        print(f"{i:4d}  {layer_type:18s} {f'mixture of {experts} experts' if experts else 'dense'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_chain

    cm = load_model(args.model, device="cpu", dtype=args.dtype, allow_untested=args.allow_untested)
    chain = as_chain(args.chain, cm.depth)
    out = export_chain(cm, chain, args.out)
    print(f"exported {cm.name} chain {chain} ({len(chain)} layers) to {out}")
    return 0


def _add_task_args(parser: argparse.ArgumentParser) -> None:
    from .evaluate import MODES, SCORE_STYLES

    parser.add_argument("--task", required=True, help="task name (see `cola tasks`)")
    parser.add_argument("--data-dir", default=None, help="folder in the layout of shared/data (default: the HF hub)")
    parser.add_argument("--data-file", default=None, help="a JSONL file of the task's shape (mc_jsonl, qa_jsonl)")
    parser.add_argument("--split", default=None, choices=("train", "dev", "test"),
                        help="split of a benchmark task (default: test; CSQA: dev): fit on train, select on dev, "
                             "report on test")
    parser.add_argument("--n", type=int, default=None, help="seeded random subset size (default 500; 50 for synthetic; 0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset (default 0)")
    parser.add_argument("--level", type=int, default=None, choices=range(1, 6), help="MATH difficulty level")
    parser.add_argument("--mode", default="generate", choices=MODES, help="generate, or score (multiple choice)")
    parser.add_argument("--score-style", default="lmeval", choices=SCORE_STYLES, help="context format in score mode")
    parser.add_argument("--no-chat", dest="chat", action="store_false", help="do not use the chat template")
    parser.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows (counted) instead of failing")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None, help="generation budget (default: the task's)")


def _samples(args: argparse.Namespace) -> list:
    """The task's samples the command asks for: loaded and checked before any model is."""
    from .tasks import get_task, load_samples

    task = get_task(args.task)
    return load_samples(task, args.data_dir, args.data_file, args.n, args.seed, args.level, args.skip_bad_rows,
                        args.split)


def _evaluator_and_samples(args: argparse.Namespace):
    from .evaluate import Evaluator
    from .tasks import get_task

    samples = _samples(args)
    cm = load_model(args.model, device=args.device, dtype=args.dtype, allow_untested=args.allow_untested)
    evaluator = Evaluator(cm, get_task(args.task), args.mode, args.chat, args.score_style, args.max_new_tokens)
    return evaluator, samples


def cmd_eval(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .models import weights_hash
    from .stats import wilson_interval
    from .store import eval_summary_path, write_eval
    from .tasks import get_task

    if args.out:
        eval_summary_path(args.out)  # a bad name fails before the model loads
    if args.router is not None and args.chain != "full":
        raise ValueError("--router picks each input's chain; it does not take --chain")
    evaluator, samples = _evaluator_and_samples(args)
    cm, task = evaluator.cm, get_task(args.task)
    batch = args.batch_size or (16 if args.router or args.mode == "generate" else 1)
    summary = {"model": cm.name, "weights": weights_hash(cm), "dtype": str(cm.dtype).removeprefix("torch."),
               "depth": cm.depth, "task": args.task, "mode": args.mode, "chat": args.chat,
               "score_style": args.score_style, "data": args.data_file or args.data_dir, "level": args.level,
               "split": None if args.data_file or not task.splits else task.split(args.split),
               "seed": args.seed, "n": len(samples), "batch": batch}
    start = time.perf_counter()
    if args.router is not None:
        summary, rows = _eval_router(args, evaluator, samples, batch, summary)
    else:
        chain = as_chain(args.chain, cm.depth)
        with tqdm(total=len(samples), desc=f"{args.task} [{chain}]", unit="sample") as bar:
            outcomes = evaluator.evaluate_many(chain, samples, batch, progress=lambda done: bar.update(len(done)))
        rows = [o.to_dict() for o in outcomes]
        summary.update(kind="chain", chain=str(chain), name=args.name or ("full" if chain.is_full(cm.depth) else str(chain)),
                       mean_length=len(chain), mean_layers=len(chain))
    summary["wall_s"] = round(time.perf_counter() - start, 3)
    n = len(rows)
    metrics = [("acc", "correct")] + ([("acc_norm", "correct_norm")] if args.mode == "score" else [])
    for name, field in metrics:
        k = sum(bool(r[field]) for r in rows)
        lo, hi = wilson_interval(k, n)
        summary[name] = {"k": k, "accuracy": k / n, "ci": [lo, hi]}
        print(f"{args.task} {name}: {k / n:.4f} ({k}/{n}), 95% CI [{lo:.4f}, {hi:.4f}]  "
              f"{'router ' + args.router if args.router else 'chain ' + summary['chain']}")
    summary["accuracy"], summary["k"] = summary["acc"]["accuracy"], summary["acc"]["k"]
    if args.out:
        print(f"per-sample answers: {args.out}; summary: {write_eval(args.out, rows, summary)}")
    return 0


def _eval_router(args: argparse.Namespace, evaluator, samples: list, batch: int, summary: dict):
    """`cola eval --router`: each sample through its routed chain, then full depth and a random pick from the same
    library with the router's pick frequencies on the same samples, compared pairwise (McNemar)."""
    import random
    import time
    from collections import Counter
    from pathlib import Path

    from tqdm import tqdm

    from .analysis import paired
    from .chain import Chain
    from .router import Router, routed_outcomes
    from .stats import wilson_interval
    from .tasks import get_task

    cm = evaluator.cm
    router = Router.load(args.router, cm)
    if router.config["mode"] != args.mode or router.config["score_style"] != args.score_style \
            or router.config["chat"] != args.chat:
        raise ValueError(f"{args.router} was fitted in {router.config['mode']} mode (score style "
                         f"{router.config['score_style']}, chat {router.config['chat']}): its features are of those "
                         "prompts; evaluate it the same way (--mode, --score-style, --no-chat)")
    fitted = router.config
    seen = set(fitted.get("train_ids", [])) | set(fitted.get("dev_ids", []))

    def same_file(a, b) -> bool:
        return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()

    if fitted.get("task") == args.task and (get_task(args.task).splits or same_file(fitted.get("data"), summary["data"])
                                            or same_file(fitted.get("dev_split"), summary["data"])):
        seen_here = [s.id for s in samples if s.id in seen]
    else:
        seen_here = []
    if seen_here:
        print(f"cola: warning: {len(seen_here)} of these samples were used to fit or select {args.router} (first: "
              f"{seen_here[:3]}); its numbers here are not held-out", file=sys.stderr)
    start = time.perf_counter()
    with tqdm(total=len(samples), desc=f"{args.task} [router]", unit="sample") as bar:
        routed = routed_outcomes(router, evaluator, samples, batch, bar.update)
    routed_s = time.perf_counter() - start
    full = Chain.full(cm.depth)
    start = time.perf_counter()
    with tqdm(total=len(samples), desc=f"{args.task} [full]", unit="sample") as bar:
        full_outcomes = evaluator.evaluate_many(full, samples, batch, progress=lambda done: bar.update(len(done)))
    full_s = time.perf_counter() - start
    picks = Counter(str(chain) for chain, _, _ in routed)
    rng = random.Random(f"{args.seed}:random-pick")
    drawn = rng.choices(sorted(picks), weights=[picks[c] for c in sorted(picks)], k=len(samples))
    with tqdm(total=len(samples), desc=f"{args.task} [random pick]", unit="sample") as bar:
        random_outcomes = evaluator.evaluate_assigned([Chain.parse(c) for c in drawn], samples, batch,
                                                      progress=lambda done: bar.update(len(done)))
    rows = [{**outcome.to_dict(), "layers": layers, "full_correct": f.correct, "random_chain": drawn[i],
             "random_correct": random_outcomes[i].correct}
            for i, ((chain, layers, outcome), f) in enumerate(zip(routed, full_outcomes))]
    n = len(rows)
    mean_length = sum(len(chain) for chain, _, _ in routed) / n
    mean_layers = sum(layers for _, layers, _ in routed) / n
    k = sum(r["correct"] for r in rows)

    def versus(field: str) -> dict:
        p = paired({r["id"]: bool(r["correct"]) for r in rows}, {r["id"]: bool(r[field]) for r in rows})
        return {"k": p["b_right"], "accuracy": p["b_right"] / n, "ci": list(wilson_interval(p["b_right"], n)),
                "router_only": p["a_only"], "other_only": p["b_only"], "mcnemar_p": p["mcnemar_p"]}

    baselines = {"full": {**versus("full_correct"), "mean_length": cm.depth, "wall_s": round(full_s, 3)},
                 "random_pick": {**versus("random_correct"),
                                 "mean_length": sum(len(Chain.parse(c)) for c in drawn) / n}}
    summary.update(kind="router", router=str(args.router), name=args.name or f"router {args.router}",
                   library=[str(c) for c in router.library], setting=router.setting.__dict__,
                   fitted_on={key: router.config.get(key) for key in ("task", "split", "data", "control", "runs")},
                   seen_in_fit=len(seen_here),
                   mean_length=mean_length, mean_layers=mean_layers, routed_s=round(routed_s, 3),
                   picks=dict(picks.most_common()), full_share=picks.get(str(full), 0) / n, baselines=baselines)
    lo, hi = wilson_interval(k, n)
    print(f"router {args.router}: {len(router.library)} chains, features after {router.setting.features} layers "
          f"(fitted on {router.config.get('task')} {router.config.get('split')}, control "
          f"{router.config.get('control')})")
    print(f"  routed:      accuracy {k / n:.4f} ({k}/{n}) [{lo:.4f}, {hi:.4f}], mean chain length {mean_length:.2f}, "
          f"mean layers computed {mean_layers:.2f} ({mean_layers / cm.depth:.3f} x depth, feature layers included), "
          f"{routed_s:.1f} s")
    for name, b in baselines.items():
        print(f"  {name + ':':12s} accuracy {b['accuracy']:.4f} ({b['k']}/{n}) [{b['ci'][0]:.4f}, {b['ci'][1]:.4f}], "
              f"mean chain length {b['mean_length']:.2f}; router right only {b['router_only']}, {name} right only "
              f"{b['other_only']}: McNemar exact p = {b['mcnemar_p']:.4g}")
    print(f"  routed to the full chain: {summary['full_share']:.1%} of inputs; picks: "
          + ", ".join(f"{c} ({count})" for c, count in picks.most_common()))
    return summary, rows


def cmd_search(args: argparse.Namespace) -> int:
    import math

    from .search import MCTSConfig
    from .search.run import SearchJob, run_search
    from .store import RunStore
    from .tasks import decoy, get_task

    samples = _samples(args)
    if args.control == "decoy":
        samples = [decoy(s) for s in samples]
    if (args.control == "menu") != (args.menu is not None):
        raise ValueError("--control menu needs --menu RUN_DIR (a per-sample search run to take the chains from), "
                         "and --menu goes with --control menu")
    job = SearchJob(
        model=args.model, task=args.task, mode=args.mode, chat=args.chat, score_style=args.score_style,
        max_new_tokens=args.max_new_tokens, device=args.device, dtype=args.dtype, actions=args.actions,
        max_k=args.max_k, max_r=args.max_r, min_len=args.min_len, max_len=args.max_len,
        allow_untested=args.allow_untested,
        mcts=MCTSConfig(args.sims, args.lam, args.c if args.c is not None else math.sqrt(2), args.epsilon,
                        args.widening),
        seed=args.seed, reward=args.reward, control=args.control, menu=_menu(args), level=args.level,
        split=None if args.data_file or not get_task(args.task).splits else get_task(args.task).split(args.split),
        data=args.data_file or args.data_dir, batch=args.batch, prefix_bytes=int(args.prefix_gib * (1 << 30)))
    control = f"-{args.control}" if args.control != "none" else "-static" if args.static else ""
    split = f"-{job.split}" if job.split not in (None, get_task(args.task).default_split) else ""
    out = args.out or (f"runs/{args.model.replace('/', '_')}-{args.task}{split}-{args.mode}-{args.actions}{control}"
                       f"-n{len(samples)}-s{args.seed}")
    if args.static:
        return _static_search(args, job, samples, out)
    failures: list[tuple[str, str]] = []
    if args.workers is not None or args.ray_address is not None:
        from .distributed import run_search_ray

        records, failures, depth = run_search_ray(job, samples, out, args.workers, args.ray_address,
                                                  args.gpus_per_worker, progress=not args.quiet)
    else:
        evaluator = job.evaluator()
        store = RunStore(out, job.run_config(evaluator, samples))
        records, depth = run_search(job, evaluator, samples, store, progress=not args.quiet), evaluator.cm.depth
    if not records:
        print(f"run: {out}: no sample finished", file=sys.stderr)
    else:
        _search_summary(args, out, records, depth)
    for sample_id, error in failures:
        print(f"cola: error: sample {sample_id!r} failed: {error}", file=sys.stderr)
    if failures:
        print(f"cola: error: {len(failures)} sample(s) failed and are not recorded; fix them and re-run the same "
              "command to search them (the others are kept)", file=sys.stderr)
        return 1
    return 0


def _menu(args: argparse.Namespace) -> dict | None:
    """The chains of ``--menu RUN_DIR``, checked to come from a per-sample search of the same model, before the
    model loads."""
    if args.menu is None:
        return None
    from .search.menu import load_menu

    return load_menu(args.menu, args.model)


def _static_search(args: argparse.Namespace, job, samples: list, out: str) -> int:
    """`cola search --static`: one chain for all ``samples`` (a dev subset), reward its accuracy on them."""
    from .reuse import PrefixCache
    from .search.static import best_static, static_search
    from .store import RunStore

    if args.workers is not None or args.ray_address is not None:
        raise ValueError("--static searches one chain over all samples in one process; it does not take --workers")
    if args.control != "none":
        raise ValueError("--static takes no --control: its reward is an accuracy, not one sample's verdict")
    evaluator = job.evaluator()
    store = RunStore(out, job.run_config(evaluator, samples, static=True))
    prefixes = [PrefixCache(job.prefix_bytes // len(samples)) for _ in samples]

    def verdicts(chain):
        return [o.correct for o in evaluator.evaluate(chain, samples, prefixes)]

    records = static_search(verdicts, len(samples), job.space(evaluator.cm.depth), job.mcts, job.seed, store,
                            progress=not args.quiet)
    full, best = records[0], best_static(records)
    print(f"run: {out} (one chain for {len(samples)} samples, {len(records)} chain evaluations)")
    print(f"full depth:        accuracy {full['accuracy']:.4f} ({full['k']}/{full['n']}), {full['length']} layers")
    print(f"best static chain: accuracy {best['accuracy']:.4f} ({best['k']}/{best['n']}), {best['length']} layers: "
          f"{best['chain']}")
    print(f"selected on these samples; report it on held-out ones: cola eval --task {args.task} --split test "
          f"--chain {best['chain']} --mode {args.mode}")
    return 0


def _search_summary(args: argparse.Namespace, out: str, records: list[dict], depth: int) -> None:
    """The run's headline: original and oracle accuracy (said to be an oracle), chain length, the chance control."""
    n = len(records)
    original = sum(r["full"]["correct"] for r in records)
    oracle = sum(r["best"]["correct"] for r in records)
    mean_len = sum(r["best"]["length"] for r in records) / n
    print(f"run: {out} ({n} samples, {args.sims} simulations each, actions {args.actions})")
    if args.control == "decoy":
        print("control: decoy golds; the accuracies below count answers equal to the decoy")
    if args.control == "sample":
        print(f"control: no search; the full model tried {args.sims} times per sample (best of N sampling)")
    if args.control == "menu":
        print(f"control: no search; every sample tries the same menu of chains from {args.menu} (leave-one-out)")
    print(f"original accuracy: {original / n:.4f} ({original}/{n})")
    tries = "answers of the full model" if args.control == "sample" else "chains"
    print(f"oracle accuracy (best of up to {args.sims + 1} {tries}, chosen with the gold answer): "
          f"{oracle / n:.4f} ({oracle}/{n})")
    print(f"mean best-chain length: {mean_len:.2f} layers (model depth {depth})")
    if args.control == "none":
        print("chance control: the oracle counts any chain that happens to answer right; run the same command with "
              "--control decoy to see how often the search reaches a wrong answer set as gold (`cola report` compares "
              "both)")


def cmd_prune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .prune import block_influence, pruned_chains
    from .tasks import get_task

    evaluator, samples = _evaluator_and_samples(args)
    cm = evaluator.cm

    def prompts():
        for sample in tqdm(samples, desc="calibration prompts", unit="prompt", disable=args.quiet):
            yield evaluator.prompt_ids(sample)

    influence = block_influence(cm, prompts())
    chains = pruned_chains(influence, cm.depth // 4)
    split = args.data_file if args.data_file else (args.split or get_task(args.task).default_split)
    print(f"block influence of {cm.name} ({cm.depth} layers) on {len(samples)} {args.task} prompts ({split}, "
          f"{args.mode} mode), least influential first:")
    for rank, layer in enumerate(sorted(range(cm.depth), key=lambda i: (influence[i], -i)), 1):
        print(f"{rank:4d}. layer {layer:3d}  BI {influence[layer]:.5f}")
    print("chains without the m least influential layers:")
    for m, chain in chains.items():
        print(f"  m={m:<3d} {len(chain):3d} layers  {chain}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"model": cm.name, "task": args.task, "split": split, "mode": args.mode, "n": len(samples),
                       "seed": args.seed, "block_influence": influence,
                       "chains": {str(m): str(c) for m, c in chains.items()}}, f, indent=2)
    return 0


def cmd_router_fit(args: argparse.Namespace) -> int:
    """`cola router fit`: a chain library from train-split search runs, a router fitted on their samples and
    selected on dev samples, written as a folder."""
    from .chain import Chain
    from .evaluate import Evaluator
    from .router import candidates, chain_library, fit_router, library_verdicts
    from .search.run import run_samples
    from .store import read_config, read_records
    from .tasks import DataError, decoy, get_task, load_samples

    configs = [read_config(folder) for folder in args.runs]
    for folder, config in zip(args.runs, configs):
        if config.get("static") or "mcts" not in config:
            raise ValueError(f"{folder} is not a per-sample search run; a router is fitted on those")
        if config.get("split") in ("dev", "test"):
            raise ValueError(f"{folder} searched the {config['split']} split: fit a router on train runs (select on "
                             "dev, report on test)")
    keys = ("model", "weights", "dtype", "depth", "task", "mode", "chat", "score_style", "control")
    for folder, config in zip(args.runs[1:], configs[1:]):
        differ = [k for k in keys if config.get(k) != configs[0].get(k)]
        if differ:
            raise ValueError(f"{folder} differs from {args.runs[0]} in {', '.join(differ)}: fit one router per "
                             "model, task and prompt format")
    first = configs[0]
    per_run = [read_records(folder) for folder in args.runs]
    records = [r for run in per_run for r in run]
    if not records:
        raise ValueError(f"no finished records in {', '.join(args.runs)}")
    searched, seen = [], set()  # the samples with a finished search, each once
    for run, config in zip(per_run, configs):
        done = {r["id"] for r in run}
        for sample in run_samples(config, args.data_dir or args.data_file):
            if sample.id in done and sample.id not in seen:
                seen.add(sample.id)
                searched.append(sample)
    train = list(searched)
    task = get_task(first["task"])
    if args.fit_n is not None and len(train) < args.fit_n:  # more samples of the runs' data, never searched
        more = [s for s in load_samples(task, None if args.data_file else args.data_dir or first.get("data"),
                                        args.data_file, 0, first["seed"], first.get("level"),
                                        split=None if args.data_file else first.get("split"))
                if s.id not in seen][: args.fit_n - len(train)]
        train += [decoy(s) for s in more] if first.get("control") == "decoy" else more
    if args.dev_file is None and "dev" not in task.splits:
        raise DataError(f"task {task.name!r} has no dev split: pass --dev-file FILE.jsonl (held-out samples of its "
                        "shape) to select the router on")
    dev = load_samples(task, None if args.dev_file else args.data_dir or first.get("data"), args.dev_file,
                       args.dev_n, args.seed, first.get("level"), split=None if args.dev_file else "dev")
    if first.get("control") == "decoy":
        dev = [decoy(s) for s in dev]
    cm = load_model(first["model"], device=args.device, dtype=first["dtype"], allow_untested=args.allow_untested)
    if cm.depth != first["depth"]:
        raise ValueError(f"{first['model']} has {cm.depth} layers here; the runs were made with {first['depth']}")
    evaluator = Evaluator(cm, task, first["mode"], first["chat"], first["score_style"], first.get("max_new_tokens"))
    full, known = Chain.full(cm.depth), None
    if args.library:
        library = [as_chain(c, cm.depth) for c in args.library.split(";")]
    else:  # the candidates asked on every searched sample, then covered greedily
        pool = [full] + candidates(records, cm.depth, args.candidates)
        verdicts = library_verdicts(evaluator, pool, searched, args.batch_size)
        right = {c: {s.id for s, v in zip(searched, verdicts[:, k].tolist()) if v} for k, c in enumerate(pool)}
        library = chain_library(right, cm.depth, args.k, args.min_support)
        print(f"library: {len(pool) - 1} candidate chains asked on the {len(searched)} searched samples; "
              f"{sum(len(ids) >= args.min_support for c, ids in right.items() if c != full)} are right on at least "
              f"{args.min_support}; the greedy cover keeps {len(library) - 1} besides the full chain")
    library = [full] + [c for c in dict.fromkeys(library) if c != full]
    if not args.library:  # the searched samples open the train set: their verdicts are known from the candidates
        known = verdicts[:, [pool.index(c) for c in library]]
    config = {key: first.get(key) for key in keys + ("split", "data", "max_new_tokens")}
    config.update(runs=[str(f) for f in args.runs], library_from="--library" if args.library else "greedy cover",
                  min_support=args.min_support, dev_split=args.dev_file or "dev", dev_seed=args.seed)
    router, summary = fit_router(evaluator, library, train, dev, args.budget,
                                 [int(f) for f in args.features.split(",")], args.batch_size, config,
                                 progress=not args.quiet, known=known)
    router.save(args.out)
    chosen = summary["dev"]
    print(f"router: {args.out} ({len(library)} chains, fitted on {len(train)} train samples of {len(args.runs)} "
          f"run(s), selected on {len(dev)} dev samples)")
    print("library (train / dev accuracy, each chain for every sample):")
    for c in summary["chains"]:
        print(f"  {c['length']:3d} layers  train {c['train_accuracy']:.3f}  dev {c['dev_accuracy']:.3f}  {c['chain']}")
    s = router.setting
    print(f"chosen on dev: features after {s.features} layers, C {s.c}, class weight {s.weight}, mu {s.mu}: dev "
          f"accuracy {chosen['dev_accuracy']:.3f} (full chain {summary['chains'][0]['dev_accuracy']:.3f}), mean layers "
          f"computed {chosen['dev_layers']:.2f} of {cm.depth}, routed to the full chain {chosen['dev_full_share']:.1%}")
    if chosen["dev_layers"] > args.budget * cm.depth:
        print(f"cola: warning: no setting computes at most {args.budget} x depth layers on dev; the cheapest is kept",
              file=sys.stderr)
    print(f"report it on held-out samples: cola eval --router {args.out} --task {task.name} --split test "
          f"--mode {first['mode']} --out router-test.jsonl")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    if not args.runs and not args.evals:
        raise ValueError("give search run folders and/or --evals F.jsonl (cola eval outputs)")
    out = build_report(args.runs, args.out, args.evals or [])
    print(f"report: {out / 'report.md'} and {out / 'report.html'}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks import TASKS

    for name, task in TASKS.items():
        print(f"{name:15s} {'/'.join(task.modes):15s} {task.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cola", description="Chains of layers: skip, repeat and re-order the layers of a pretrained LLM per input.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="greedy generation through a chain of layers")
    _add_model_args(p)
    p.add_argument("--chain", default="full", help="chain notation, e.g. 0-13,13,14-29 (default: full)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON object with chain, tokens and text")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="accuracy of one chain on a task, with a 95%% confidence interval")
    _add_model_args(p)
    _add_task_args(p)
    p.add_argument("--chain", default="full", help="chain notation (default: full)")
    p.add_argument("--router", default=None,
                   help="a router folder (`cola router fit`): each input through the chain it routes it to, compared "
                        "with full depth and a random pick from its library on the same samples")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples run together (default: 8 in generate mode, 16 with --router, 1 in score mode: each "
                        "alone, exactly as lm-eval; larger is faster, equal up to floating-point rounding)")
    p.add_argument("--name", default=None, help="a name for this evaluation in `cola report` (default: the chain)")
    p.add_argument("--out", default=None,
                   help="write one JSON line per sample to this file (F.jsonl) and the summary beside it (F.json)")
    p.set_defaults(func=cmd_eval)

    from .search import ACTION_SETS
    from .search.run import CONTROLS, REWARDS

    p = sub.add_parser("search", help="per-sample MCTS over chains of layers, stored and resumable")
    _add_model_args(p)
    _add_task_args(p)
    p.add_argument("--sims", type=positive_int, default=200, help="chains evaluated per sample (default 200)")
    p.add_argument("--actions", default="all", choices=ACTION_SETS, help="all (CoLa), skip only, repeat only")
    p.add_argument("--lambda", dest="lam", type=float, default=5.0, help="length penalty on len(chain)/depth (default 5)")
    p.add_argument("--c", type=float, default=None, help="UCB exploration constant (default sqrt 2)")
    p.add_argument("--epsilon", type=float, default=0.1, help="chance of a random unexplored child (default 0.1)")
    p.add_argument("--widening", type=float, default=0.5, help="progressive widening exponent (default 0.5)")
    p.add_argument("--max-k", type=positive_int, default=4, help="largest block an action skips or repeats (default 4)")
    p.add_argument("--max-r", type=positive_int, default=4, help="most extra repeats of a block (default 4)")
    p.add_argument("--min-len", type=int, default=None, help="shortest chain (default depth/2)")
    p.add_argument("--max-len", type=int, default=None, help="longest chain (default 2*depth)")
    p.add_argument("--reward", default="correct", choices=REWARDS, help="correct (0/1), or margin (score mode)")
    p.add_argument("--control", default="none", choices=CONTROLS,
                   help="decoy: replace each gold by a deterministic wrong answer (chance control); sample: no search, "
                        "the full model tried --sims times per sample (generate: sampled at temperature 1; score: "
                        "options drawn from its option distribution)")
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL-TASK-MODE-ACTIONS[-decoy]-nN-sSEED)")
    p.add_argument("--batch", type=positive_int, default=1,
                   help="search this many samples at once; their chains run together in the same layer calls, "
                        "faster, with answers equal up to floating-point rounding (default 1: one at a time)")
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
    _add_model_args(p)
    _add_task_args(p)
    p.add_argument("--out", default=None, help="write the influences and chains to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prune)

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
    p.add_argument("--features", default="2,4,8",
                   help="feature layer counts to choose from on dev (default 2,4,8)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="samples run together (default 16)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.add_argument("--allow-untested", action="store_true", help="as for the other commands")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_router_fit)

    p = sub.add_parser("report", help="the study's tables, findings and figures from search runs")
    p.add_argument("runs", nargs="*", help="run folders of cola search")
    p.add_argument("--evals", nargs="+", default=None,
                   help="`cola eval --out F.jsonl` outputs (chains, routers) for the sections Per-sample or static? and "
                        "Label-free adaptation")
    p.add_argument("--out", required=True, help="folder for report.md, report.html, PNG figures and CSV tables")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("tasks", help="list the registered tasks")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("layers", help="print the model's depth, each layer's attention type and its experts")
    _add_model_args(p)
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("export", help="write a chain as a standard Hugging Face model folder (transformers loads it)")
    _add_model_args(p)
    p.add_argument("--chain", required=True, help="chain notation, e.g. 0-9,12-29")
    p.add_argument("--out", required=True, help="a new folder")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cola`` console script."""
    args = build_parser().parse_args(argv)
    import warnings

    import transformers

    warnings.showwarning = lambda message, *_, **__: print(f"cola: warning: {message}", file=sys.stderr)

    transformers.utils.logging.set_verbosity_error()  # weight-loading bars and notices drown the command's output
    transformers.utils.logging.disable_progress_bar()
    try:
        return args.func(args)
    except (ValueError, ModelLoadError, FileNotFoundError, KeyError, ImportError) as err:  # chain, data, config, Ray
        print(f"cola: error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
