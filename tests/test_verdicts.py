"""The verdict table: each method beside full depth and its chance control, paired; the verdict follows from the
tests, a tie needs a narrow interval, and an oracle is read against its control only."""

from __future__ import annotations

import pytest

from cola.report.verdicts import Method, markdown, paired_difference, verdict_table


def _method(name, right: list[bool], layers: float, **kw) -> Method:
    return Method(name, {f"s{i}": r for i, r in enumerate(right)}, {f"s{i}": layers for i in range(len(right))}, **kw)


def test_the_paired_difference_by_hand():
    a = {"1": True, "2": True, "3": False, "4": True}
    b = {"1": True, "2": False, "3": True, "4": False}
    d = paired_difference(a, b)
    assert (d["a_only"], d["b_only"], d["n"]) == (2, 1, 4) and d["delta"] == pytest.approx(0.25)
    centre, var = 1 / 6, (2.5 + 1.5 - 1 / 6) / 36  # Agresti-Min: half a sample in each cell, n + 2
    assert d["delta_ci"] == pytest.approx([centre - 1.959964 * var ** 0.5, centre + 1.959964 * var ** 0.5])
    assert d["p"] == pytest.approx(1.0)  # McNemar exact: 2 against 1


def test_each_verdict_follows_from_its_tests():
    n = 400
    full = [i % 2 == 0 for i in range(n)]  # 200 right
    better = [r or i % 4 == 1 for i, r in enumerate(full)]  # +100 right
    worse = [r and i % 4 != 0 for i, r in enumerate(full)]  # -100 right
    same = list(full)  # identical: a tie within the margin
    noisy = [(not r) if i < 40 else r for i, r in enumerate(full)]  # 20 gained, 20 lost in 40: wide, inconclusive
    methods = [_method("full depth", full, 30), _method("better", better, 28), _method("worse", worse, 25),
               _method("same", same, 24), _method("noisy", noisy, 29),
               _method("random", full, 24, family="control"), _method("learned", same, 24, control="random"),
               _method("few", full[:12], 24),
               _method("menu oracle", better, 60, oracle=True, control="random oracle"),
               _method("random oracle", better, 60, oracle=True)]
    rows = {r["method"]: r for r in verdict_table(methods)}
    assert rows["full depth"]["verdict"] == "reference" and rows["full depth"]["vs_full"] is None
    assert rows["better"]["verdict"] == "beats full depth" and rows["better"]["vs_full"]["p"] < 1e-10
    assert rows["worse"]["verdict"] == "loses to full depth"
    assert rows["same"]["verdict"] == "ties full depth with fewer layers"
    assert rows["noisy"]["vs_full"]["p"] == 1.0 and rows["noisy"]["verdict"] == "inconclusive"
    assert rows["learned"]["verdict"] == "no better than its chance control"
    assert rows["random"]["verdict"] == "chance control"
    assert rows["few"]["vs_full"]["delta"] == 0 and rows["few"]["verdict"] == "inconclusive"  # 12 samples: too few
    assert rows["menu oracle"]["vs_full"] is None  # an oracle is never set beside full depth
    assert rows["menu oracle"]["verdict"] == "no better than its chance control"
    assert rows["better"]["layers_x_full"] == pytest.approx(28 / 30)
    table = markdown(verdict_table(methods))
    assert "| **ORACLE** menu oracle |" in table and "| better | 0.750 [" in table


def test_an_oracle_above_its_control_says_only_that():
    n = 200
    control = [i % 4 == 0 for i in range(n)]
    oracle = [i % 4 != 3 for i in range(n)]
    rows = verdict_table([_method("full depth", control, 30), _method("random oracle", control, 90, oracle=True),
                          _method("predictor oracle", oracle, 90, oracle=True, control="random oracle")])
    assert rows[2]["verdict"] == "above its chance control (oracle)" and rows[2]["vs_full"] is None
