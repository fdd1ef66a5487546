"""A search run: MCTS on every sample of a task, each result stored as it finishes, resumable."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass

from tqdm import tqdm

from ..core.chain import Chain
from ..core.prefix_cache import PrefixCache
from ..errors import UsageError
from ..evaluation.evaluator import EvalConfig, Evaluator, Outcome
from ..evaluation.provenance import evaluator_header
from ..tasks import Sample
from .mcts import Evaluation, MCTSConfig, SearchResult, search_steps
from .presets import REWARDS
from .records import make_record, ordered_records
from .space import SearchSpace
from ..storage import RunStore


def sample_rng(seed: int, sample_id: str) -> random.Random:
    """The search randomness of one sample: fixed by the run seed and the sample id, so a resumed run or a different
    sample order gives the same chains."""
    return random.Random(f"{seed}:{sample_id}")


def search_samples(
    evaluator: Evaluator,
    samples: Sequence[Sample],
    space: SearchSpace,
    config: MCTSConfig,
    seed: int,
    reward: str = "correct",
    batch: int = 1,
    prefix_bytes: int = 4 << 30,
    on_evaluation: Callable[[], None] | None = None,
) -> Iterator[dict]:
    """Search up to ``batch`` samples at once and yield each record as its search ends (with ``batch > 1`` not in
    sample order).

    Each sample's MCTS (:func:`~cola.search.mcts.search_steps`) runs with its own seeded randomness and its own
    prefix cache (``prefix_bytes`` shared out among the ``batch`` searches); a search that ends makes room for the
    next sample. The searches' current chains run together as the evaluator's
    :class:`~cola.evaluation.evaluator.Requests`: in generate mode they decode with continuous batching (a search whose
    chain has finished gets its next chain in at the next step), in score mode every search's chain prefills its prompt
    in the same layer calls. ``batch=1`` runs each chain alone, exactly; larger batches give outcomes equal up to the
    rounding of packed matrix products. ``on_evaluation()`` is called after every chain evaluated."""
    if reward not in REWARDS:
        raise UsageError(f"reward must be one of {REWARDS}, not {reward!r}")
    if reward == "margin" and evaluator.config.mode != "score":
        raise UsageError("--reward margin needs --mode score (a multiple-choice task)")
    if batch < 1:
        raise UsageError(f"batch must be at least 1, not {batch}")
    waiting, requests = iter(samples), evaluator.requests()

    def start() -> None:
        sample = next(waiting, None)
        if sample is not None:
            steps = search_steps(Chain.full(space.depth), space, config, sample_rng(seed, sample.id))
            search = _Search(sample, steps, next(steps), PrefixCache(prefix_bytes // batch), time.perf_counter())
            requests.submit(search, search.chain, sample, search.prefix)

    for _ in range(batch):
        start()
    while requests:
        for search, outcome in requests.step():
            if on_evaluation is not None:
                on_evaluation()
            try:
                search.chain = search.steps.send(_evaluation(search.chain, outcome, reward))
                requests.submit(search, search.chain, search.sample, search.prefix)
            except StopIteration as stop:
                yield make_record(search.sample, stop.value, time.perf_counter() - search.start)
                start()


@dataclass(eq=False)
class _Search:
    """One sample's search in flight: its coroutine and the chain it waits to have evaluated."""

    sample: Sample
    steps: Generator[Chain, Evaluation, SearchResult]
    chain: Chain
    prefix: PrefixCache
    start: float


def _evaluation(chain: Chain, outcome: Outcome, reward: str) -> Evaluation:
    value = outcome.margin if reward == "margin" else float(outcome.correct)
    return Evaluation(chain, outcome.answer, outcome.correct, float(value))


def resume(store: RunStore, samples: Sequence[Sample],
           search: Callable[[list[Sample], Callable[[], None]], Iterator[dict]], progress: bool = True,
           desc: str = "samples") -> list[dict]:
    """The one resume loop: ``search(todo, on_evaluation)`` gets the samples not yet in the store and yields their
    records, each appended (durably) as it comes; returns the records of ``samples``, in their order. A single
    process (:func:`run_search`) and a Ray driver (:mod:`cola.search.distributed`) both run through here."""
    done = store.finished_ids()
    todo = [s for s in samples if s.id not in done]
    with tqdm(desc=desc, unit="sample", disable=not progress, initial=len(samples) - len(todo),
              total=len(samples), dynamic_ncols=True) as bar:
        chains = [0]

        def counted() -> None:
            chains[0] += 1
            if chains[0] % 10 == 0:
                bar.set_postfix(chains=chains[0], refresh=True)

        for record in search(todo, counted):
            store.append(record)
            bar.update(1)
    return ordered_records(store.records(), samples)


def run_search(job: SearchJob, evaluator: Evaluator, samples: Sequence[Sample], store: RunStore,
               progress: bool = True) -> list[dict]:
    """Search every sample not yet in the store (:meth:`SearchJob.search`) in this process, appending each record
    as it finishes (:func:`resume`); returns the records of ``samples``, in their order."""
    return resume(store, samples, lambda todo, counted: job.search(evaluator, todo, counted), progress)


@dataclass(frozen=True)
class SearchJob:
    """Everything a search run is besides its samples, as plain values, so that another process (a Ray worker,
    :mod:`cola.search.distributed`) can rebuild the model, task, evaluator and search space from it."""

    model: str
    task: str
    eval_config: EvalConfig = EvalConfig()  # how the task is asked
    device: str | None = None
    dtype: str | None = None
    allow_untested: bool = False
    actions: str = "all"
    max_k: int = 4
    max_r: int = 4
    min_len: int | None = None
    max_len: int | None = None
    mcts: MCTSConfig = MCTSConfig()
    seed: int = 0
    reward: str = "correct"
    control: str = "none"
    menu: dict | None = None  # the menu control's chains -> the ids they got right (cola.search.menu.load_menu)
    level: int | None = None
    split: str | None = None  # the benchmark split the samples come from (None: a user file or generated)
    data: str | None = None
    batch: int = 1
    prefix_bytes: int = 4 << 30
    lm_eval_include: str | None = None  # where an lm-eval task's YAML is (a task named lm-eval:NAME)
    generated_n: int | None = None  # a generated task's samples drawn from more than were searched (`cola bench`)

    def evaluator(self) -> Evaluator:
        """Load the model and ask the task through it."""
        from ..core.loading import load_model
        from ..tasks import get_task

        cm = load_model(self.model, device=self.device, dtype=self.dtype, allow_untested=self.allow_untested)
        return Evaluator(cm, get_task(self.task, self.lm_eval_include), self.eval_config)

    def space(self, depth: int) -> SearchSpace:
        """The search space over chains of a model of ``depth`` layers."""
        return SearchSpace(depth, self.actions, self.max_k, self.max_r, self.min_len, self.max_len)

    def run_config(self, evaluator: Evaluator, samples: Sequence[Sample], **extra) -> dict:
        """The run's ``config.json`` (:func:`run_config`) for these samples. Every sample is prepared first, so one
        too long for the model is refused here, before any search (every launch asks for the config first)."""
        evaluator.check(samples)
        if self.menu is not None:
            from .menu import menu_hash

            extra = {"menu": menu_hash(self.menu), **extra}
        if self.eval_config.truncate:  # recorded only when set, so that earlier runs resume
            extra = {"truncate": True, **extra}
        if self.lm_eval_include is not None:
            extra = {"lm_eval_include": str(self.lm_eval_include), **extra}
        if self.generated_n is not None:
            extra = {"generated_n": self.generated_n, **extra}
        return run_config(evaluator, self.space(evaluator.cm.depth), self.mcts, seed=self.seed, reward=self.reward,
                          n=len(samples), level=self.level, split=self.split, data=self.data,
                          sample_ids=[s.id for s in samples],
                          control=self.control, batch=self.batch, **extra)

    def search(self, evaluator: Evaluator, samples: Sequence[Sample],
               on_evaluation: Callable[[], None] | None = None) -> Iterator[dict]:
        """:func:`search_samples` of ``samples`` with this job's settings; for the sampling control, its records
        (:func:`~cola.search.sampling.sampling_records`, as many tries as the search's budget)."""
        if self.control == "sample":
            from .sampling import sampling_records

            return sampling_records(evaluator, samples, self.mcts.sims, self.seed, on_evaluation)
        if self.control == "menu":
            from .menu import menu_records

            return menu_records(evaluator, samples, self.menu, self.mcts.sims, on_evaluation)
        return search_samples(evaluator, samples, self.space(evaluator.cm.depth), self.mcts, self.seed, self.reward,
                              self.batch, self.prefix_bytes, on_evaluation)


def run_config(evaluator: Evaluator, space: SearchSpace, config: MCTSConfig, **extra) -> dict:
    """Everything that decides a run's results, for ``config.json``, with its provenance: the dtype and a content hash
    of the weights (a resume under others is refused) and the software and device (a resume under others is
    warned about, :class:`~cola.storage.RunStore`)."""
    return {
        **evaluator_header(evaluator),
        "depth": space.depth,
        "space": {k: v for k, v in asdict(space).items() if k != "depth"},
        "length_bounds": list(space.bounds),
        "mcts": config.to_config(),
        **extra,
    }


def run_samples(config: dict, data: str | None = None) -> list[Sample]:
    """The samples of a run, in its config's order, as it searched them (decoy golds for a decoy run), read again
    from its data (a file or a folder, as recorded; ``data`` overrides it, e.g. when the run was made elsewhere)."""
    from pathlib import Path

    from ..tasks import DataError, get_task, load_samples, with_control

    task = get_task(config["task"], config.get("lm_eval_include"))
    data = data if data is not None else config.get("data")
    if task.generator is not None and data is None:
        samples = load_samples(task, n=config.get("generated_n", config["n"]), seed=config["seed"])
    else:
        is_file = data is not None and Path(data).is_file()
        samples = load_samples(task, None if is_file else data, data if is_file else None, n=0,
                               level=config.get("level"), split=None if is_file else config.get("split"))
    by_id = {s.id: s for s in samples}
    missing = [i for i in config["sample_ids"] if i not in by_id]
    if missing:
        raise DataError(f"{len(missing)} sample(s) of the run are not in its data ({data}), first: {missing[:3]}")
    return with_control([by_id[i] for i in config["sample_ids"]], config.get("control"))
