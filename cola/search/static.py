"""One chain for a whole task: the same MCTS and action space as the per-sample search, with a chain's reward its
accuracy on a fixed subset of samples (a dev split: select on dev, report on test).

Every chain evaluated is one record of the run folder (its per-sample verdicts, in the order of the config's
``sample_ids``, and its accuracy), written as it is evaluated. The search is deterministic given its seed, so a
resumed run replays it, taking the recorded chains' accuracies instead of evaluating them again.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from ..core.chain import Chain
from ..core.prefix_cache import PrefixCache
from ..tasks import Sample
from .mcts import Evaluation, MCTSConfig, mcts
from .run import SearchJob
from .space import SearchSpace
from ..storage import FolderLock, RunStore


def static_search(
    verdicts: Callable[[Chain], Sequence[bool]],
    n: int,
    space: SearchSpace,
    config: MCTSConfig,
    seed: int,
    store: RunStore,
    progress: bool = True,
) -> list[dict]:
    """Search one chain for ``n`` samples: ``verdicts(chain)`` says which samples the chain answers right; returns
    every chain's record, in the order evaluated (the full chain first)."""
    memo = {r["id"]: r for r in store.records()}
    order: list[dict] = []

    def evaluate(chain: Chain) -> Evaluation:
        key = str(chain)
        if key not in memo:
            correct = [bool(v) for v in verdicts(chain)]
            if len(correct) != n:
                raise ValueError(f"{len(correct)} verdicts for {n} samples")
            memo[key] = {"id": key, "chain": key, "length": len(chain), "correct": correct, "k": sum(correct),
                         "n": n, "accuracy": sum(correct) / n}
            store.append(memo[key])
        order.append(memo[key])
        return Evaluation(chain, None, memo[key]["accuracy"] > 0, memo[key]["accuracy"])

    with tqdm(total=config.sims, desc="chains", unit="chain", disable=not progress, dynamic_ncols=True) as bar:
        mcts(Chain.full(space.depth), evaluate, space, config, random.Random(f"{seed}:static"),
             lambda _: bar.update(1))
    return order


def run_static(job: SearchJob, samples: Sequence[Sample], folder: str | Path, progress: bool = True,
               lock: FolderLock | None = None) -> list[dict]:
    """``cola search --static``: load the job's model, search one chain for all ``samples`` (its reward the chain's
    accuracy on them) and store every chain evaluated in ``folder`` (resumable); returns the records, the full chain
    first. Each sample keeps a prefix cache across the chains (a share of the job's prefix memory)."""
    evaluator = job.evaluator()
    prefixes = [PrefixCache(job.prefix_bytes // len(samples)) for _ in samples]

    def verdicts(chain: Chain) -> list[bool]:
        return [o.correct for o in evaluator.evaluate(chain, samples, prefixes)]

    with RunStore(folder, job.run_config(evaluator, samples, static=True), lock) as store:
        return static_search(verdicts, len(samples), job.space(evaluator.cm.depth), job.mcts, job.seed, store,
                             progress)


def ranked_static(records: Sequence[dict]) -> list[dict]:
    """The chains of a static run, highest accuracy first, the shorter first among equals (then the smaller chain)."""
    return sorted(records, key=lambda r: (-r["k"], r["length"], Chain.parse(r["chain"]).layers))


def best_static(records: Sequence[dict]) -> dict:
    """The chain of highest accuracy, the shorter first among equals (then the smaller chain)."""
    return ranked_static(records)[0]
