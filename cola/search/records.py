"""The search record: what one sample's search (or control) found, one JSON line of a run's ``records.jsonl``.

A record holds the sample's id and gold (``true_gold`` too for a decoy run), the full chain's evaluation, every chain
evaluated in order, the best and the shortest correct chain, and the search's cost. The search (:mod:`cola.search.run`),
its controls (:mod:`cola.search.menu`, :mod:`cola.search.sampling`) write records with :func:`make_record`; the
report (:mod:`cola.report.analysis`) and the router read them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..tasks import Sample
from .mcts import Evaluation, SearchResult


def evaluation_dict(e: Evaluation | None) -> dict | None:
    if e is None:
        return None
    return {"chain": str(e.chain), "length": len(e.chain), "answer": e.answer, "correct": e.correct, "reward": e.reward}


def make_record(sample: Sample, result: SearchResult, wall_time: float) -> dict:
    """The stored record of one sample: what the full model did, every chain tried, the best and shortest correct."""
    evaluations = [evaluation_dict(e) for e in result.evaluations]
    first_correct = next((i for i, e in enumerate(result.evaluations[1:], 1) if e.correct), None)
    return {
        "id": sample.id,
        "gold": sample.gold,
        "true_gold": sample.meta.get("true_gold", sample.gold),
        "full": evaluation_dict(result.root),
        "best": evaluation_dict(result.best()),
        "shortest_correct": evaluation_dict(result.shortest_correct()),
        "evaluations": evaluations,
        "simulations": result.simulations,
        "unique_evaluations": len(evaluations) - 1,
        "first_correct_at": first_correct,
        "wall_time": round(wall_time, 3),
    }


def ordered_records(records: Sequence[dict], samples: Sequence[Sample]) -> list[dict]:
    """The records of ``samples``, in their order (a sample without a record is left out)."""
    by_id = {r["id"]: r for r in records}
    return [by_id[s.id] for s in samples if s.id in by_id]


def headline(records: Sequence[dict]) -> dict:
    """A run's headline over its records: samples, the full model's right count (``original``), the right count of
    the best chain found per sample (``oracle``: chosen with the gold answer) and the best chains' mean length."""
    n = len(records)
    return {"n": n, "original": sum(bool(r["full"]["correct"]) for r in records),
            "oracle": sum(bool(r["best"]["correct"]) for r in records),
            "mean_best_length": sum(r["best"]["length"] for r in records) / n if n else float("nan")}
