"""A policy evaluation: its per-sample rows and a summary in the shape of :mod:`cola.evaluation.evaluations`' (what
``cola eval --out`` writes), with full depth run in the same process on the same samples, paired (McNemar) and timed
side by side."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from ..core.chain import Chain
from ..errors import UsageError
from ..evaluation.evaluations import accuracies
from ..evaluation.evaluator import Evaluator
from ..evaluation.stats import paired, wilson_interval
from ..search.store import EvalStore
from ..tasks import Sample
from .calibrate import sweep, table_requests
from .harness import ask_table, replay, run_policy
from .spec import ChainPolicy, PolicySpec

FULL = ChainPolicy()


def _mean(rows: Sequence[dict], field: str) -> float:
    return sum(r[field] for r in rows) / max(len(rows), 1)


def evaluate_policy(spec: PolicySpec, evaluator: Evaluator, samples: Sequence[Sample], batch: int, header: dict,
                    name: str | None = None, router=None, calibration: dict | None = None,
                    family: Sequence[PolicySpec] = (), replayed: bool = False,
                    progress: Callable[[str, int], None] | None = None,
                    store: EvalStore | None = None) -> tuple[dict, list[dict]]:
    """``samples`` answered by ``spec`` (timed), then by full depth (timed, same harness), after one untimed warm-up
    batch. ``calibration`` is what :func:`~cola.policies.calibrate.calibrate` returned, if the spec came from it
    (the summary counts the samples it saw); ``family`` (the calibrated family) is also swept on these samples, for
    the report's curve: one table of answers, replayed per setting. With ``replayed`` (and a ``family``), the policy
    and full depth are replayed from that table instead of run again: the same answers and layers (the harness is
    one), at the cost of one pass, and no wall times. Each batch of each stage (``sweep``, ``policy``, ``full``) is
    recorded in ``store`` as it finishes and read back on a resume; wall times are then sums of the batches' times
    over the processes that ran them (``wall_processes``). ``progress(stage, done)`` names the stage."""

    def stage(label: str):
        return None if progress is None else (lambda done: progress(label, done))

    store = store or EvalStore()
    depth = evaluator.cm.depth
    points, table = None, None
    if family:
        table = ask_table(evaluator, samples, table_requests(family, depth), spec, batch, stage("sweep"), store,
                          "sweep")
        points = sweep(family, samples, table, depth, evaluator.config.mode)
    if replayed:
        if table is None or spec.routed:
            raise UsageError("a replayed evaluation needs the sweep's table (--sweep), and a router is not swept")
        chains = spec.check(depth, evaluator.config.mode)
        rows = [replay(spec, chains, s, t) for s, t in zip(samples, table)]
        full = [replay(FULL, [Chain.full(depth)], s, t) for s, t in zip(samples, table)]
        policy_s = full_s = None
    else:
        run_policy(FULL, evaluator, samples[:batch], batch)  # warm-up: the first calls of a process are slow
        rows = run_policy(spec, evaluator, samples, batch, router, stage("policy"), store, "policy")
        full = run_policy(FULL, evaluator, samples, batch, progress=stage("full"), store=store, stage="full")
        policy_s, full_s = store.seconds("policy"), store.seconds("full")
    for row, f in zip(rows, full):
        row["full_answer"], row["full_correct"] = f["answer"], f["correct"]
    n = len(rows)
    p = paired({r["id"]: r["correct"] for r in rows}, {r["id"]: r["full_correct"] for r in rows})
    seen: list[str] = []
    if calibration is not None and calibration.get("task") == header["task"] and calibration.get("split") == header[
            "split"]:
        ids = set(calibration["ids"])
        seen = [s.id for s in samples if s.id in ids]
    summary = {
        **header, "kind": "policy", "policy": spec.to_dict(), "name": name or spec.describe(evaluator.config.mode),
        "mean_layers": _mean(rows, "layers"), "mean_length": _mean(rows, "positions"),
        "mean_chains": _mean(rows, "chains_asked"), "mean_tokens": _mean(rows, "tokens"),
        "mean_layer_tokens": _mean(rows, "layer_tokens"),
        "agreement": sum(r["answer"] == r["full_answer"] for r in rows) / n,
        "wall_s": None if policy_s is None else round(policy_s, 3), "replayed": replayed,
        "wall_processes": None if policy_s is None else store.processes("policy", "full"),
        "stops": dict(Counter(r["stop"] for r in rows).most_common()),
        "baselines": {"full": {"k": p["b_right"], "accuracy": p["b_right"] / n,
                               "ci": list(wilson_interval(p["b_right"], n)), "policy_only": p["a_only"],
                               "other_only": p["b_only"], "mcnemar_p": p["mcnemar_p"],
                               "mean_layers": _mean(full, "layers"), "mean_tokens": _mean(full, "tokens"),
                               "mean_layer_tokens": _mean(full, "layer_tokens"),
                               "wall_s": None if full_s is None else round(full_s, 3)}},
        "layers_ratio": _mean(rows, "layers") / max(_mean(full, "layers"), 1e-9),
        "wall_ratio": None if policy_s is None else policy_s / max(full_s, 1e-9),
        "calibration": None if calibration is None else {k: v for k, v in calibration.items() if k != "ids"},
        "seen_in_calibration": len(seen), "seen_ids": seen[:20],
        **accuracies(rows, "generate")}  # one answer per input: acc (a policy has no separate acc_norm)
    if points is not None:
        summary["sweep"] = points
    return summary, rows

