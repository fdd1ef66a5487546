"""The best-of-N sampling control: the full model, no search, N tries per sample drawn from its own distribution.

An oracle figure counts a sample right when any of N tries is right. With the same N as the search's budget, this
control says how much of the search's "wrong -> right" any N tries of the unchanged model reach: in generate mode
N answers sampled at temperature 1.0 (seeded per sample and try), in score mode N options drawn from the softmax of
the options' log-likelihoods. The first evaluation of a record is the greedy answer, as the full chain's is in a
search record, so pass@k is comparable.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence

from ..core.chain import Chain
from ..evaluation.evaluator import Evaluator
from ..inference.generation import Sampler
from ..tasks import Sample
from .mcts import Evaluation, SearchResult
from .records import make_record


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def sampling_records(
    evaluator: Evaluator,
    samples: Sequence[Sample],
    draws: int,
    seed: int,
    on_evaluation: Callable[[], None] | None = None,
) -> Iterator[dict]:
    """One record per sample (the shape of a search record, every evaluation the full chain): the greedy answer,
    then ``draws`` sampled ones."""
    full = Chain.full(evaluator.cm.depth)
    for sample in samples:
        start = time.perf_counter()
        greedy = evaluator.evaluate_one(full, sample)
        if evaluator.config.mode == "score":
            top = max(greedy.output)
            weights = [math.exp(lp - top) for lp in greedy.output]
            rng = random.Random(_seed(seed, sample.id, "options"))
            answers = [sample.labels[i] for i in rng.choices(range(len(weights)), weights, k=draws)]
            tries = [(answer, answer == sample.gold) for answer in answers]
        else:
            requests = evaluator.requests()
            for d in range(draws):
                requests.submit(d, full, sample, sampler=Sampler(_seed(seed, sample.id, d)))
            outcomes = requests.drain()
            tries = [(outcomes[d].answer, outcomes[d].correct) for d in range(draws)]
        evaluations = [Evaluation(full, greedy.answer, greedy.correct, float(greedy.correct))]
        for answer, correct in tries:
            evaluations.append(Evaluation(full, answer, correct, float(correct)))
            if on_evaluation is not None:
                on_evaluation()
        yield make_record(sample, SearchResult(evaluations, draws), time.perf_counter() - start)
