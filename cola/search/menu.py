"""The fixed-menu control: no search, the same chains tried on every sample.

A menu ranks the chains of an earlier run (the same task's train split, or the same run: then leave-one-out) by
the number of samples they answered right there, the shorter first among equals. Each sample tries the full chain,
then the menu's first chains up to the search's budget; pass@k of this run against the search's own says how much
of a per-sample oracle a fixed list of chains, chosen without the sample, already reaches. A sample that is in the
menu's run is left out of its own ranking (leave-one-out), so its gold answer never chooses its chains.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..core.chain import Chain
from ..core.prefix_cache import PrefixCache
from ..errors import UsageError
from ..evaluation.evaluator import Evaluator
from ..tasks import Sample
from .mcts import Evaluation, SearchResult
from .records import make_record
from ..storage import read_config, read_records


def load_menu(folder: str | Path, model: str) -> dict[str, list[str]]:
    """Chain -> ids of the samples it answered right in the run at ``folder``, which must be a per-sample search of
    the same model (by name)."""
    config = read_config(folder)
    if config.get("static") or "mcts" not in config:
        raise UsageError(f"{folder} is not a per-sample search run; a menu is built from one")
    if config["model"] != model:
        raise UsageError(f"{folder} is a run of another model ({config['model']}, {config['depth']} layers); the menu "
                         f"must come from a run of {model}")
    records = read_records(folder)
    if not records:
        raise UsageError(f"{folder} has no finished records to build a menu from")
    return right_samples(records)


def right_samples(records: Sequence[dict]) -> dict[str, list[str]]:
    """Chain -> ids of the samples it answered right in search ``records``."""
    menu: dict[str, list[str]] = {}
    for record in records:
        for e in record["evaluations"]:
            if e["correct"]:
                menu.setdefault(e["chain"], []).append(record["id"])
    return menu


def menu_hash(menu: dict[str, list[str]]) -> str:
    """A content hash of a menu, for a run's config (another menu gives other results)."""
    return "sha256:" + hashlib.sha256(json.dumps(menu, sort_keys=True).encode()).hexdigest()


def ranked(menu: dict[str, list[str]], sample_id: str) -> list[Chain]:
    """The menu's chains by the samples they got right other than ``sample_id``, the shorter first among equals."""
    counts = {c: sum(1 for i in ids if i != sample_id) for c, ids in menu.items()}
    chains = [(count, Chain.parse(c)) for c, count in counts.items() if count]
    return [chain for _, chain in sorted(chains, key=lambda x: (-x[0], len(x[1]), x[1].layers))]


def menu_records(
    evaluator: Evaluator,
    samples: Sequence[Sample],
    menu: dict[str, list[str]],
    budget: int,
    on_evaluation: Callable[[], None] | None = None,
) -> Iterator[dict]:
    """One record per sample (the shape of a search record): the full chain, then the first ``budget`` chains of
    the menu ranked without the sample, all asked together."""
    full = Chain.full(evaluator.cm.depth)
    for sample in samples:
        start = time.perf_counter()
        chains = [full] + [c for c in ranked(menu, sample.id) if c != full][:budget]
        requests, prefix = evaluator.requests(), PrefixCache()
        for i, chain in enumerate(chains):
            requests.submit(i, chain, sample, prefix)
        outcomes = requests.drain(None if on_evaluation is None else lambda i, _: i and on_evaluation())
        evaluations = [Evaluation(c, outcomes[i].answer, outcomes[i].correct, float(outcomes[i].correct))
                       for i, c in enumerate(chains)]
        yield make_record(sample, SearchResult(evaluations, len(chains) - 1), time.perf_counter() - start)
