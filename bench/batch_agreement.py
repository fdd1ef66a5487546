"""How often does searching several samples at once (`cola search --batch N`) change an answer?

    .venv/bin/python bench/batch_agreement.py --data-dir ../shared/data [--n 20] [--sims 200] [--batch 8]

Searches the same ARC-Challenge samples with `--batch 1` and `--batch N`, in score mode and in generate mode, as
`cola search` runs (one resumable run folder each, under --out), then compares the two runs of each mode sample by
sample: of the chains both evaluated, how many got a different answer; how many samples' searches took another
path (a different answer steers the MCTS elsewhere from that point), and how many changed their best chain or the
correctness of their best chain. Packed layer calls round differently from one row's, so a near-tie between two
tokens or options can fall the other way; this measures how often it does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cola import load_model
from cola.evaluate import Evaluator
from cola.search import MCTSConfig
from cola.search.run import SearchJob, run_search
from cola.store import RunStore
from cola.tasks import get_task, load_samples


def search(evaluator: Evaluator, samples, folder: Path, sims: int, batch: int) -> dict[str, dict]:
    job = SearchJob(evaluator.cm.name, evaluator.task.name, evaluator.mode, mcts=MCTSConfig(sims=sims), batch=batch)
    store = RunStore(folder, job.run_config(evaluator, samples))
    return {r["id"]: r for r in run_search(job, evaluator, samples, store)}


def compare(alone: dict[str, dict], together: dict[str, dict]) -> dict:
    shared = differ = diverged = best_changed = verdict_changed = 0
    for sample_id, a in alone.items():
        b = together[sample_id]
        answers_a = {e["chain"]: e["answer"] for e in a["evaluations"]}
        answers_b = {e["chain"]: e["answer"] for e in b["evaluations"]}
        common = answers_a.keys() & answers_b.keys()
        shared += len(common)
        differ += sum(answers_a[c] != answers_b[c] for c in common)
        diverged += [e["chain"] for e in a["evaluations"]] != [e["chain"] for e in b["evaluations"]]
        best_changed += a["best"]["chain"] != b["best"]["chain"]
        verdict_changed += a["best"]["correct"] != b["best"]["correct"]
    return {"samples": len(alone), "shared_chains": shared, "answers_differ": differ, "paths_diverged": diverged,
            "best_chain_changed": best_changed, "best_correct_changed": verdict_changed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--sims", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--modes", default="score,generate")
    parser.add_argument("--out", default="runs/batch-agreement", help="run folders (resumable)")
    args = parser.parse_args()
    cm = load_model(args.model)
    task = get_task("arc_challenge")
    samples = load_samples(task, args.data_dir, n=args.n, seed=0)
    print(f"model {args.model} on {cm.device} ({cm.dtype}), ARC-Challenge, {len(samples)} samples x {args.sims} "
          f"simulations, --batch 1 against --batch {args.batch}")
    for mode in args.modes.split(","):
        evaluator = Evaluator(cm, task, mode=mode)
        runs = [search(evaluator, samples, Path(args.out) / f"{mode}-batch{b}", args.sims, b) for b in (1, args.batch)]
        c = compare(*runs)
        print(f"{mode:8s}: of {c['shared_chains']} chain evaluations made by both, {c['answers_differ']} differ in "
              f"answer; {c['paths_diverged']} of {c['samples']} searches took another path, "
              f"{c['best_chain_changed']} changed their best chain, {c['best_correct_changed']} the correctness of it")


if __name__ == "__main__":
    main()
