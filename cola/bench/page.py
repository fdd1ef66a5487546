"""A bench's results: one row per method, read from the stages' outputs, beside full depth and its control
(:mod:`cola.report.verdicts`), written as results.json and results.csv, the Pareto figure (accuracy against layers per
input, each method's control drawn with it) and one page (report.md, and report.html with the figure inlined) whose
first table is the verdict table."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..core.chain import Chain
from ..report.verdicts import Method, markdown, paired_difference, verdict_table
from ..storage import disk_full, read_eval, read_records, write_atomic
from .plan import Bench, Stage
from .run import TIMES, adopted, skipped, stage_times


def _stage_rows(bench: Bench, name: str) -> tuple[dict, list[dict]] | None:
    path = bench.stage_path(name).with_suffix(".jsonl")
    return read_eval(path) if path.with_suffix(".json").is_file() else None


def methods(bench: Bench, stages: list[Stage], transfer: str | None = None) -> list[Method]:
    """The rows of the verdict table from the stages that finished (a stage not run has no row): on the bench's
    test split, or with ``transfer`` on that task's (its ``TASK/NAME`` stages; no searches there)."""
    where = f"{transfer}/" if transfer else ""
    budget = next((s.settings["calibrate"].removeprefix("budget=") for s in stages if s.name == "cascade"), "")
    stages = [replace(s, name=s.name.removeprefix(where)) for s in stages
              if s.name.startswith(where) and (transfer or "/" not in s.name)]
    names = {s.name for s in stages}
    out: list[Method] = []

    def rows_of(name: str) -> tuple[dict, list[dict]] | None:
        """Stage ``name``'s finished evaluation on this task (None where it did not run)."""
        return _stage_rows(bench, where + name) if name in names else None

    def chain_method(name: str, label: str, family: str) -> None:
        found = _stage_rows(bench, where + name)
        if found is not None:
            summary, rows = found
            out.append(Method(label, {r["id"]: bool(r["correct"]) for r in rows},
                              {r["id"]: len(Chain.parse(r["chain"])) for r in rows}, family,
                              extra={"wall_s": summary.get("wall_s"), "stage": name, "chain": summary["chain"]}))

    chain_method("full", "full depth", "reference")
    if not out:
        return out
    for s in stages:
        if s.kind == "eval" and "chain" in s.settings and s.name != "full":
            what = {"bi": "block influence, without the {} least influential layers",
                    "drop-last": "without the last {} layers", "static-best": "best static chain (searched on dev)"}
            key = "static-best" if s.name == "static-best" else s.name.rstrip("0123456789")
            label = what[key].format(s.name[len(key):]) if "{}" in what[key] else what[key]
            chain_method(s.name, label, "static")
    if transfer is None:
        _oracle(bench, names, out)
    _learned(bench, rows_of, out)
    for name, label in (("cascade", f"confidence cascade (at most {budget} x depth layers on dev)"),
                        ("cascade-consistency", "confidence cascade (95% agreement with full depth on dev)"),
                        ("vote", "vote over chains (calibrated on dev)"),
                        ("self-consistency", "self-consistency (calibrated on dev)")):
        found = rows_of(name)
        if found is not None:
            summary, rows = found
            out.append(Method(label, {r["id"]: bool(r["correct"]) for r in rows},
                              {r["id"]: r["layers"] for r in rows}, "label-free",
                              extra={"wall_x_full": summary.get("wall_ratio"), "stage": name}))
    _static_controls(out)
    return out


def _oracle(bench: Bench, names: set[str], out: list[Method]) -> None:
    """The per-sample search at its budget and its chance controls at the same budget: right when the best of the
    chains it tried is right by the gold (the decoy's: reaches its wrong gold)."""
    runs = {}
    for name in ("search-test", "search-test-decoy", "search-test-menu", "search-test-sample"):
        path = bench.stage_path(name)
        if name in names and (path / "config.json").is_file():
            runs[name] = read_records(path)
    if "search-test-decoy" not in runs:
        return
    k = bench.sizes.sims + 1
    labels = {"search-test-decoy": f"decoy search reaches a wrong gold, best of {k}",
              "search-test": f"per-sample search, best of {k} chains", "search-test-menu":
              f"fixed menu of train's chains, best of {k}", "search-test-sample": f"full model sampled {k} times"}
    for name in ("search-test-decoy", "search-test", "search-test-menu", "search-test-sample"):
        if name in runs:
            records = runs[name]
            extra = {"stage": name}
            if name == "search-test":
                wrong = [r for r in records if not r["full"]["correct"]]
                right = [r for r in records if r["full"]["correct"]]
                extra.update(wrong_to_right=sum(r["best"]["correct"] for r in wrong) / max(len(wrong), 1),
                             right_to_shorter=sum(bool(r["shortest_correct"]) and r["shortest_correct"]["length"]
                                                  < r["full"]["length"] for r in right) / max(len(right), 1))
            out.append(Method(labels[name], {r["id"]: bool(r["best"]["correct"]) for r in records},
                              {r["id"]: sum(e["length"] for e in r["evaluations"]) for r in records},
                              "control" if name == "search-test-decoy" else "oracle", oracle=True,
                              control=None if name == "search-test-decoy" else labels["search-test-decoy"],
                              extra=extra))


def _learned(bench: Bench, rows_of: Callable[[str], tuple[dict, list[dict]] | None], out: list[Method]) -> None:
    """The routers and the predictor at pass@1 beside their random controls and decoy-trained twins; PoLar's
    best-of-k, an oracle, beside full depth plus random programs at the same k."""
    def policy(name, label, family="learned", control=None, field=None):
        found = rows_of(name)
        if found is None:
            return None
        summary, rows = found
        if field is None:
            correct = {r["id"]: bool(r["correct"]) for r in rows}
            layers = {r["id"]: r["layers"] for r in rows}
        else:
            correct = {r["id"]: r["oracle"][field] for r in rows}
            layers = {r["id"]: r["oracle"]["layers_online"] for r in rows}
        method = Method(label, correct, layers, family, oracle=field is not None, control=control,
                        extra={"stage": name, "wall_x_full": summary.get("wall_ratio")})
        out.append(method)
        return summary, rows

    found = rows_of("router")
    if found is not None:
        summary, rows = found
        out.append(Method("random pick from the router's library", {r["id"]: bool(r["random_correct"]) for r in rows},
                          {r["id"]: len(Chain.parse(r["random_chain"])) for r in rows}, "control"))
        out.append(Method("library router", {r["id"]: bool(r["correct"]) for r in rows},
                          {r["id"]: r["layers"] for r in rows}, "learned",
                          control="random pick from the router's library",
                          extra={"stage": "router", "wall_x_full": summary["routed_s"] / max(
                              summary["baselines"]["full"]["wall_s"], 1e-9)}))
    policy("layer-router-random", "per-layer routers' random control", "control")
    policy("layer-router-decoy", "per-layer routers trained on decoy labels", "control")
    policy("layer-router", "Dr.LLM's per-layer routers", control="per-layer routers' random control")
    policy("layer-router-decoy-matched", "per-layer routers trained on decoy labels, matched samples", "control")
    policy("layer-router-matched", "Dr.LLM's per-layer routers, matched samples (kept by both searches)",
           control="per-layer routers trained on decoy labels, matched samples")
    k = bench.sizes.top_k
    policy("eval-program-random", "random programs at the predictor's rates, pass@1", "control")
    policy("eval-program-decoy", "decoy-trained predictor, pass@1", "control")
    policy("eval-program", "PoLar's predictor, pass@1", control="random programs at the predictor's rates, pass@1")
    control = f"full depth + {k - 1} random programs, best of {k}"
    if policy("eval-program-random-full", control, "control", field="best_of_k_online") is not None:
        policy("eval-program", f"PoLar's predictor, best of {k} (PoLar's metric)", "learned", control,
               field="best_of_k_online")
        policy("eval-program-menu", f"fixed menu of train's {k} programs, best of {k}", "control", control,
               field="best_of_k_online")
        policy("eval-program-decoy", f"decoy-trained predictor, best of {k}", "control", control,
               field="best_of_k_online")


def _static_controls(out: list[Method]) -> None:
    """A label-free method's control, and every learned one's comparison: the static chain whose layers are
    nearest its own (a method that spends depth per input should beat one chain for all inputs at equal cost). A
    method at full depth's layers or more has none: full depth is the chain of its cost."""
    static = [m for m in out if m.family == "static" and m.extra.get("stage", "").startswith(("bi", "drop-last"))]
    full = next((m for m in out if m.family == "reference"), None)
    if not static or full is None:
        return
    for m in out:
        if m.family in ("label-free", "learned") and not m.oracle and m.mean_layers < full.mean_layers - 1e-9:
            nearest = min(static, key=lambda s: abs(s.mean_layers - m.mean_layers))
            m.extra["static_at_equal_layers"] = nearest.name
            m.extra["vs_static"] = paired_difference(m.correct, nearest.correct)
            if m.family == "label-free":
                m.control = nearest.name


def write_results(bench: Bench, stages: list[Stage]) -> tuple[list[dict], Path | None, dict[str, list[dict]]]:
    """results.json, results.csv, pareto.png and report.md / report.html in the bench folder (and each ``--transfer``
    task's rows in transfer-TASK.json / .csv, a section of the page); returns the verdict rows, the page's path (None
    when full depth has not run) and each transfer task's rows."""
    rows_ = methods(bench, stages)
    if not rows_:
        return [], None, {}
    table = verdict_table(rows_)
    transfers = {task: verdict_table(found) for task in bench.transfer if (found := methods(bench, stages, task))}
    folder = bench.folder
    with disk_full(folder):
        write_atomic(folder / "results.json", json.dumps(table, indent=1) + "\n")
        write_atomic(folder / "results.csv", _csv(table))
        for task, rows in transfers.items():
            write_atomic(folder / f"transfer-{task}.json", json.dumps(rows, indent=1) + "\n")
            write_atomic(folder / f"transfer-{task}.csv", _csv(rows))
        _pareto(table, rows_, folder / "pareto.png")
        page = _page(bench, table, rows_, transfers)
        write_atomic(folder / "report.md", page)
        write_atomic(folder / "report.html", _html(page, folder / "pareto.png"))
    return table, folder / "report.html", transfers


def _csv(table: list[dict]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    fields = ["method", "family", "oracle", "n", "k", "accuracy", "ci_low", "ci_high", "mean_layers", "layers_x_full",
              "delta_vs_full", "p_vs_full", "control", "delta_vs_control", "p_vs_control", "verdict"]
    writer = csv.DictWriter(buffer, fields)
    writer.writeheader()
    for r in table:
        writer.writerow({"method": r["method"], "family": r["family"], "oracle": r["oracle"], "n": r["n"], "k": r["k"],
                         "accuracy": round(r["accuracy"], 4), "ci_low": round(r["ci"][0], 4),
                         "ci_high": round(r["ci"][1], 4), "mean_layers": round(r["mean_layers"], 2),
                         "layers_x_full": round(r["layers_x_full"], 3),
                         "delta_vs_full": None if r["vs_full"] is None else round(r["vs_full"]["delta"], 4),
                         "p_vs_full": None if r["vs_full"] is None else r["vs_full"]["p"], "control": r["control"],
                         "delta_vs_control": None if r["vs_control"] is None else round(r["vs_control"]["delta"], 4),
                         "p_vs_control": None if r["vs_control"] is None else r["vs_control"]["p"],
                         "verdict": r["verdict"]})
    return buffer.getvalue()


def _pareto(table: list[dict], methods_: list[Method], path: Path) -> None:
    """Accuracy (with its interval) against layers per input, one numbered marker per deployable method (oracle rows
    in their own panel), each method joined to its control by a dotted line; the numbers are keyed in a legend, one
    label per point (methods at the same point share it) placed where it overlaps no other label, no marker and no
    interval (:func:`place_labels`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["method"]: r for r in table}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    colours = {"reference": "black", "static": "tab:blue", "learned": "tab:red", "label-free": "tab:green",
               "control": "tab:gray", "oracle": "tab:purple"}
    pending = []
    for ax, oracle in ((axes[0], False), (axes[1], True)):
        rows = [r for r in table if r["oracle"] == oracle or (oracle and r["method"] == "full depth")]
        points: dict[tuple[float, float], list[int]] = {}
        bars = []
        for i, r in enumerate(rows, 1):
            lo, hi = r["ci"]
            bars.append((r["mean_layers"], lo, hi))
            ax.errorbar(r["mean_layers"], r["accuracy"], yerr=[[max(r["accuracy"] - lo, 0)],
                                                                [max(hi - r["accuracy"], 0)]],
                        fmt="o", color=colours.get(r["family"], "tab:orange"), capsize=3,
                        markerfacecolor="white" if r["family"] == "control" else None)
            points.setdefault((round(r["mean_layers"], 2), round(r["accuracy"], 4)), []).append(i)
            control = by.get(r["control"]) if r["control"] else None
            if control is not None:
                ax.plot([r["mean_layers"], control["mean_layers"]], [r["accuracy"], control["accuracy"]], ":",
                        color="gray", linewidth=1)
        keys = [plt.Line2D([], [], linestyle="", marker="$%d$" % i, color="black", label=r["method"])
                for i, r in enumerate(rows, 1)]
        pending.append((ax, [(x, y, ",".join(map(str, numbers))) for (x, y), numbers in points.items()], bars, keys))
        ax.set_xlabel("layers computed per input" + (" (all the chains tried)" if oracle else ""))
        ax.set_ylabel("accuracy (95% interval)")
        ax.set_title("ORACLE: best of k, checked against the gold" if oracle else "deployable methods (pass@1)")
    fig.tight_layout()
    fig.canvas.draw()  # the axes' final places, so that the labels' boxes are where they will be drawn
    for ax, labels, bars, keys in pending:
        place_labels(fig, ax, labels, bars)
        # the key below the axis label (its bottom, in the axes' coordinates), not over it
        below = ax.transAxes.inverted().transform(ax.xaxis.label.get_window_extent().p0)[1]
        ax.legend(handles=keys, fontsize=6.5, loc="upper left", bbox_to_anchor=(0, below - 0.02), ncol=1,
                  frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


OFFSETS = [(6, 4), (6, -12), (-6, 4), (-6, -12), (6, 16), (6, -24), (-6, 16), (-6, -24), (18, 4), (-18, 4),
           (6, 28), (6, -36), (30, 4), (-30, 4), (6, 40), (6, -48)]  # points, tried in turn


def place_labels(fig, ax, labels: list[tuple[float, float, str]], bars: list[tuple[float, float, float]] = (),
                 marker: float = 6.0) -> list:
    """Write each ``(x, y, text)`` beside its point at the first offset (:data:`OFFSETS`) where its box overlaps no
    label placed before it, no point's marker (a square of ``marker`` points around each ``(x, y)``) and no error bar
    (each ``(x, low, high)`` of ``bars``, as wide as its caps); the last offset is taken if none is free. Returns the
    labels' boxes, in display coordinates."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    half = marker * fig.dpi / 72 / 2
    markers = [Bbox.from_extents(px - half, py - half, px + half, py + half)
               for px, py in (ax.transData.transform((x, y)) for x, y, _ in labels)]
    for x, low, high in bars:  # the caps are 3 points each side of the bar
        (px, p_low), (_, p_high) = ax.transData.transform([(x, low), (x, high)])
        cap = 3 * fig.dpi / 72
        markers.append(Bbox.from_extents(px - cap, p_low, px + cap, p_high))
    placed = []
    for x, y, text in sorted(labels):
        for dx, dy in OFFSETS:
            ha = "left" if dx >= 0 else "right"
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8, ha=ha)
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in (*placed, *markers)) or (dx, dy) == OFFSETS[-1]:
                placed.append(box)
                break
            label.remove()
    return placed


def _page(bench: Bench, table: list[dict], methods_: list[Method], transfers: dict[str, list[dict]]) -> str:
    deployable = [r for r in table if not r["oracle"]]
    oracle = [r for r in table if r["oracle"]]
    lines = [f"# cola bench: {bench.model} on {bench.task} ({bench.preset})", "",
             f"Every method on the same {table[0]['n']} test samples ({bench.mode} mode), paired: accuracy with its "
             "95% interval, layers per input, the difference from full depth and from the method's control with the "
             "95% interval of the paired difference and McNemar's exact p, and the verdict they give (a tie needs an "
             "interval within ±3 points; wider is inconclusive). Fit on train, chosen on dev, reported on test.", "",
             "## Verdicts", "", markdown(deployable), ""]
    if oracle:
        lines += ["## ORACLE rows: best of k, checked against the gold", "",
                  "Not deployable: each is right when any of its k tries is right by the gold answer, and stands "
                  "beside its chance control at the same k.", "", markdown(oracle), ""]
    extras = [m for m in methods_ if "vs_static" in m.extra]
    if extras:
        lines += ["## Against one static chain at equal layers", "",
                  "| method | static chain | difference [95% CI], p |", "|---|---|---|"]
        for m in extras:
            d = m.extra["vs_static"]
            lines.append(f"| {m.name} | {m.extra['static_at_equal_layers']} | {d['delta']:+.3f} "
                         f"[{d['delta_ci'][0]:+.3f}, {d['delta_ci'][1]:+.3f}], p = {d['p']:.2g} |")
        lines.append("")
    search = next((m for m in methods_ if m.extra.get("stage") == "search-test"), None)
    if search is not None:
        lines += [f"Per-sample search (ORACLE): wrong → right {search.extra['wrong_to_right']:.1%} of the samples full "
                  f"depth gets wrong, right → shorter {search.extra['right_to_shorter']:.1%} of those it gets right.",
                  ""]
    taken = adopted(bench)
    if taken:
        lines += ["Searches adopted (`--adopt`; the same config): " + "; ".join(
            f"{name} ← `{t['from']}`" + (" (linked)" if t["recorded"] == t["of"] else
                                        f" ({t['recorded']} of {t['of']} samples; the rest searched here)")
            for name, t in taken.items()) + ".", ""]
    times = stage_times(bench)
    if times:
        lines += [f"Time: the {len(times)} stages timed in this folder took {sum(times.values()) / 60:.1f} min of "
                  f"wall time, summed over the sittings each ran in (`stages/{TIMES}`; an adopted stage takes none).",
                  ""]
    left_out = skipped(bench)
    if left_out:
        lines += ["Stages left out (they could not be made from what they read): " + "; ".join(
            f"{name}: {why}" for name, why in left_out.items()) + ".", ""]
    lines += ["![accuracy against layers per input](pareto.png)", ""]
    for task, rows in transfers.items():
        split = bench.transfer_split(task) or "generated"
        lines += [f"## Transfer: {task}", "",
                  f"The same methods as chosen on {bench.task} (their chains, routers, predictors and calibrated "
                  f"policies unchanged, nothing chosen on {task}) on {rows[0]['n']} samples of {task}'s {split} "
                  "split, each beside full depth and its control there.", "",
                  markdown([r for r in rows if not r["oracle"]]), ""]
        if any(r["oracle"] for r in rows):
            lines += ["ORACLE rows (best of k, checked against the gold):", "",
                      markdown([r for r in rows if r["oracle"]]), ""]
    return "\n".join(lines)


def _html(page: str, figure: Path) -> str:
    import markdown as md

    image = base64.b64encode(figure.read_bytes()).decode()
    body = md.markdown(page.replace("](pareto.png)", f"](data:image/png;base64,{image})"), extensions=["tables"])
    return ("<!doctype html><html><head><meta charset='utf-8'><title>cola bench</title><style>body{font-family:"
            "sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px "
            "solid #ccc;padding:3px 6px}img{max-width:100%}</style></head><body>" + body + "</body></html>\n")

