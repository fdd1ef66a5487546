"""Speed of one search over Ray workers against a single process, side by side, same samples, same records.

    .venv/bin/python bench/scale_out.py --data-dir ../shared/data [--n 8] [--sims 50] [--workers 1,2]

Runs the same search (ARC-Challenge, score mode) in one process without Ray, then on a local Ray cluster with each
worker count, each into its own run folder, and prints the wall times (model loading and Ray start-up included),
samples per minute, the speed-up over the single process and whether the records equal its records (wall times
aside). With --batch 1 they must.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from cola.evaluation.evaluator import EvalConfig
from cola.search import MCTSConfig
from cola.search.distributed import run_search_ray, start_local_cluster
from cola.search.run import SearchJob, run_search
from cola.storage import RunStore, read_records
from cola.tasks import load_samples


def _lines(folder: Path) -> list[str]:
    return sorted(json.dumps({k: v for k, v in r.items() if k != "wall_time"}, sort_keys=True)
                  for r in read_records(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--sims", type=int, default=50)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    import ray

    samples = load_samples("arc_challenge", args.data_dir, n=args.n, seed=0)
    job = SearchJob(args.model, "arc_challenge", eval_config=EvalConfig(mode="score"), device="cpu",
                    mcts=MCTSConfig(sims=args.sims))
    root = Path(tempfile.mkdtemp(prefix="cola-scale-"))
    print(f"{os.cpu_count()} CPU cores; ARC-Challenge score mode, {len(samples)} samples x {args.sims} simulations")
    t0 = time.perf_counter()
    evaluator = job.evaluator()
    run_search(job, evaluator, samples, RunStore(root / "single", job.run_config(evaluator, samples)), progress=False)
    single = time.perf_counter() - t0
    reference = _lines(root / "single")
    print(f"single process (no Ray): {single:7.1f} s, {60 * len(samples) / single:5.2f} samples/min")
    del evaluator
    start_local_cluster(ray, os.cpu_count())
    for workers in map(int, args.workers.split(",")):
        t0 = time.perf_counter()
        run_search_ray(job, samples, str(root / f"workers{workers}"), workers=workers, progress=False)
        seconds = time.perf_counter() - t0
        same = _lines(root / f"workers{workers}") == reference
        print(f"{workers} Ray worker(s):       {seconds:7.1f} s, {60 * len(samples) / seconds:5.2f} samples/min, "
              f"speed-up {single / seconds:.2f}x, records {'identical' if same else 'DIFFERENT'}")
    ray.shutdown()


if __name__ == "__main__":
    main()
