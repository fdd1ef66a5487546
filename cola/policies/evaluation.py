"""A policy evaluation, and a library router's: per-sample rows and a summary in the shape of
:mod:`cola.evaluation.evaluations`' (what ``cola eval --out`` writes), with full depth run in the same process on the
same samples, paired (McNemar) and timed side by side. A router's summary also holds a random pick from its library
on the same samples, paired with it, and how many of the samples the router saw when it was fitted or selected."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.chain import Chain
from ..errors import UsageError
from ..evaluation.evaluations import Progress, accuracies
from ..evaluation.evaluator import Evaluator, Outcome
from ..evaluation.stats import paired, wilson_interval
from ..storage import EvalStore, chunks
from ..tasks import Sample
from .calibrate import sweep, table_requests
from .harness import ask_table, replay, run_policy
from .library_router import Router, routed_outcomes
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
