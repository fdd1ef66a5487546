"""Do verdicts depend on the batch? And what does bf16 change against float32?

    .venv/bin/python bench/batch_agreement.py --data-dir ../shared/data [--n 20] [--sims 50] [--batch 8] \
        [--dtype float32,bfloat16] [--modes score,generate] [--plain]

For each dtype, searches the same ARC-Challenge samples with `--batch 1` and `--batch N`, in score mode and in
generate mode, as `cola search` runs (one resumable run folder each, under --out), then compares the two runs of each
mode sample by sample: of the chains both evaluated, how many got a different answer (a verdict flip); how many
samples' searches took another path, and how many changed their best chain or the correctness of it (that the
numbers themselves are bitwise equal is tested in tests/test_bf16.py). With batch-invariant products (the default on a
CPU, `cola.core.invariant`) every count must be 0; `--plain` also runs the packed products without it, to show what it
removes, and both wall times side by side (the price of invariance). Across dtypes, the batch-1 runs are compared the
same way: per-candidate verdict flips between bf16 and float32 on the chains both searches evaluated.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cola import load_model
from cola.core.invariant import make_batch_invariant
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.search import MCTSConfig
from cola.search.run import SearchJob, run_search
from cola.storage import RunStore
from cola.tasks import get_task, load_samples


def search(evaluator: Evaluator, samples, folder: Path, sims: int, batch: int) -> tuple[dict[str, dict], float]:
    """The run's records by sample id, and the wall seconds of the searches this call ran."""
    job = SearchJob(evaluator.cm.name, evaluator.task.name, eval_config=EvalConfig(mode=evaluator.config.mode),
                    mcts=MCTSConfig(sims=sims), batch=batch, dtype=str(evaluator.cm.dtype).removeprefix("torch."))
    store = RunStore(folder, job.run_config(evaluator, samples))
    start = time.perf_counter()
    records = {r["id"]: r for r in run_search(job, evaluator, samples, store, progress=False)}
    store.close()
    return records, time.perf_counter() - start


def compare(a_run: dict[str, dict], b_run: dict[str, dict]) -> dict:
    shared = differ = flips = diverged = best_changed = verdict_changed = 0
    for sample_id, a in a_run.items():
        b = b_run[sample_id]
        by_a = {e["chain"]: e for e in a["evaluations"]}
        by_b = {e["chain"]: e for e in b["evaluations"]}
        common = by_a.keys() & by_b.keys()
        shared += len(common)
        differ += sum(by_a[c]["answer"] != by_b[c]["answer"] for c in common)
        flips += sum(by_a[c]["correct"] != by_b[c]["correct"] for c in common)
        diverged += [e["chain"] for e in a["evaluations"]] != [e["chain"] for e in b["evaluations"]]
        best_changed += a["best"]["chain"] != b["best"]["chain"]
        verdict_changed += a["best"]["correct"] != b["best"]["correct"]
    return {"samples": len(a_run), "shared_chains": shared, "answers_differ": differ, "verdicts_differ": flips,
            "paths_diverged": diverged, "best_chain_changed": best_changed, "best_correct_changed": verdict_changed}


def _line(label: str, c: dict) -> str:
    return (f"{label}: of {c['shared_chains']} chain evaluations made by both, {c['answers_differ']} differ in answer "
            f"({c['answers_differ'] / max(c['shared_chains'], 1):.2%}), {c['verdicts_differ']} in verdict "
            f"({c['verdicts_differ'] / max(c['shared_chains'], 1):.2%}); "
            f"{c['paths_diverged']} of {c['samples']} searches took another path, {c['best_chain_changed']} changed "
            f"their best chain, {c['best_correct_changed']} the correctness of it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--sims", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="float32,bfloat16", help="dtypes, comma-separated (default both)")
    parser.add_argument("--modes", default="score,generate")
    parser.add_argument("--plain", action="store_true", help="also run without batch-invariant products")
    parser.add_argument("--out", default="runs/batch-agreement", help="run folders (resumable)")
    args = parser.parse_args()
    task = get_task("arc_challenge")
    samples = load_samples(task, args.data_dir, n=args.n, seed=0)
    print(f"model {args.model}, ARC-Challenge test, {len(samples)} samples x {args.sims} simulations, --batch 1 "
          f"against --batch {args.batch}, {torch.get_num_threads()} thread(s)")
    alone: dict[tuple[str, str], dict] = {}
    for dtype in args.dtype.split(","):
        cm = load_model(args.model, dtype=dtype)
        for invariant in (True, False) if args.plain else (True,):
            make_batch_invariant(cm.model, invariant)
            cm.batch_invariant = invariant
            kind = "invariant" if invariant else "plain"
            for mode in args.modes.split(","):
                evaluator = Evaluator(cm, task, config=EvalConfig(mode=mode))
                folder = Path(args.out) / f"{dtype}-{kind}-{mode}"
                (one, one_s), (many, many_s) = [search(evaluator, samples, folder / f"batch{b}", args.sims, b)
                                                for b in (1, args.batch)]
                if invariant:
                    alone[(dtype, mode)] = one
                print(_line(f"{dtype} {kind:9s} {mode:8s} batch 1 vs {args.batch}", compare(one, many))
                      + (f"; batch {args.batch} searched in {many_s:.1f} s" if many_s > 1 else ""))
    dtypes = args.dtype.split(",")
    for mode in args.modes.split(","):
        for other in dtypes[1:]:
            print(_line(f"{dtypes[0]} vs {other} {mode} (batch 1)", compare(alone[(dtypes[0], mode)],
                                                                            alone[(other, mode)])))


if __name__ == "__main__":
    main()
