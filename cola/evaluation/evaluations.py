"""Evaluations: a chain, or a router, asked on a task's samples, with what ``cola eval --out`` writes.

An evaluation is its per-sample rows (one :class:`~cola.evaluation.evaluator.Outcome` each, as a dict) and a summary:
where the samples come from, the model's provenance (:mod:`cola.evaluation.provenance`), the accuracy with its 95%
interval (``acc``, and ``acc_norm`` in score mode), the layers computed and the wall time. A router's summary also holds
its baselines on the same samples (full depth, a random pick from its library), each paired with the router by McNemar's
exact test, and how many of the samples the router saw when it was fitted or selected.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.chain import Chain
from ..errors import UsageError
from ..policies.library_router import Router, routed_outcomes
from ..search.store import EvalStore, chunks
from ..tasks import Sample
from .evaluator import Evaluator, Outcome
from .provenance import evaluator_header
from .stats import paired, wilson_interval

Progress = Callable[[int], None]


def eval_header(evaluator: Evaluator, samples: Sequence[Sample], batch: int, *, data: str | None = None,
                split: str | None = None, seed: int = 0, level: int | None = None) -> dict:
    """The part of an evaluation's summary that says what was asked: the evaluator's header as a search records it
    (:func:`~cola.evaluation.provenance.evaluator_header`: the model, its weights hash and dtype, the task and how it is
    asked, the software), where the samples come from and how many, and the batch size."""
    return {**evaluator_header(evaluator), "data": data, "level": level, "split": split, "seed": seed,
            "n": len(samples), "batch": batch}


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


def _same_file(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def evaluate_router(router: Router, evaluator: Evaluator, samples: Sequence[Sample], batch: int, header: dict,
                    name: str | None = None, seed: int = 0, progress: Callable[[str, int], None] | None = None,
                    store: EvalStore | None = None) -> tuple[dict, list[dict]]:
    """Every sample through the chain ``router`` picks for it, then full depth and a *random pick* from the same
    library with the router's pick frequencies on the same samples (seeded by ``seed``), each paired with the router
    (McNemar); each batch of each stage is recorded in ``store`` as it finishes (resumed from it).
    ``progress(stage, done)`` names the stage (``router``, ``full``, ``random pick``). Returns the summary and the
    per-sample rows (the routed outcome, its layers computed, and the baselines' verdicts)."""
    cm = evaluator.cm
    fitted = router.config
    if (fitted["mode"], fitted["score_style"], fitted["chat"]) != (evaluator.config.mode, evaluator.config.score_style,
                                                                    evaluator.config.chat):
        raise UsageError(f"the router was fitted in {fitted['mode']} mode (score style {fitted['score_style']}, chat "
                         f"{fitted['chat']}): its features are of those prompts; evaluate it the same way (--mode, "
                         "--score-style, --no-chat)")
    fitted_ids = set(fitted.get("train_ids", [])) | set(fitted.get("dev_ids", []))
    same_data = evaluator.task.splits or any(_same_file(fitted.get(k), header.get("data")) for k in ("data", "dev_split"))
    seen = [s.id for s in samples if s.id in fitted_ids] if fitted.get("task") == evaluator.task.name and same_data else []

    def stage(label: str) -> Progress | None:
        return None if progress is None else (lambda done: progress(label, done))

    store = store or EvalStore()

    def routed_unit(unit: Sequence[Sample]) -> list[dict]:
        return [{"chain": str(chain), "layers": layers, "outcome": outcome.to_dict()}
                for chain, layers, outcome in routed_outcomes(router, evaluator, unit, len(unit))]

    units, routed_s = store.stage("router", chunks(samples, batch), routed_unit, stage("router"))
    routed = [(Chain.parse(r["chain"]), r["layers"], Outcome(**r["outcome"])) for unit in units for r in unit]
    full_chain = Chain.full(cm.depth)
    units, full_s = store.stage("full", chunks(samples, batch),
                                lambda unit: [o.correct for o in evaluator.evaluate(full_chain, unit)], stage("full"))
    full_correct = [c for unit in units for c in unit]
    picks = Counter(str(chain) for chain, _, _ in routed)
    rng = random.Random(f"{seed}:random-pick")
    drawn = rng.choices(sorted(picks), weights=[picks[c] for c in sorted(picks)], k=len(samples))
    assigned = dict(zip((s.id for s in samples), drawn))
    groups = [[s for s, c in zip(samples, drawn) if c == chain] for chain in dict.fromkeys(drawn)]
    units, _ = store.stage("random pick", [unit for group in groups for unit in chunks(group, batch)],
                           lambda unit: [o.correct for o in evaluator.evaluate(Chain.parse(assigned[unit[0].id]), unit)],
                           stage("random pick"))
    random_correct = dict(zip((s.id for group in groups for s in group), (c for unit in units for c in unit)))
    rows = [{**outcome.to_dict(), "layers": layers, "full_correct": f, "random_chain": drawn[i],
             "random_correct": random_correct[samples[i].id]}
            for i, ((chain, layers, outcome), f) in enumerate(zip(routed, full_correct))]
    n = len(rows)

    def versus(field: str) -> dict:
        p = paired({r["id"]: bool(r["correct"]) for r in rows}, {r["id"]: bool(r[field]) for r in rows})
        return {"k": p["b_right"], "accuracy": p["b_right"] / n, "ci": list(wilson_interval(p["b_right"], n)),
                "router_only": p["a_only"], "other_only": p["b_only"], "mcnemar_p": p["mcnemar_p"]}

    full = str(Chain.full(cm.depth))
    summary = {
        **header, "kind": "router", "router": str(router.folder), "name": name or f"router {router.folder}",
        "library": [str(c) for c in router.library], "setting": router.setting.__dict__,
        "fitted_on": {key: fitted.get(key) for key in ("task", "split", "data", "control", "runs")},
        "seen_in_fit": len(seen), "seen_ids": seen[:20],
        "mean_length": sum(len(chain) for chain, _, _ in routed) / n,
        "mean_layers": sum(layers for _, layers, _ in routed) / n, "routed_s": round(routed_s, 3),
        "wall_processes": store.processes("router", "full"),
        "picks": dict(picks.most_common()), "full_share": picks.get(full, 0) / n,
        "baselines": {"full": {**versus("full_correct"), "mean_length": cm.depth, "wall_s": round(full_s, 3)},
                      "random_pick": {**versus("random_correct"),
                                      "mean_length": sum(len(Chain.parse(c)) for c in drawn) / n}},
        **accuracies(rows, evaluator.config.mode)}
    return summary, rows
