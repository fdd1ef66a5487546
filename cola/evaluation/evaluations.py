"""Evaluations: a chain asked on a task's samples, with what ``cola eval --out`` writes.

An evaluation is its per-sample rows (one :class:`~cola.evaluation.evaluator.Outcome` each, as a dict) and a summary:
where the samples come from, the model's provenance (:mod:`cola.evaluation.provenance`), the accuracy with its 95%
interval (``acc``, and ``acc_norm`` in score mode), the layers computed and the wall time. The policies' and routers'
evaluations (:mod:`cola.policies.evaluation`) give summaries of this shape, with their baselines beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core.chain import Chain
from ..storage import EvalStore, chunks
from ..tasks import Sample
from .evaluator import Evaluator
from .provenance import evaluator_header
from .stats import wilson_interval

Progress = Callable[[int], None]


def eval_header(evaluator: Evaluator, samples: Sequence[Sample], batch: int, *, data: str | None = None,
                split: str | None = None, seed: int = 0, level: int | None = None, carved: bool = False) -> dict:
    """The part of an evaluation's summary that says what was asked: the evaluator's header as a search records it
    (:func:`~cola.evaluation.provenance.evaluator_header`: the model, its weights hash and dtype, the task and how it is
    asked, the software), where the samples come from and how many, and the batch size; for samples named by id (a
    split ``cola bench`` carved), a hash of their ids."""
    import hashlib

    named = {"sample_ids_sha256": hashlib.sha256("\n".join(s.id for s in samples).encode()).hexdigest()} if carved \
        else {}
    return {**evaluator_header(evaluator), "data": data, "level": level, "split": split, "seed": seed,
            "n": len(samples), "batch": batch, **named}


def accuracies(rows: Sequence[dict], mode: str) -> dict:
    """``acc`` (and ``acc_norm`` in score mode) of per-sample rows: right count, share and 95% Wilson interval; also
    ``accuracy`` and ``k``, the ``acc`` figures, at the top level."""
    n, out = len(rows), {}
    for name, field in [("acc", "correct")] + ([("acc_norm", "correct_norm")] if mode == "score" else []):
        k = sum(bool(r[field]) for r in rows)
        out[name] = {"k": k, "accuracy": k / n, "ci": list(wilson_interval(k, n))}
    out["accuracy"], out["k"] = out["acc"]["accuracy"], out["acc"]["k"]
    return out


def evaluate_chain(evaluator: Evaluator, chain: Chain, samples: Sequence[Sample], batch: int, header: dict,
                   name: str | None = None, progress: Progress | None = None,
                   store: EvalStore | None = None) -> tuple[dict, list[dict]]:
    """``samples`` through ``chain``, ``batch`` at a time, each batch recorded in ``store`` as it finishes (resumed
    from it); returns the summary (``header`` from :func:`eval_header`, the accuracies, the chain, the wall time) and
    the per-sample rows."""
    store = store or EvalStore()
    units, seconds = store.stage("chain", chunks(samples, batch),
                                 lambda unit: [o.to_dict() for o in evaluator.evaluate(chain, unit)], progress)
    rows = [row for unit in units for row in unit]
    full = chain.is_full(evaluator.cm.depth)
    summary = {**header, "kind": "chain", "chain": str(chain), "name": name or ("full" if full else str(chain)),
               "mean_length": len(chain), "mean_layers": len(chain), "wall_s": round(seconds, 3),
               "wall_processes": store.processes("chain"), **accuracies(rows, evaluator.config.mode)}
    return summary, rows
