"""Verdict tables: each way of spending depth per input set beside full depth and beside its chance control, on the
same samples, paired.

A row is a :class:`Method`: its per-sample verdicts and layers. The table (:func:`verdict_table`) gives each its
accuracy with a 95% Wilson interval, its mean layers (and x full), its difference from full depth and from its
control, each with McNemar's exact p and the 95% interval of the paired difference, and one verdict that follows from
them (:func:`verdict`). An oracle row (a best-of-k checked against the gold) is never compared with full depth as if
it were deployable: its verdict reads against its control alone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..evaluation.stats import paired, wilson_interval

TIE_MARGIN = 0.03  # a difference whose 95% interval lies within +-3 points is a tie; a wider one is inconclusive
VERDICTS = ("beats full depth", "ties full depth with fewer layers", "ties full depth", "loses to full depth",
            "inconclusive", "no better than its chance control", "above its chance control (oracle)", "chance control",
            "reference")


@dataclass
class Method:
    """One row: ``correct`` and ``layers`` per sample id; ``oracle``: a gold-checked best-of-k; ``control``: the
    name of the row it is read against (its chance control); ``family``: which kind of method it is."""

    name: str
    correct: dict[str, bool]
    layers: dict[str, float]
    family: str = ""
    oracle: bool = False
    control: str | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def mean_layers(self) -> float:
        """Layers computed per sample, on average."""
        return sum(self.layers.values()) / len(self.layers)


def paired_difference(a: dict[str, bool], b: dict[str, bool]) -> dict:
    """A's accuracy minus B's on their common samples, with McNemar's exact p and the 95% interval of the paired
    difference (Agresti & Min's adjusted Wald: half a sample added to each cell, so that a small sample with no
    disagreement still has a wide interval)."""
    p = paired(a, b)
    n, b_, c_ = p["common"], p["a_only"], p["b_only"]
    diff = (b_ - c_) / n if n else math.nan
    m = n + 2
    centre = (b_ - c_) / m
    var = ((b_ + 0.5) + (c_ + 0.5) - (b_ - c_) ** 2 / m) / (m * m)
    half = 1.959964 * math.sqrt(max(var, 0.0))
    return {"delta": diff, "delta_ci": [centre - half, centre + half], "p": p["mcnemar_p"], "n": n,
            "a_only": b_, "b_only": c_}


def verdict(method: Method, vs_full: dict | None, vs_control: dict | None, fewer_layers: bool,
            alpha: float = 0.05) -> str:
    """The row's verdict, from its paired tests: a control row is a "chance control"; a method with a control that is
    not significantly above it is "no better than its chance control" (an oracle above its control says so, and
    nothing more); else against full depth, a significant difference beats or loses; a non-significant one ties when
    its interval lies within :data:`TIE_MARGIN` (with fewer layers, said so), and is inconclusive otherwise."""
    if method.family == "control":
        return "chance control"
    if vs_control is not None and not (vs_control["p"] < alpha and vs_control["delta"] > 0):
        return "no better than its chance control"
    if method.oracle:
        return "above its chance control (oracle)" if vs_control is not None else "oracle (no control)"
    if vs_full is None:
        return "reference"
    if vs_full["p"] < alpha:
        return "beats full depth" if vs_full["delta"] > 0 else "loses to full depth"
    lo, hi = vs_full["delta_ci"]
    if -TIE_MARGIN <= lo and hi <= TIE_MARGIN:
        return "ties full depth with fewer layers" if fewer_layers else "ties full depth"
    return "inconclusive"


def verdict_table(methods: Sequence[Method], full: str = "full depth") -> list[dict]:
    """One row per method (see the module doc); ``full``: the name of the full-depth row."""
    by_name = {m.name: m for m in methods}
    base = by_name[full]
    full_layers = base.mean_layers
    rows = []
    for m in methods:
        n, k = len(m.correct), sum(m.correct.values())
        layers = m.mean_layers
        vs_full = None if m.name == full or m.oracle else paired_difference(m.correct, base.correct)
        vs_control = paired_difference(m.correct, by_name[m.control].correct) if m.control else None
        rows.append({
            "method": m.name, "family": m.family, "oracle": m.oracle, "n": n, "k": k, "accuracy": k / n,
            "ci": list(wilson_interval(k, n)), "mean_layers": layers, "layers_x_full": layers / full_layers,
            "vs_full": vs_full, "control": m.control, "vs_control": vs_control,
            "verdict": verdict(m, vs_full, vs_control, layers < full_layers - 1e-9), "note": m.note, **m.extra})
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """The verdict table in Markdown: oracle rows named so, each difference with its interval and p."""
    def diff(d: dict | None) -> str:
        if d is None:
            return "—"
        lo, hi = d["delta_ci"]
        return f"{d['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}], p = {d['p']:.2g}"

    lines = ["| method | accuracy [95% CI] | mean layers (x full) | vs full depth | control | vs control | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = f"**ORACLE** {r['method']}" if r["oracle"] else r["method"]
        lines.append(f"| {name} | {r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] ({r['k']}/{r['n']}) | "
                     f"{r['mean_layers']:.2f} ({r['layers_x_full']:.2f}) | {diff(r['vs_full'])} | "
                     f"{r['control'] or '—'} | {diff(r['vs_control'])} | {r['verdict']} |")
    return "\n".join(lines)
