"""The study's analysis of search runs, as pandas tables computed from the stored records.

Every number of ``cola report`` comes from here. A *run* is one folder of ``cola search``; runs are grouped by
everything that makes their numbers comparable (model, task, mode, budget, seed, samples), and nothing is averaged
across groups.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.chain import Chain
from ..errors import UsageError
from ..evaluation.stats import paired, wilson_interval
from ..storage import read_config, read_eval, read_records

ACTION_NAMES = {"all": "CoLa", "skip": "skip-only", "repeat": "recurrence-only"}
# config keys that may differ inside a group: the ablation, the control (and a menu control's menu), and what changes
# no result beyond floating-point rounding (the package version, the batch size, the worker count, the software and
# device)
VARYING = ("space", "control", "menu", "version", "batch", "workers", "environment")


@dataclass
class Run:
    """One search run folder: its config and records."""

    folder: Path
    config: dict
    records: list[dict]

    @classmethod
    def load(cls, folder: str | Path) -> Run:
        folder = Path(folder)
        return cls(folder, read_config(folder), read_records(folder))

    @property
    def actions(self) -> str:
        return self.config["space"]["actions"]

    @property
    def control(self) -> str:
        return self.config.get("control", "none")

    @property
    def depth(self) -> int:
        return self.config["depth"]

    @property
    def group(self) -> str:
        """A short id of everything but the ablation and the control: runs of one group are comparable."""
        same = {k: v for k, v in self.config.items() if k not in VARYING}
        same["space"] = {k: v for k, v in self.config["space"].items() if k != "actions"}
        return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def label(self) -> str:
        """Task, split (where the run records one) and mode, e.g. ``arc_easy test (score)``."""
        split = f" {self.config['split']}" if self.config.get("split") else ""
        return f"{self.config['task']}{split} ({self.config['mode']})"


def aligned(runs: list[Run]) -> list[Run]:
    """Each run restricted to the samples finished by every run that asks the same samples (same weights, task, mode,
    split and sample ids: a search and its decoy, menu and sampling controls). Runs are resumable and may be stopped
    at any sample, so controls are compared on the samples all of them finished, never on different ones."""

    def key(run: Run) -> str:
        return json.dumps([run.config.get(k) for k in ("weights", "task", "mode", "score_style", "split", "level",
                                                       "sample_ids")])

    finished: dict[str, set[str]] = {}
    for run in runs:
        ids = {r["id"] for r in run.records}
        finished[key(run)] = finished.get(key(run), ids) & ids
    return [Run(run.folder, run.config, [r for r in run.records if r["id"] in finished[key(run)]]) for run in runs]


def proportion(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "share": k / n if n else math.nan, "ci_low": lo, "ci_high": hi}


def accuracy_table(runs: list[Run]) -> pd.DataFrame:
    """Table 1: per group and task, accuracy of the original model and of each search variant, with 95% CIs."""
    rows = []
    for run in runs:
        if run.control != "none":
            continue
        base = {"group": run.group, "model": run.config["model"], "task": run.label, "sims": run.config["mcts"]["sims"]}
        if not any(r["group"] == run.group and r["variant"] == "original" for r in rows):
            rows.append({**base, "variant": "original",
                         **proportion(sum(r["full"]["correct"] for r in run.records), len(run.records))})
        rows.append({**base, "variant": ACTION_NAMES[run.actions],
                     **proportion(sum(r["best"]["correct"] for r in run.records), len(run.records))})
    return pd.DataFrame(rows, columns=["group", "model", "task", "sims", "variant", "k", "n", "share", "ci_low",
                                       "ci_high"])


def findings(run: Run) -> dict:
    """The study's two findings for one run: right samples with a correct shorter chain, wrong samples with a
    correct chain."""
    right = [r for r in run.records if r["full"]["correct"]]
    wrong = [r for r in run.records if not r["full"]["correct"]]
    shorter = sum(1 for r in right if r["shortest_correct"] and r["shortest_correct"]["length"] < run.depth)
    fixed = sum(1 for r in wrong if r["best"]["correct"])
    return {
        "group": run.group, "task": run.label, "variant": ACTION_NAMES[run.actions], "control": run.control,
        "right": len(right), "right_with_shorter": shorter, "share_shorter": shorter / len(right) if right else math.nan,
        "wrong": len(wrong), "wrong_fixed": fixed, "share_fixed": fixed / len(wrong) if wrong else math.nan,
    }


def depth_table(run: Run) -> pd.DataFrame:
    """Best-chain length of every sample whose best chain is correct, with its transition (right->right, wrong->right)."""
    rows = [{"id": r["id"], "transition": ("right->right" if r["full"]["correct"] else "wrong->right"),
             "length": r["best"]["length"], "saved": run.depth - r["best"]["length"]}
            for r in run.records if r["best"]["correct"]]
    return pd.DataFrame(rows, columns=["id", "transition", "length", "saved"])


def depth_summary(run: Run) -> dict:
    table = depth_table(run)
    lengths = table["length"]
    return {
        "group": run.group, "task": run.label, "variant": ACTION_NAMES[run.actions], "depth": run.depth,
        "n_correct": len(table), "mean_length": lengths.mean(), "mean_saved": table["saved"].mean(),
        "p5_length": lengths.quantile(0.05) if len(lengths) else math.nan,
        "p20_length": lengths.quantile(0.20) if len(lengths) else math.nan,
        "right_right": int((table["transition"] == "right->right").sum()),
        "wrong_right": int((table["transition"] == "wrong->right").sum()),
    }


def layer_usage(run: Run) -> pd.DataFrame:
    """Per layer: the share of correct best chains in which it is kept once, skipped, or repeated."""
    chains = [[int(i) for i in _expand(r["best"]["chain"])] for r in run.records if r["best"]["correct"]]
    rows = []
    for layer in range(run.depth):
        counts = [c.count(layer) for c in chains]
        n = max(len(chains), 1)
        rows.append({"layer": layer, "kept": sum(k == 1 for k in counts) / n, "skipped": sum(k == 0 for k in counts) / n,
                     "repeated": sum(k >= 2 for k in counts) / n, "uses": sum(counts)})
    return pd.DataFrame(rows)


def usage_summary(run: Run) -> dict:
    """Usage entropy (normalised by log of depth) and maximum concentration of layer uses in correct best chains;
    the layers never skipped."""
    usage = layer_usage(run)
    total = usage["uses"].sum()
    p = usage["uses"] / total if total else usage["uses"] * 0
    entropy = -sum(x * math.log(x) for x in p if x > 0) / math.log(run.depth) if total else math.nan
    return {
        "group": run.group, "task": run.label, "variant": ACTION_NAMES[run.actions],
        "entropy": entropy, "max_concentration": float(p.max()) if total else math.nan,
        "never_skipped": " ".join(str(i) for i in usage.loc[usage["skipped"] == 0, "layer"]) if total else "",
    }


def search_summary(run: Run) -> dict:
    """Simulations until the first correct chain, share of the budget that took, unique chains evaluated."""
    sims = run.config["mcts"]["sims"]
    firsts = [r["first_correct_at"] for r in run.records if r["first_correct_at"] is not None]
    return {
        "group": run.group, "task": run.label, "variant": ACTION_NAMES[run.actions], "control": run.control,
        "budget": sims, "found_correct": len(firsts), "samples": len(run.records),
        "median_first_correct": float(pd.Series(firsts).median()) if firsts else math.nan,
        "mean_first_correct": float(pd.Series(firsts).mean()) if firsts else math.nan,
        "mean_budget_share": float(pd.Series(firsts).mean() / sims) if firsts else math.nan,
        "mean_unique_chains": float(pd.Series([r["unique_evaluations"] for r in run.records]).mean()),
    }


def chance_control(runs: list[Run]) -> pd.DataFrame:
    """Real against decoy wrong->right shares, for every real run that has a decoy twin in its group, on the samples
    both finished."""
    rows = []
    for real in runs:
        if real.control != "none":
            continue
        for twin in runs:
            if twin.control == "decoy" and twin.group == real.group and twin.actions == real.actions:
                f_real, f_decoy = (findings(run) for run in aligned([real, twin]))
                rows.append({
                    "group": real.group, "task": real.label, "variant": ACTION_NAMES[real.actions],
                    "real_wrong": f_real["wrong"], "real_fixed": f_real["wrong_fixed"], "real_share": f_real["share_fixed"],
                    "decoy_wrong": f_decoy["wrong"], "decoy_fixed": f_decoy["wrong_fixed"],
                    "decoy_share": f_decoy["share_fixed"], "gap": f_real["share_fixed"] - f_decoy["share_fixed"],
                })
    return pd.DataFrame(rows, columns=["group", "task", "variant", "real_wrong", "real_fixed", "real_share",
                                       "decoy_wrong", "decoy_fixed", "decoy_share", "gap"])


SHORTER_COLUMNS = ["group", "task", "variant", "right", "real_shorter", "real_share", "decoy_samples",
                   "decoy_shorter", "decoy_share", "gap", "real_chains", "real_keep_rate", "decoy_chains",
                   "decoy_hit_rate"]


def shorter_control(runs: list[Run]) -> pd.DataFrame:
    """The chance control of the first finding, for every real run with a decoy twin in its group.

    Among the samples the full model gets right: the share with a correct chain shorter than the depth (real run)
    beside the share of the same samples whose decoy search found a shorter chain giving the decoy; and per chain,
    of the shorter chains tried on those samples, the share that keep the full model's answer (real run) and the
    share that give the decoy (decoy run). Both runs on the samples both finished."""
    rows = []
    for real in runs:
        if real.control != "none":
            continue
        for twin in runs:
            if twin.control != "decoy" or twin.group != real.group or twin.actions != real.actions:
                continue
            mine, theirs = aligned([real, twin])
            right = {r["id"]: r for r in mine.records if r["full"]["correct"]}
            decoy = [r for r in theirs.records if r["id"] in right]
            depth = real.depth

            def shorter(records: list[dict]) -> int:
                return sum(1 for r in records if r["shortest_correct"] and r["shortest_correct"]["length"] < depth)

            def tried(records: list[dict]) -> list[tuple[dict, dict]]:
                return [(r, e) for r in records for e in r["evaluations"][1:] if e["length"] < depth]

            real_tried, decoy_tried = tried(list(right.values())), tried(decoy)
            real_share = shorter(list(right.values())) / len(right) if right else math.nan
            decoy_share = shorter(decoy) / len(decoy) if decoy else math.nan
            rows.append({
                "group": real.group, "task": real.label, "variant": ACTION_NAMES[real.actions],
                "right": len(right), "real_shorter": shorter(list(right.values())), "real_share": real_share,
                "decoy_samples": len(decoy), "decoy_shorter": shorter(decoy), "decoy_share": decoy_share,
                "gap": real_share - decoy_share, "real_chains": len(real_tried),
                "real_keep_rate": (sum(e["answer"] == r["full"]["answer"] for r, e in real_tried) / len(real_tried)
                                   if real_tried else math.nan),
                "decoy_chains": len(decoy_tried),
                "decoy_hit_rate": (sum(e["correct"] for _, e in decoy_tried) / len(decoy_tried)
                                   if decoy_tried else math.nan),
            })
    return pd.DataFrame(rows, columns=SHORTER_COLUMNS)


def first_right(run: Run) -> list[int | None]:
    """Per record, the index of its first correct evaluation (0: the full chain), or None."""
    return [next((i for i, e in enumerate(r["evaluations"]) if e["correct"]), None) for r in run.records]


def pass_curve(run: Run) -> list[float]:
    """pass@k of the run for k = 1 .. its evaluations per sample (:func:`pass_at_k` for every k at once)."""
    firsts = [f for f in first_right(run) if f is not None]
    n, budget = len(run.records), run.config["mcts"]["sims"] + 1
    return [sum(1 for f in firsts if f < k) / n for k in range(1, budget + 1)]


def pass_at_k(run: Run, k: int) -> dict:
    """Samples with a correct answer among their first ``k`` evaluations (the full chain's, or the greedy answer, is
    the first), counted as the run's control counts correct (a decoy run: the decoy); ``wrong`` counts the samples
    whose first evaluation is not correct, ``wrong_right`` those of them with a correct one among the first k."""
    budget = run.config["mcts"]["sims"] + 1
    if not 1 <= k <= budget:
        raise UsageError(f"pass@{k} of {run.folder}: k must be between 1 and the run's {budget} evaluations per sample")
    firsts = first_right(run)
    passed = sum(1 for first in firsts if first is not None and first < k)
    wrong = sum(1 for first in firsts if first != 0)
    return {"group": run.group, "task": run.label, "variant": ACTION_NAMES[run.actions], "control": run.control,
            "at": k, **proportion(passed, len(run.records)), "wrong": wrong,
            "wrong_right": passed - (len(firsts) - wrong)}


def oracle_controls(runs: list[Run], ks: tuple[int, ...] = (1, 5, 20, 200)) -> pd.DataFrame:
    """pass@k (column ``at``; ``k`` counts the samples passed) of every run for each ``k`` within its budget and
    its last evaluation: the per-sample search and its decoy, menu and sampling controls side by side, each on the
    samples every run of the same samples finished (:func:`aligned`)."""
    rows = [pass_at_k(run, k) for run in aligned(runs)
            for k in sorted({*(k for k in ks if k <= run.config["mcts"]["sims"] + 1), run.config["mcts"]["sims"] + 1})]
    return pd.DataFrame(rows, columns=["group", "task", "variant", "control", "at", "k", "n", "share", "ci_low",
                                       "ci_high", "wrong", "wrong_right"])


@dataclass
class EvalResult:
    """One ``cola eval --out`` output: its summary (a chain or a router, on which samples) and per-sample rows."""

    path: Path
    summary: dict
    rows: list[dict]

    @classmethod
    def load(cls, path: str | Path) -> EvalResult:
        summary, rows = read_eval(path)
        return cls(Path(path), summary, rows)

    @property
    def group(self) -> str:
        """Evaluations of one model, task, split and prompt format are comparable (paired on shared samples)."""
        s = self.summary
        return f"{s['model']} · {s['task']} ({s['split'] or s['data']}, {s['mode']})"

    @property
    def correct(self) -> dict[str, bool]:
        return {r["id"]: bool(r["correct"]) for r in self.rows}


def eval_table(evals: list[EvalResult]) -> pd.DataFrame:
    """One row per evaluation: group, name, kind (chain, router or policy), chain length or mean positions asked,
    layers computed per input (a router's include its feature layers, a policy's every chain it asked), accuracy with
    its 95% interval; a router's share routed to full depth."""
    rows = []
    for e in evals:
        s = e.summary
        rows.append({"group": e.group, "name": s["name"], "kind": s["kind"], "chain": s.get("chain"),
                     "mean_length": s["mean_length"], "mean_layers": s["mean_layers"],
                     "full_share": s.get("full_share"), **proportion(s["k"], s["n"]),
                     "fitted_on": json.dumps(s["fitted_on"]) if s.get("fitted_on") else None, "file": str(e.path)})
    return pd.DataFrame(rows, columns=["group", "name", "kind", "chain", "mean_length", "mean_layers", "full_share",
                                       "k", "n", "share", "ci_low", "ci_high", "fitted_on", "file"])


def adaptation_table(evals: list[EvalResult]) -> pd.DataFrame:
    """Every adaptive evaluation (a router or a label-free policy) against what it must beat, paired on the samples
    both answered: full depth (from its own output, run beside it), a router's random pick from its library, then
    every other evaluation of its group (static chains, block-influence chains, routers, other policies)."""
    rows = []
    for adaptive in (e for e in evals if e.summary["kind"] in ("router", "policy")):
        s = adaptive.summary
        mine = adaptive.correct
        others = [("full depth (same run)", s["baselines"]["full"]["mean_layers" if s["kind"] == "policy"
                                                                  else "mean_length"],
                   {r["id"]: bool(r["full_correct"]) for r in adaptive.rows})]
        if s["kind"] == "router":
            others.append(("random pick, router's frequencies (same run)", s["baselines"]["random_pick"]["mean_length"],
                           {r["id"]: bool(r["random_correct"]) for r in adaptive.rows}))
        others += [(o.summary["name"], o.summary["mean_layers"], o.correct) for o in evals
                   if o is not adaptive and o.group == adaptive.group]
        for name, layers, verdicts in others:
            p = paired(mine, verdicts)
            rows.append({"group": adaptive.group, "evaluation": s["name"], "kind": s["kind"],
                         "layers": s["mean_layers"], "versus": name, "versus_layers": layers, "samples": p["common"],
                         "right": p["a_right"], "versus_right": p["b_right"], "only": p["a_only"],
                         "versus_only": p["b_only"], "mcnemar_p": p["mcnemar_p"]})
    return pd.DataFrame(rows, columns=["group", "evaluation", "kind", "layers", "versus", "versus_layers", "samples",
                                       "right", "versus_right", "only", "versus_only", "mcnemar_p"])


def config_differences(runs: list[Run]) -> dict[str, set]:
    """Config keys (outside the ablation and control) whose values differ between runs."""
    keys = set().union(*(r.config for r in runs)) - set(VARYING) - {"sample_ids"}
    out = {}
    for key in sorted(keys):
        values = {json.dumps(r.config.get(key), sort_keys=True) for r in runs}
        if len(values) > 1:
            out[key] = values
    return out


def _expand(chain: str) -> list[int]:
    return list(Chain.parse(chain).layers)

