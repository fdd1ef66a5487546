"""The table of docs/results/polar.md for one model and one supervision, from bench/polar_study.sh's evaluations:
every row on the same test items, paired, each beside the row it is read against.

    python bench/polar_table.py MODEL SUPERVISION [TASK]   (writes results/evals/polar/MODEL-SUPERVISION[-TASK]/table.md;
                                                            TASK: arc_easy, the default, or a transfer task)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cola.report.verdicts import Method, markdown, paired_difference, verdict_table
from cola.storage import read_eval


def methods(folder: Path) -> tuple[list[Method], dict]:
    """The rows, from the evaluations in ``folder`` that exist."""
    summary, rows = read_eval(folder / "predictor.jsonl")
    ids = [r["id"] for r in rows]
    out = [Method("full depth", {r["id"]: r["full_correct"] for r in rows},
                  {i: summary["baselines"]["full"]["mean_layers"] for i in ids}, "reference")]

    def oracle(name, eval_rows, field, layers, control=None, family="oracle"):
        return Method(name, {r["id"]: r["oracle"][field] for r in eval_rows},
                      {r["id"]: r["oracle"][layers] for r in eval_rows}, family, oracle=True, control=control)

    def pass1(name, eval_rows, control=None, family="learned"):
        return Method(name, {r["id"]: r["correct"] for r in eval_rows}, {r["id"]: r["layers"] for r in eval_rows},
                      family, control=control)

    found = {p.stem: read_eval(p)[1] for p in sorted(folder.glob("*.jsonl")) if p.with_suffix(".json").exists()}
    for name, eval_rows in found.items():
        assert [r["id"] for r in eval_rows] == ids, f"{name} is not on the same items"
    k = summary["oracle"]["top_k"]
    random_full = f"full depth + {k - 1} random programs, best-of-{k}"
    if "random-full" in found:
        out.append(oracle(random_full, found["random-full"], "best_of_k_online", "layers_online", family="control"))
    control = random_full if "random-full" in found else None
    if "released" in found:
        out.append(oracle(f"PoLar as released (top {k}, trusting the test search's hits)", found["released"],
                          "as_released", "layers_as_released", control))
    out.append(oracle(f"PoLar best-of-{k} run online", rows, "best_of_k_online", "layers_online", control))
    if "menu" in found:
        out.append(oracle(f"fixed menu of train's {k} most often right programs, best-of-{k}", found["menu"],
                          "best_of_k_online", "layers_online", control, family="control"))
    if "random" in found:
        out.append(pass1("random programs at the predictor's rates, pass@1", found["random"], family="control"))
    out.append(pass1("PoLar pass@1 (deployable)", rows, "random programs at the predictor's rates, pass@1"
                     if "random" in found else None))
    if "decoy" in found:
        out.append(pass1("decoy-trained predictor, pass@1", found["decoy"], family="control"))
        out.append(oracle(f"decoy-trained predictor, best-of-{k}", found["decoy"], "best_of_k_online",
                          "layers_online", control, family="control"))
    for name, eval_rows in found.items():
        if name.startswith("bi"):
            out.append(pass1(f"block-influence chain, m={name[2:]} (the predictor's layers)", eval_rows,
                             family="static"))
    return out, {"summary": summary, "found": sorted(found)}


def main(model: str, supervision: str, task: str = "arc_easy") -> None:
    folder = Path("results/evals/polar") / (f"{model}-{supervision}" + ("" if task == "arc_easy" else f"-{task}"))
    rows_, about = methods(folder)
    table = verdict_table(rows_)
    by = {m.name: m for m in rows_}
    lines = [markdown(table), ""]
    pairs = [("PoLar pass@1 (deployable)", "decoy-trained predictor, pass@1")]
    k = about["summary"]["oracle"]["top_k"]
    pairs += [(f"PoLar best-of-{k} run online", f"fixed menu of train's {k} most often right programs, best-of-{k}"),
              (f"PoLar best-of-{k} run online", f"decoy-trained predictor, best-of-{k}")]
    for a, b in pairs:
        if a in by and b in by:
            d = paired_difference(by[a].correct, by[b].correct)
            lines.append(f"- {a} against {b}: {d['delta']:+.3f} [{d['delta_ci'][0]:+.3f}, {d['delta_ci'][1]:+.3f}], "
                         f"McNemar p = {d['p']:.2g} ({d['a_only']} right only under the first, {d['b_only']} under "
                         "the second)")
    (folder / "table.md").write_text("\n".join(lines) + "\n")
    (folder / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:4])
