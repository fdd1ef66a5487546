"""Choosing a policy's free settings on dev, never on test: a cascade's thresholds, a vote's k and rule, the number
of samples and the temperature of self-consistency.

The settings of one family (each kind's :meth:`~cola.policies.spec.PolicySpec.family`) are swept over a table of answers (every request each setting could make, asked once per
dev input, :func:`~cola.policies.harness.ask_table`) and one is chosen by an *objective*:

- ``consistency=S``: the setting that computes the fewest layers while its answers agree with full depth's on at
  least a share ``S`` of the inputs: it needs no labels at all (CALM's calibration);
- ``budget=B``: the most accurate setting within ``B`` × depth layers computed per input (dev labels);
- ``accuracy``: the most accurate setting (dev labels), the cheaper among equals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core.chain import Chain
from ..errors import UsageError
from ..evaluation.evaluator import Evaluator
from ..storage import EvalStore
from ..tasks import Sample
from .harness import ask_table, replay
from .spec import Asked, PolicySpec, Request

OBJECTIVES = ("consistency", "budget", "accuracy")


def parse_objective(text: str) -> tuple[str, float | None]:
    """``consistency=0.95``, ``budget=0.85`` or ``accuracy`` as (name, value)."""
    name, _, value = text.partition("=")
    if name not in OBJECTIVES:
        raise UsageError(f"unknown calibration objective {text!r}; use consistency=S, budget=B or accuracy")
    if name == "accuracy":
        if value:
            raise UsageError("the accuracy objective takes no value")
        return name, None
    try:
        share = float(value)
    except ValueError:
        raise UsageError(f"{name} needs a share in (0, 1]: {name}=0.95, not {text!r}") from None
    if not 0 < share <= 1:
        raise UsageError(f"{name}={share}: the share must be in (0, 1]")
    return name, share


def table_requests(family: Sequence[PolicySpec], depth: int) -> list[Request]:
    """Every request a setting of ``family`` can make, full depth first (the reference of agreement), each once."""
    requests = [Request(Chain.full(depth))] + [r for spec in family for r in spec.requests(depth)]
    return list({r.key: r for r in requests}.values())


def sweep(family: Sequence[PolicySpec], samples: Sequence[Sample], table: Sequence[dict[str, Asked]],
          depth: int, mode: str | None = None) -> list[dict]:
    """Each setting replayed on every input of ``table``: its spec and name, accuracy, mean layers computed, mean
    chains asked and tokens decoded, and its agreement with full depth's answers."""
    full = str(Chain.full(depth))
    points = []
    for spec in family:
        chains = [Chain.parse(c, depth) for c in spec.chains]
        rows = [replay(spec, chains, s, answers) for s, answers in zip(samples, table)]
        n = len(rows)
        k = sum(r["correct"] for r in rows)
        points.append({"policy": spec.to_dict(), "name": spec.describe(mode), "k": k, "n": n, "accuracy": k / n,
                       "mean_layers": sum(r["layers"] for r in rows) / n,
                       "mean_chains": sum(r["chains_asked"] for r in rows) / n,
                       "mean_tokens": sum(r["tokens"] for r in rows) / n,
                       "agreement": sum(r["answer"] == answers[full].answer for r, answers in zip(rows, table)) / n})
    return points


def choose(points: Sequence[dict], objective: tuple[str, float | None], depth: int) -> int:
    """The index of the point ``objective`` chooses (module doc)."""
    name, value = objective
    order = range(len(points))
    if name == "consistency":
        eligible = [i for i in order if points[i]["agreement"] >= value - 1e-12]
        key = lambda i: (points[i]["mean_layers"], -points[i]["agreement"], -points[i]["accuracy"])  # noqa: E731
        if not eligible:
            best = max(p["agreement"] for p in points)
            raise UsageError(f"no setting agrees with full depth on {value:.0%} of the dev inputs (the best: {best:.1%})"
                             "; end the cascade with the full chain, or lower the target")
    elif name == "budget":
        eligible = [i for i in order if points[i]["mean_layers"] <= value * depth + 1e-9]
        key = lambda i: (-points[i]["accuracy"], points[i]["mean_layers"])  # noqa: E731
        if not eligible:
            cheapest = min(p["mean_layers"] for p in points)
            raise UsageError(f"no setting computes at most {value:g} x {depth} layers per input (the cheapest: "
                             f"{cheapest:.1f})")
    else:
        eligible, key = list(order), lambda i: (-points[i]["accuracy"], points[i]["mean_layers"],  # noqa: E731
                                                points[i]["mean_chains"])
    return min(eligible, key=key)


def calibrate(spec: PolicySpec, evaluator: Evaluator, samples: Sequence[Sample], objective: str, batch: int = 16,
              ks: Sequence[int] = (), rules: Sequence[str] = (), temperatures: Sequence[float] = (),
              split: str | None = None, progress: Callable[[int], None] | None = None,
              store: EvalStore | None = None) -> tuple[PolicySpec, dict]:
    """Choose ``spec``'s settings on ``samples`` (a dev split) by ``objective``; returns the chosen spec and what the
    choice saw (split, sample ids, every setting's point, the chosen index). The table of answers on dev is recorded
    in ``store`` (stage ``calibrate``) as it is asked, so an interrupted evaluation resumes it."""
    target = parse_objective(objective)
    family = spec.family(ks, rules, temperatures)
    depth = evaluator.cm.depth
    for s in family:
        s.check(depth, evaluator.config.mode)
    table = ask_table(evaluator, samples, table_requests(family, depth), spec, batch, progress, store, "calibrate")
    points = sweep(family, samples, table, depth, evaluator.config.mode)
    chosen = choose(points, target, depth)
    return family[chosen], {"objective": objective, "task": evaluator.task.name, "split": split, "n": len(samples),
                            "ids": [s.id for s in samples], "chosen": chosen, "points": points}
