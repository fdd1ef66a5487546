"""A search run: MCTS on every sample of a task, each result stored as it finishes, resumable."""

from __future__ import annotations

import random
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from ..batching import RowDecoder, advance, prompt_segment
from ..chain import Chain
from ..evaluate import Evaluator, Outcome
from ..reuse import PrefixCache
from ..scoring import OptionInputs, finish_scores
from ..store import RunStore
from ..tasks import Sample
from .mcts import Evaluation, MCTSConfig, SearchResult, mcts, search_steps
from .space import SearchSpace

REWARDS = ("correct", "margin")


def sample_rng(seed: int, sample_id: str) -> random.Random:
    """The search randomness of one sample: fixed by the run seed and the sample id, so a resumed run or a different
    sample order gives the same chains."""
    return random.Random(f"{seed}:{sample_id}")


def search_sample(
    evaluator: Evaluator,
    sample: Sample,
    space: SearchSpace,
    config: MCTSConfig,
    seed: int,
    reward: str = "correct",
    progress: bool = False,
    prefix: PrefixCache | None = None,
) -> dict:
    """Run MCTS for one sample and return its record. ``prefix`` is the sample's prefix cache (default: a new one
    of 2 GiB); pass one to read its statistics afterwards."""
    if reward == "margin" and evaluator.mode != "score":
        raise ValueError("--reward margin needs --mode score (a multiple-choice task)")
    prefix = prefix if prefix is not None else PrefixCache()

    def evaluate(chain: Chain) -> Evaluation:
        return _evaluation(chain, evaluator.evaluate_one(chain, sample, prefix), reward)

    start = time.perf_counter()
    with tqdm(total=config.sims, desc=f"  {sample.id}", unit="chain", leave=False, disable=not progress) as bar:
        result = mcts(Chain.full(space.depth), evaluate, space, config, sample_rng(seed, sample.id),
                      lambda n: bar.update(1))
    return make_record(sample, result, time.perf_counter() - start)


def search_samples(
    evaluator: Evaluator,
    samples: Sequence[Sample],
    space: SearchSpace,
    config: MCTSConfig,
    seed: int,
    reward: str = "correct",
    batch: int = 8,
    prefix_bytes: int = 4 << 30,
) -> Iterator[dict]:
    """Search up to ``batch`` samples at once and yield each record as its search ends (not in sample order).

    Each sample's MCTS runs as in :func:`search_sample`, with its own seeded randomness and prefix cache
    (``prefix_bytes`` shared out among the ``batch`` searches); a search that ends makes room for the next sample.
    The searches' current chains run together (:mod:`cola.batching`): in generate mode they decode in one
    :class:`~cola.batching.RowDecoder`, and a search whose chain has finished gets its next chain in at the next
    step; in score mode every search's chain prefills its prompt in the same layer calls. Outcomes equal
    :func:`search_sample`'s up to the rounding of packed matrix products."""
    if reward == "margin" and evaluator.mode != "score":
        raise ValueError("--reward margin needs --mode score (a multiple-choice task)")
    cm, task = evaluator.cm, evaluator.task
    waiting, active = iter(samples), []
    decoder = RowDecoder(cm, evaluator.max_new_tokens or task.max_new_tokens)

    def submit(search: _Search) -> None:  # generate mode: the chain joins the decoder
        decoder.add(search, search.chain, search.ids, search.prefix, lambda text: task.is_done(text, search.sample))

    def decoded() -> list[tuple[_Search, Outcome]]:
        return [(search, evaluator.grade_text(search.chain, search.sample, search.prompt, generation.text))
                for search, generation in decoder.step()]

    def scored() -> list[tuple[_Search, Outcome]]:
        segments = [prompt_segment(cm, search.chain, search.ids, search.prefix) for search in active]
        logits = advance(cm, segments)
        return [(search, evaluator.grade_scores(search.chain, search.sample, search.prompt, finish_scores(
                    cm, search.chain, search.inputs, logits[b : b + 1], segment.row.cache)))
                for b, (search, segment) in enumerate(zip(active, segments))]

    score = evaluator.mode == "score"
    evaluate, joined = (scored, lambda search: None) if score else (decoded, submit)

    def start() -> None:
        sample = next(waiting, None)
        if sample is None:
            return
        steps = search_steps(Chain.full(space.depth), space, config, sample_rng(seed, sample.id))
        prompt = evaluator.prompt(sample)
        inputs = evaluator.option_inputs(sample, prompt) if score else None
        ids = torch.tensor([inputs.context], device=cm.device) if score else evaluator.prompt_ids(sample)
        search = _Search(sample, steps, next(steps), PrefixCache(prefix_bytes // batch), time.perf_counter(), ids,
                         prompt, inputs)
        active.append(search)
        joined(search)

    for _ in range(batch):
        start()
    while active:
        for search, outcome in evaluate():
            try:
                search.chain = search.steps.send(_evaluation(search.chain, outcome, reward))
                joined(search)
            except StopIteration as stop:
                active.remove(search)
                yield make_record(search.sample, stop.value, time.perf_counter() - search.start)
                start()


@dataclass
class _Search:
    """One sample's search in flight: its coroutine and the chain it waits to have evaluated."""

    sample: Sample
    steps: Generator[Chain, Evaluation, SearchResult]
    chain: Chain
    prefix: PrefixCache
    start: float
    ids: torch.Tensor  # the prompt's token ids (score mode: the options' shared context)
    prompt: str
    inputs: OptionInputs | None  # score mode: the options as token ids


def _evaluation(chain: Chain, outcome: Outcome, reward: str) -> Evaluation:
    value = outcome.margin if reward == "margin" else float(outcome.correct)
    return Evaluation(chain, outcome.answer, outcome.correct, float(value))


def _evaluation_dict(e: Evaluation | None) -> dict | None:
    if e is None:
        return None
    return {"chain": str(e.chain), "length": len(e.chain), "answer": e.answer, "correct": e.correct, "reward": e.reward}


def make_record(sample: Sample, result: SearchResult, wall_time: float) -> dict:
    """The stored record of one sample: what the full model did, every chain tried, the best and shortest correct."""
    evaluations = [_evaluation_dict(e) for e in result.evaluations]
    first_correct = next((i for i, e in enumerate(result.evaluations[1:], 1) if e.correct), None)
    return {
        "id": sample.id,
        "gold": sample.gold,
        "true_gold": sample.meta.get("true_gold", sample.gold),
        "full": _evaluation_dict(result.root),
        "best": _evaluation_dict(result.best()),
        "shortest_correct": _evaluation_dict(result.shortest_correct()),
        "evaluations": evaluations,
        "simulations": result.simulations,
        "unique_evaluations": len(evaluations) - 1,
        "first_correct_at": first_correct,
        "wall_time": round(wall_time, 3),
    }


def run_search(
    evaluator: Evaluator,
    samples: Sequence[Sample],
    store: RunStore,
    space: SearchSpace,
    config: MCTSConfig,
    seed: int,
    reward: str = "correct",
    progress: bool = True,
    batch: int = 1,
    prefix_bytes: int = 4 << 30,
) -> list[dict]:
    """Search every sample not yet in the store, appending each record as it finishes; returns all records.
    ``batch > 1`` searches that many samples at once (:func:`search_samples`); ``prefix_bytes`` bounds the memory
    of the prefix caches of the searches in flight."""
    done = store.finished_ids()
    todo = [s for s in samples if s.id not in done]
    with tqdm(desc="samples", unit="sample", disable=not progress, initial=len(samples) - len(todo),
              total=len(samples)) as bar:
        if batch > 1:
            records = search_samples(evaluator, todo, space, config, seed, reward, batch, prefix_bytes)
        else:
            records = (search_sample(evaluator, sample, space, config, seed, reward, progress,
                                     PrefixCache(prefix_bytes)) for sample in todo)
        for record in records:
            store.append(record)
            bar.update(1)
    by_id = {r["id"]: r for r in store.records()}
    return [by_id[s.id] for s in samples if s.id in by_id]


def run_config(evaluator: Evaluator, space: SearchSpace, config: MCTSConfig, **extra) -> dict:
    """Everything that decides a run's results, for ``config.json``."""
    from .. import __version__

    return {
        "model": evaluator.cm.name,
        "task": evaluator.task.name,
        "mode": evaluator.mode,
        "chat": evaluator.chat,
        "score_style": evaluator.score_style,
        "max_new_tokens": evaluator.max_new_tokens or evaluator.task.max_new_tokens,
        "depth": space.depth,
        "space": {k: v for k, v in asdict(space).items() if k != "depth"},
        "length_bounds": list(space.bounds),
        "mcts": asdict(config),
        "version": __version__,
        **extra,
    }


