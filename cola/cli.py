"""The ``cola`` command line: ``generate``, ``layers``, ``tasks``, ``eval``, ``search`` and ``report``.

Each command parses its arguments, calls the library and prints: what a command does, a Python caller can do with the
same calls. Each imports what it needs when it runs, so ``cola --help`` stays fast. Errors CoLa raises on purpose
(:mod:`cola.errors`) print as one line; anything else is a bug and shows its traceback."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .core.chain import as_chain
from .core.loading import DEFAULT_MODEL
from .errors import ColaError, UsageError
from .search.store import check_folder, check_out_file

DTYPES = ("auto", "float32", "bfloat16", "float16")


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


def number_list(kind: type) -> Callable[[str], list]:
    """An argparse type: comma-separated numbers of ``kind`` (int or float), e.g. ``1,3,5``."""
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, e.g. "
                                             f"{'1,3,5' if kind is int else '0.5,0.7'}; not {text!r}") from None
    return parse


def _add_model_args(parser: argparse.ArgumentParser, device: bool = True) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"alias, .gguf file, folder or hub id (default {DEFAULT_MODEL})")
    if device:
        parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="weights and activations (default: bfloat16 on cuda, float32 on cpu; auto: bfloat16 also on "
                             "a cpu with native bf16, AVX512-BF16 or AMX)")
    parser.add_argument("--allow-untested", action="store_true",
                        help="load a model family CoLa is not tested on (refused otherwise); it must still pass the "
                             "exactness check against the model's own forward")


def _check_chain(args: argparse.Namespace) -> None:
    """``--chain`` checked against the model's depth from its config, before the weights load."""
    from .core.loading import model_depth

    depth = model_depth(args.model)
    if depth is not None:
        as_chain(args.chain, depth)


def _load(args: argparse.Namespace, device: str | None = None):
    """The model the command names (:func:`cola.core.loading.load_model`)."""
    from .core.loading import load_model

    return load_model(args.model, device=device or getattr(args, "device", None), dtype=args.dtype,
                      allow_untested=args.allow_untested)


def cmd_generate(args: argparse.Namespace) -> int:
    from .inference.generation import generate_text

    _check_chain(args)
    cm = _load(args)
    chain = as_chain(args.chain, cm.depth)
    out = generate_text(cm, chain, [args.prompt], chat=args.chat, max_new_tokens=args.max_new_tokens,
                        truncate=args.truncate)[0]
    if args.json:
        print(json.dumps({"chain": str(chain), "tokens": out.tokens, "text": out.text}))
    else:
        print(out.text)
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    cm = _load(args)
    print(f"model: {cm.name} ({cm.config.model_type}), depth: {cm.depth}")
    for i, layer_type in enumerate(cm.layer_types):
        experts = cm.experts(i)
        print(f"{i:4d}  {layer_type:18s} {f'mixture of {experts} experts' if experts else 'dense'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .core.export import check_export_folder, export_chain

    check_export_folder(args.out)  # before the model loads
    _check_chain(args)
    cm = _load(args, device="cpu")
    chain = as_chain(args.chain, cm.depth)
    out = export_chain(cm, chain, args.out)
    print(f"exported {cm.name} chain {chain} ({len(chain)} layers) to {out}")
    return 0


def _add_task_args(parser: argparse.ArgumentParser) -> None:
    from .evaluation.evaluator import MODES, SCORE_STYLES

    parser.add_argument("--task", default=None, help="task name (see `cola tasks`); or --lm-eval-task")
    parser.add_argument("--lm-eval-task", default=None,
                        help="an lm-evaluation-harness task as the task (needs lm-eval; docs/lm-eval.md): its "
                             "documents, prompts and per-document acc (multiple choice) or exact_match (generation)")
    parser.add_argument("--lm-eval-include", default=None,
                        help="a folder of lm-eval YAML tasks to find --lm-eval-task in (local JSONL data: "
                             "dataset_path: json)")
    parser.add_argument("--data-dir", default=None, help="folder in the layout of shared/data (default: the HF hub)")
    parser.add_argument("--data-file", default=None, help="a JSONL file of the task's shape (mc_jsonl, qa_jsonl)")
    parser.add_argument("--split", default=None, choices=("train", "dev", "test"),
                        help="split of a benchmark task (default: test; CSQA: dev): fit on train, select on dev, "
                             "report on test")
    parser.add_argument("--n", type=int, default=None, help="seeded random subset size (default 500; 50 for synthetic; 0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset (default 0)")
    parser.add_argument("--level", type=int, default=None, choices=range(1, 6), help="MATH difficulty level")
    parser.add_argument("--mode", default=None, choices=MODES,
                        help="generate, or score (multiple choice) (default: generate; an lm-eval task's own)")
    parser.add_argument("--score-style", default="lmeval", choices=SCORE_STYLES, help="context format in score mode")
    parser.add_argument("--no-chat", dest="chat", action="store_false", help="do not use the chat template")
    parser.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows (counted) instead of failing")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None, help="generation budget (default: the task's)")
    _add_truncate(parser)


def _add_policy_args(parser: argparse.ArgumentParser) -> None:
    from .policies import KINDS, RULES
    from .policies.spec import GENERATE_SIGNALS, SCORE_SIGNALS

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
    g.add_argument("--replay", action="store_true",
                   help="with --sweep: answer the policy and full depth from the sweep's table instead of running them "
                        "again (the same answers and layers, one pass less, no wall times)")


def _add_truncate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--truncate", action="store_true",
                        help="an input longer than the model's context loses its first tokens, with a warning "
                             "(default: it is refused before any work)")


def _resolve_mode(args: argparse.Namespace) -> None:
    """``--mode``'s default for an lm-eval task: its one mode (score for multiple choice, else generate)."""
    if args.mode is None:
        from .tasks import get_task

        args.mode = get_task(args.task, args.lm_eval_include).modes[0]


def _samples(args: argparse.Namespace) -> list:
    """The task's samples the command asks for: loaded and checked before any model is."""
    from .tasks import get_task, load_samples

    _resolve_mode(args)
    task = get_task(args.task, args.lm_eval_include)
    return load_samples(task, args.data_dir, args.data_file, args.n, args.seed, args.level, args.skip_bad_rows,
                        args.split)


def _evaluator_and_samples(args: argparse.Namespace):
    from .evaluation.evaluator import Evaluator
    from .tasks import get_task

    samples = _samples(args)
    evaluator = Evaluator(_load(args), get_task(args.task, args.lm_eval_include), args.mode, args.chat, args.score_style,
                          args.max_new_tokens, args.truncate)
    evaluator.check(samples)  # an input too long for the model fails before any work
    return evaluator, samples


class _Bars:
    """One tqdm bar per stage of an evaluation (``progress(stage, done)``), each of ``total`` samples."""

    def __init__(self, total: int, task: str) -> None:
        self.total, self.task, self.bars = total, task, {}

    def __call__(self, stage: str, done: int) -> None:
        from tqdm import tqdm

        if stage not in self.bars:
            self.bars[stage] = tqdm(total=self.total, desc=f"{self.task} [{stage}]", unit="sample")
        self.bars[stage].update(done)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()


def _eval_store(args: argparse.Namespace, lock, config: dict):
    """The evaluation's output (:class:`~cola.search.store.EvalStore`; in memory without --out), and what an interrupt
    says it kept."""
    from .search.store import EvalStore

    store = EvalStore(args.out, config, lock) if args.out else EvalStore(None, config)
    args.kept = lambda: f"{store.kept()}; run the same command again to resume" if args.out else store.kept()
    if store.finished is not None:
        print(f"{args.out}: this evaluation is finished already (same config); its results follow (delete the file to "
              "run it again)", file=sys.stderr)
    return store


def _finish_eval(args: argparse.Namespace, store, rows: list[dict], summary: dict) -> None:
    """Write the output (rows and summary, each whole) and say where it is, and whether its wall times are of one
    uninterrupted process."""
    if store.finished is None:
        store.finish(rows, summary)
    if summary.get("wall_processes") and summary["wall_processes"] > 1:
        print(f"note: resumed; wall times are sums of each batch's time over {summary['wall_processes']} processes",
              file=sys.stderr)
    if args.out:
        print(f"per-sample answers: {args.out}; summary: {store.summary_path}")


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.evaluations import eval_header, evaluate_chain, evaluate_router
    from .search.store import eval_lock
    from .tasks import get_task

    lock = eval_lock(args.out) if args.out else None  # a bad --out or a second writer fails before the model loads
    chains = args.chain or ["full"]
    if args.policy is not None:
        return _eval_policy(args, lock)
    if args.router is not None and args.chain:
        raise UsageError("--router picks each input's chain; it does not take --chain")
    if len(chains) > 1:
        raise UsageError("several --chain need a policy that asks them: --policy cascade or --policy vote")
    args.chain = chains[0]
    if args.router is None:
        _check_chain(args)
    evaluator, samples = _evaluator_and_samples(args)
    task = get_task(args.task, args.lm_eval_include)
    batch = args.batch_size or (16 if args.router or args.mode == "generate" else 1)
    header = eval_header(evaluator, samples, batch, data=args.data_file or args.data_dir, seed=args.seed,
                         level=args.level, split=task.split_of(args.split, args.data_file))
    if args.router is not None:
        from .policies.library_router import Router

        router = Router.load(args.router, evaluator.cm)
        store = _eval_store(args, lock, {**header, "kind": "router", "router": str(router.folder),
                                         "library": [str(c) for c in router.library],
                                         "setting": router.setting.__dict__})
        with _Bars(len(samples), args.task) as bars:
            summary, rows = store.finished or evaluate_router(router, evaluator, samples, batch, header, args.name,
                                                              args.seed, bars, store)
        if summary["seen_in_fit"]:
            print(f"cola: warning: {summary['seen_in_fit']} of these samples were used to fit or select "
                  f"{args.router} (first: {summary['seen_ids'][:3]}); its numbers here are not held-out",
                  file=sys.stderr)
        _print_router(summary, router, args.router)
    else:
        chain = as_chain(args.chain, evaluator.cm.depth)
        store = _eval_store(args, lock, {**header, "kind": "chain", "chain": str(chain)})
        with _Bars(len(samples), args.task) as bars:
            summary, rows = store.finished or evaluate_chain(evaluator, chain, samples, batch, header, args.name,
                                                             lambda done: bars(str(chain), done), store)
    for name in ("acc", "acc_norm") if args.mode == "score" else ("acc",):
        m = summary[name]
        print(f"{args.task} {name}: {m['accuracy']:.4f} ({m['k']}/{len(rows)}), 95% CI [{m['ci'][0]:.4f}, "
              f"{m['ci'][1]:.4f}]  {'router ' + args.router if args.router else 'chain ' + summary['chain']}")
    _finish_eval(args, store, rows, summary)
    return 0


def _eval_policy(args: argparse.Namespace, lock) -> int:
    """``cola eval --policy``: build (and, with --calibrate, choose on dev) the policy, answer the samples with it and
    with full depth, side by side."""
    from tqdm import tqdm

    from .core.loading import model_depth
    from .evaluation.evaluations import eval_header
    from .policies import calibrate, evaluate_policy, make_spec
    from .policies.calibrate import parse_objective
    from .policies.spec import KINDS
    from .tasks import get_task, load_samples

    task = get_task(args.task, args.lm_eval_include)
    if args.calibrate:
        parse_objective(args.calibrate)
        if args.data_file or not task.splits:
            raise UsageError(f"--calibrate chooses on the dev split; {args.task} from a data file has none")
    if args.router is not None and not (args.policy in KINDS and KINDS[args.policy].routed):
        raise UsageError("--router belongs to --policy router or layer-router (or to a plain `cola eval --router`)")
    if args.replay and not args.sweep:
        raise UsageError("--replay answers from the sweep's table: it needs --sweep")
    if args.policy in KINDS and KINDS[args.policy].routed and (args.calibrate or args.sweep):
        raise UsageError(f"a {args.policy} policy has no setting to calibrate or sweep; its router was selected on dev "
                         "when it was fitted")
    options = dict(signal=args.signal, norm=args.norm or None, rule=args.rule, k=args.k,
                   temperature=args.temperature, seed=args.sample_seed, router=args.router)

    def spec_for(depth: int):
        return make_spec(args.policy, depth, args.chain or (), args.chains_from, args.top, args.threshold or (),
                         calibrating=bool(args.calibrate), **options)

    _resolve_mode(args)
    depth = model_depth(args.model)
    spec = None if depth is None else spec_for(depth)
    if spec is not None:  # a bad spec fails before the weights load
        spec.check(depth, args.mode)
    evaluator, samples = _evaluator_and_samples(args)
    if spec is None or depth != evaluator.cm.depth:
        spec = spec_for(evaluator.cm.depth)
    router = spec.load_router(evaluator.cm) if spec.routed else None
    batch = args.batch_size or 16
    split = task.split_of(args.split, args.data_file)
    header = eval_header(evaluator, samples, batch, data=args.data_file or args.data_dir, seed=args.seed,
                         level=args.level, split=split)
    ks, temperatures = args.ks, args.temperatures
    rules = args.rules.split(",") if args.rules else ()
    store = _eval_store(args, lock, {
        **header, "kind": "policy", "policy": spec.to_dict(), "calibrate": args.calibrate,
        "dev_n": args.dev_n if args.calibrate else None, "ks": list(ks), "rules": list(rules),
        "temperatures": list(temperatures), "sweep": args.sweep, "replay": args.replay})
    if store.finished is not None:
        _print_policy(store.finished[0])
        summary, rows = store.finished
        _finish_eval(args, store, rows, summary)
        return 0
    calibration, family = None, []
    if args.calibrate:
        dev = load_samples(task, args.data_dir, None, args.dev_n, args.seed, args.level, args.skip_bad_rows, "dev")
        evaluator.check(dev)
        with tqdm(total=len(dev), desc=f"{args.task} [calibrate on dev]", unit="sample") as bar:
            spec, calibration = calibrate(spec, evaluator, dev, args.calibrate, batch, ks, rules, temperatures,
                                          task.split("dev"), bar.update, store)
        chosen = calibration["points"][calibration["chosen"]]
        print(f"calibrated on {len(dev)} dev samples ({args.calibrate}): {chosen['name']} — dev accuracy "
              f"{chosen['accuracy']:.4f}, {chosen['mean_layers']:.2f} layers per input, agreement with full depth "
              f"{chosen['agreement']:.1%}")
    if args.sweep:
        family = spec.family(ks, rules, temperatures)
    with _Bars(len(samples), args.task) as bars:
        summary, rows = evaluate_policy(spec, evaluator, samples, batch, header, args.name, router, calibration,
                                        family, args.replay, bars, store)
    _print_policy(summary)
    _finish_eval(args, store, rows, summary)
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
    if summary["seen_in_calibration"]:
        print(f"cola: warning: {summary['seen_in_calibration']} of these samples were used to calibrate the policy "
              f"(first: {summary['seen_ids'][:3]}); its numbers here are not held-out", file=sys.stderr)


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


def cmd_search(args: argparse.Namespace) -> int:
    from .search.launch import default_folder, run_job
    from .search.presets import search_settings
    from .search.run import SearchJob
    from .search.store import FolderLock
    from .tasks import get_task, with_control

    samples = with_control(_samples(args), args.control)
    if (args.control == "menu") != (args.menu is not None):
        raise UsageError("--control menu needs --menu RUN_DIR (a per-sample search run to take the chains from), "
                         "and --menu goes with --control menu")
    if args.static and (args.workers is not None or args.ray_address is not None):
        raise UsageError("--static searches one chain over all samples in one process; it does not take --workers")
    if args.static and args.control != "none":
        raise UsageError("--static takes no --control: its reward is an accuracy, not one sample's verdict")
    task = get_task(args.task, args.lm_eval_include)
    if args.control == "decoy" and task.verbatim and task.kind == "qa":
        raise UsageError(f"{args.task} is graded by lm-eval against each document's own target, so a decoy gold "
                         "cannot replace it: the decoy control takes lm-eval's multiple_choice tasks")
    space, mcts = search_settings(args.preset, actions=args.actions, max_k=args.max_k, max_r=args.max_r,
                                  min_len=args.min_len, max_len=args.max_len, sims=args.sims, lam=args.lam, c=args.c,
                                  epsilon=args.epsilon, widening=args.widening, stop_on_fix=args.stop_on_fix,
                                  stop_shorter_by=args.stop_shorter_by)
    args.sims, args.actions = mcts.sims, space["actions"]
    job = SearchJob(
        model=args.model, task=args.task, mode=args.mode, chat=args.chat, score_style=args.score_style,
        max_new_tokens=args.max_new_tokens, device=args.device, dtype=args.dtype, **space,
        allow_untested=args.allow_untested, mcts=mcts, seed=args.seed, reward=args.reward, control=args.control,
        menu=_menu(args), level=args.level,
        split=task.split_of(args.split, args.data_file),
        data=args.data_file or args.data_dir, batch=args.batch, prefix_bytes=int(args.prefix_gib * (1 << 30)),
        truncate=args.truncate, lm_eval_include=args.lm_eval_include)
    if args.workers is not None or args.ray_address is not None:
        from .search.distributed import require_ray

        require_ray()  # before a run folder is made
    out = args.out or default_folder(job, len(samples), static=args.static)

    def kept() -> str:
        from .search.store import read_records

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
    from .search.menu import load_menu

    return load_menu(args.menu, args.model)


def _static_search(args: argparse.Namespace, job, samples: list, out: str, lock) -> int:
    """`cola search --static`: one chain for all ``samples`` (a dev subset), reward its accuracy on them."""
    from .search.static import best_static, run_static

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
    from .search.records import headline

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
    from tqdm import tqdm

    from .search.prune import block_influence, least_influential, pruned_chains, save_influence
    from .tasks import get_task

    if args.out:
        check_out_file(args.out)  # before the model loads
    evaluator, samples = _evaluator_and_samples(args)
    cm = evaluator.cm

    def prompts():
        for sample in tqdm(samples, desc="calibration prompts", unit="prompt", disable=args.quiet):
            yield evaluator.prompt_ids(sample)

    influence = block_influence(cm, prompts())
    chains = pruned_chains(influence, cm.depth // 4)
    split = args.data_file if args.data_file else (args.split or get_task(args.task, args.lm_eval_include).default_split)
    print(f"block influence of {cm.name} ({cm.depth} layers) on {len(samples)} {args.task} prompts ({split}, "
          f"{args.mode} mode), least influential first:")
    for rank, layer in enumerate(least_influential(influence), 1):
        print(f"{rank:4d}. layer {layer:3d}  BI {influence[layer]:.5f}")
    print("chains without the m least influential layers:")
    for m, chain in chains.items():
        print(f"  m={m:<3d} {len(chain):3d} layers  {chain}")
    if args.out:
        save_influence(args.out, influence, chains, model=cm.name, task=args.task, split=split, mode=args.mode,
                       n=len(samples), seed=args.seed)
    return 0


def cmd_router_fit(args: argparse.Namespace) -> int:
    """`cola router fit`: a chain library from train-split search runs, a router fitted on their samples and
    selected on dev samples, written as a folder."""
    from .policies.library_router import fit_from_runs

    check_folder(args.out)  # before the model loads
    library = args.library.split(";") if args.library else None
    router, summary = fit_from_runs(
        args.runs, data=args.data_dir, data_file=args.data_file, dev_file=args.dev_file, fit_n=args.fit_n,
        dev_n=args.dev_n, seed=args.seed, size=args.k, most=args.candidates, min_support=args.min_support,
        library=library, budget=args.budget, feature_layers=args.features,
        batch=args.batch_size, device=args.device, allow_untested=args.allow_untested, progress=not args.quiet)
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


def cmd_router_fit_layers(args: argparse.Namespace) -> int:
    """`cola router fit-layers`: Dr.LLM's per-layer routers from drllm search runs, scored on dev runs."""
    from .policies.layer_router import Recipe, fit_from_runs, save_routers

    check_folder(args.out)  # before the model loads
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
    print(f"evaluate them: cola eval --policy layer-router --router {args.out} --task {config['task']} --split test "
          f"--mode {config['mode']} --dtype {config['dtype']} --out layer-router-test.jsonl")
    return 0


def cmd_router_layer_control(args: argparse.Namespace) -> int:
    """`cola router layer-control`: a per-layer routers folder that reads nothing (random at the trained routers'
    dev rates, or execute everywhere), to evaluate beside them."""
    from .policies.layer_router import random_control

    check_folder(args.out)
    config = random_control(args.routers, args.out, execute=args.kind == "execute", seed=args.seed)
    rates = config["rates"]
    skip, repeat = (sum(r[c] for r in rates) / len(rates) for c in (0, 2))
    print(f"{args.kind} control of {args.routers}: {args.out} (per layer on average: skip {skip:.3f}, repeat "
          f"{repeat:.3f})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report.pages import build_report

    if not args.runs and not args.evals:
        raise UsageError("give search run folders and/or --evals F.jsonl (cola eval outputs)")
    check_folder(args.out)
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
    _add_truncate(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="accuracy of one chain on a task, with a 95%% confidence interval")
    _add_model_args(p)
    _add_task_args(p)
    p.add_argument("--chain", action="append", default=None,
                   help="chain notation (default: full); with --policy cascade or vote, repeat it: the chains in order")
    p.add_argument("--router", default=None,
                   help="a router folder (`cola router fit`): each input through the chain it routes it to, compared "
                        "with full depth and a random pick from its library on the same samples; with --policy "
                        "layer-router, a per-layer routers folder (`cola router fit-layers` or `layer-control`)")
    _add_policy_args(p)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples run together (default: 16 in generate mode and with --router, 1 in score mode: each "
                        "alone, exactly as lm-eval; larger is faster, equal up to floating-point rounding)")
    p.add_argument("--name", default=None, help="a name for this evaluation in `cola report` (default: the chain)")
    p.add_argument("--out", default=None,
                   help="write one JSON line per sample to this file (F.jsonl) and the summary beside it (F.json)")
    p.set_defaults(func=cmd_eval)

    from .policies.layer_router import Recipe
    from .search import ACTION_SETS
    from .search.presets import PRESETS
    from .search.run import CONTROLS, REWARDS

    p = sub.add_parser("search", help="per-sample MCTS over chains of layers, stored and resumable")
    _add_model_args(p)
    _add_task_args(p)
    p.add_argument("--preset", default="study", choices=tuple(PRESETS),
                   help="the search protocol: study (Li et al.: the defaults below) or drllm (Dr.LLM's supervision: "
                        "layers in order each 0-2 times, skip blocks <= 2, repeat one layer once, 50 simulations, "
                        "lambda 3, c 1.8, early stops); any option below overrides its value")
    p.add_argument("--sims", type=positive_int, default=None, help="chains evaluated per sample (default 200)")
    p.add_argument("--actions", default=None, choices=ACTION_SETS,
                   help="all (CoLa), skip only, repeat only; drllm (Dr.LLM's paths) (default all)")
    p.add_argument("--lambda", dest="lam", type=float, default=None, help="length penalty on len(chain)/depth (default 5)")
    p.add_argument("--c", type=float, default=None, help="UCB exploration constant (default sqrt 2)")
    p.add_argument("--epsilon", type=float, default=None, help="chance of a random unexplored child (default 0.1)")
    p.add_argument("--widening", type=float, default=None, help="progressive widening exponent (default 0.5)")
    p.add_argument("--max-k", type=positive_int, default=None, help="largest block an action skips or repeats (default 4)")
    p.add_argument("--max-r", type=positive_int, default=None, help="most extra repeats of a block (default 4)")
    p.add_argument("--min-len", type=int, default=None, help="shortest chain (default depth/2)")
    p.add_argument("--max-len", type=int, default=None, help="longest chain (default 2*depth)")
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
    p.add_argument("--epochs", type=positive_int, default=recipe.epochs, help=f"training epochs (default {recipe.epochs})")
    p.add_argument("--lr", type=positive_float, default=recipe.lr, help=f"AdamW learning rate (default {recipe.lr:g})")
    p.add_argument("--weight-decay", type=float, default=recipe.weight_decay,
                   help=f"AdamW weight decay (default {recipe.weight_decay:g})")
    p.add_argument("--warmup", type=float, default=recipe.warmup,
                   help=f"share of steps warming up, then cosine (default {recipe.warmup:g})")
    p.add_argument("--gamma", type=float, default=recipe.gamma, help=f"focal loss gamma (default {recipe.gamma:g})")
    p.add_argument("--beta", type=float, default=recipe.beta,
                   help=f"effective-number class weights beta (default {recipe.beta:g})")
    p.add_argument("--batch", type=positive_int, default=recipe.batch, help=f"samples per step (default {recipe.batch})")
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
    _add_model_args(p, device=False)
    p.add_argument("--chain", required=True, help="chain notation, e.g. 0-9,12-29")
    p.add_argument("--out", required=True, help="a new folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("lm-eval", help="lm-evaluation-harness's command line with CoLa's `cola` model backend "
                       "(needs lm-eval): `cola lm-eval --model cola --model_args chain=0-13+13+14-29 --tasks arc_easy`",
                       add_help=False)
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="lm-eval's own arguments")
    p.set_defaults(func=cmd_lm_eval)
    return parser


def cmd_lm_eval(args: argparse.Namespace) -> int:
    """``cola lm-eval``: lm-eval's own command line, with the ``cola`` backend registered (:mod:`cola.lmeval`)."""
    try:
        from .lmeval import main as lm_eval_main
    except ImportError as err:
        raise UsageError(f"cola lm-eval needs lm-evaluation-harness ({err}): pip install lm-eval") from None
    return lm_eval_main(args.lm_eval_args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as a namespace: ``cola lm-eval``'s arguments all go to lm-eval, options and --help included;
    a command that takes a task gets ``--task`` or ``--lm-eval-task`` (as the task ``lm-eval:NAME``) and its mode
    (default generate; an lm-eval task's own, set when the task loads)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:
        return argparse.Namespace(func=cmd_lm_eval, lm_eval_args=argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "lm_eval_task"):
        from .tasks.lmeval import PREFIX

        if (args.task is None) == (args.lm_eval_task is None):
            parser.error("give --task NAME or --lm-eval-task NAME (one of them)")
        if args.lm_eval_task is not None:
            args.task = PREFIX + args.lm_eval_task
        if args.mode is None and not args.task.startswith(PREFIX):  # an lm-eval task's own: once it loads (_samples)
            args.mode = "generate"
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cola`` console script."""
    args = parse_args(argv)
    import warnings

    import transformers

    shown = warnings.showwarning  # for this command only: main() may be called from a Python program or a test
    warnings.showwarning = lambda message, *_, **__: print(f"cola: warning: {message}", file=sys.stderr)
    transformers.utils.logging.set_verbosity_error()  # weight-loading bars and notices drown the command's output
    transformers.utils.logging.disable_progress_bar()
    try:
        if getattr(args, "device", None) is not None:  # a device this machine lacks fails before any work
            from .core.loading import parse_device

            parse_device(args.device)
        return args.func(args)
    except ColaError as err:  # a bad input or a state the user can fix; anything else is a bug: its traceback shows
        print(f"cola: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: every write is whole (cola.search.store), so say what is kept and stop
        kept = getattr(args, "kept", None)
        print(f"\ninterrupted: {kept() if kept else 'nothing was written'}", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
