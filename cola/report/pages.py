"""``cola report``: the study's tables, findings and figures for one or more search runs, as Markdown, a
self-contained HTML page, PNG figures and CSV tables."""

from __future__ import annotations

import base64
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..errors import UsageError
from ..storage import disk_full, no_interrupts
from . import analysis  # noqa: E402
from .analysis import ACTION_NAMES, EvalResult, Run  # noqa: E402


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _acc(row) -> str:
    return f"{row['share']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] (n={row['n']})"


def md_table(frame: pd.DataFrame, columns: dict[str, Callable[[pd.Series], object]]) -> list[str]:
    """The Markdown lines of a table with one row per row of ``frame``: ``columns`` maps each header to the function
    that renders its cell from the row."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(cell(row)) for cell in columns.values()) + " |"
                    for _, row in frame.iterrows()]


def _slug(run: Run) -> str:
    return f"{run.config['task']}-{run.config['mode']}-{run.actions}-{run.control}-{run.group}"


def figure_depth(run: Run, path: Path) -> str:
    table = analysis.depth_table(run)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = range(run.config["length_bounds"][0], run.config["length_bounds"][1] + 2)
    for transition, color in (("right->right", "tab:blue"), ("wrong->right", "tab:orange")):
        values = table.loc[table["transition"] == transition, "length"]
        ax.hist(values, bins=bins, alpha=0.6, color=color, label=f"{transition} ({len(values)})")
    ax.axvline(run.depth, color="black", linestyle="--", label=f"model depth {run.depth}")
    ax.set_xlabel("best-chain length (layers)")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    ax.set_title(f"{run.label}, {analysis.ACTION_NAMES[run.actions]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"Length of the best correct chain per sample, right→right and wrong→right, against the model's "
            f"depth ({run.label}).")


def figure_layers(run: Run, path: Path) -> str:
    usage = analysis.layer_usage(run)
    fig, ax = plt.subplots(figsize=(max(6, run.depth * 0.22), 2.2))
    image = ax.imshow(usage[["kept", "skipped", "repeated"]].T.values, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(3), ["kept", "skipped", "repeated"])
    ax.set_xticks(range(run.depth), [str(i) for i in range(run.depth)], fontsize=6)
    ax.set_xlabel("layer index")
    fig.colorbar(image, ax=ax, label="share of best chains")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"How often each layer is kept once, skipped or repeated in the correct best chains ({run.label})."


def figure_search(run: Run, path: Path) -> str:
    firsts = [r["first_correct_at"] for r in run.records if r["first_correct_at"] is not None]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(firsts, bins=20, color="tab:green")
    ax.set_xlabel("evaluations until the first correct chain")
    ax.set_ylabel("samples")
    ax.set_xlim(0, run.config["mcts"]["sims"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"Evaluations the search needed to find its first correct non-root chain, for the {len(firsts)} of "
            f"{len(run.records)} samples where it found one ({run.label}).")


def figure_control(table: pd.DataFrame, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3))
    x = range(len(table))
    ax.bar([i - 0.2 for i in x], table["real_share"], width=0.4, label="real gold")
    ax.bar([i + 0.2 for i in x], table["decoy_share"], width=0.4, label="decoy gold")
    ax.set_xticks(list(x), [f"{t}\n{v}" for t, v in zip(table["task"], table["variant"])], fontsize=8)
    ax.set_ylabel("wrong→right share")
    ax.set_ylim(0, 1.25)  # room for the legend above the bars
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.legend(loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "Share of originally-wrong samples for which the search found a chain giving the gold (real) or the decoy."


def figure_pass_at_k(runs: list[Run], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for run in runs:
        shares = analysis.pass_curve(run)
        ax.plot(range(1, len(shares) + 1), shares, label=f"{run.label} {ACTION_NAMES[run.actions]} [{run.control}]")
    ax.set_xscale("log")
    ax.set_xlabel("k (evaluations per sample, the full chain first)")
    ax.set_ylabel("pass@k")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ("pass@k: share of samples with a right answer among their first k evaluations, per run and control "
            "(the decoy run counts the decoy as right).")


def build_report(folders: list[str | Path], out: str | Path, evals: list[str | Path] = ()) -> Path:
    """Write report.md, report.html, the figures (PNG) and the tables (CSV) for the given search run folders and
    ``cola eval --out`` outputs (static chains, routers) into ``out``."""
    out = Path(out)
    runs = [Run.load(f) for f in folders]
    static = [str(r.folder) for r in runs if r.config.get("static")]
    if static:
        raise UsageError(f"{', '.join(static)}: a --static run (one chain for a task) is not a per-sample search; "
                         "cola report does not read it (report the chain it found with `cola eval --chain C --out "
                         "F.jsonl` and pass --evals F.jsonl)")
    runs = [r for r in runs if r.records]
    results = [EvalResult.load(path) for path in evals]
    if not runs and not results:
        raise UsageError("no finished records in the given run folders, and no evaluations (--evals)")
    with disk_full(out):  # a full disk leaves no half report: the staging folder goes
        out.mkdir(parents=True, exist_ok=True)
        _build(out, runs, results)
    return out


def _build(out: Path, runs: list[Run], results: list[EvalResult]) -> None:
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".building-"))  # every file made whole here, then moved in
    try:
        md: list[str] = ["# CoLa report", ""]
        figures: list[tuple[str, str]] = []
        if runs:
            _search_sections(runs, staging, md, figures)
        if results:
            _eval_sections(results, staging, md, figures)
        md += ["", "## Figures", ""]
        for name, caption in figures:
            md += [f"![{caption}]({name})", "", f"*{caption}*", ""]
        (staging / "report.md").write_text("\n".join(md) + "\n")
        (staging / "report.html").write_text(_html(md, staging))
        with no_interrupts():
            for path in sorted(staging.iterdir()):
                path.replace(out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _search_sections(runs: list[Run], out: Path, md: list[str], figures: list[tuple[str, str]]) -> None:
    """The sections on per-sample search runs: the study's tables and findings, the chance and oracle controls."""
    models = sorted({r.config["model"] for r in runs})
    md += [f"- model(s): {', '.join(models)}",
           f"- tasks: {', '.join(sorted({r.label for r in runs}))}",
           f"- budget (simulations per sample): {', '.join(str(s) for s in sorted({r.config['mcts']['sims'] for r in runs}))}",
           f"- seed(s): {', '.join(str(s) for s in sorted({r.config['seed'] for r in runs}))}",
           f"- runs: {', '.join(str(r.folder) for r in runs)}"]
    differences = analysis.config_differences(runs)
    if differences:
        md += ["", f"**These runs differ in {', '.join(differences)}.** They are reported per group (a group holds "
               "the runs that differ only in the ablation or the control); no number averages across groups."]
    md += ["", "## Accuracy (Table 1 of the study)", ""]
    accuracy = analysis.accuracy_table(runs)
    accuracy.to_csv(out / "accuracy.csv", index=False)
    if not accuracy.empty:
        variants = [v for v in ("original", "skip-only", "recurrence-only", "CoLa") if v in set(accuracy["variant"])]
        wide = accuracy.assign(cell=accuracy.apply(_acc, axis=1)).pivot_table(
            index=["group", "model", "task"], columns="variant", values="cell", aggfunc="first", sort=False)
        md += md_table(wide.reset_index(), {"group": lambda r: r["group"], "model": lambda r: r["model"],
                                            "task": lambda r: r["task"],
                                            **{v: (lambda r, v=v: "–" if pd.isna(r[v]) else r[v]) for v in variants}})
        md += ["", "Accuracy with 95% Wilson intervals; a variant's accuracy counts a sample right when its best chain "
               "answers correctly."]

    real = [r for r in runs if r.control == "none"]
    found = pd.DataFrame([analysis.findings(r) for r in real])
    md += ["", "## The two findings", ""]
    if real:
        found.to_csv(out / "findings.csv", index=False)
    else:  # every table below but the search behaviour needs one; their CSVs are not written
        md.append("No run without a control is among these runs: the findings, depth and layer-usage tables need one, "
                  "so they and their CSV files are left out.")
    for _, f in found.iterrows():
        md.append(f"- {f['task']} [{f['variant']}, group {f['group']}]: of {f['right']} samples the original model got "
                  f"right, {f['right_with_shorter']} ({_pct(f['share_shorter'])}) have a correct shorter chain "
                  f"(study: >75%); of {f['wrong']} it got wrong, {f['wrong_fixed']} ({_pct(f['share_fixed'])}) have a "
                  f"correct chain (study: >60%).")

    depth = pd.DataFrame([analysis.depth_summary(r) for r in real])
    usage = pd.DataFrame([analysis.usage_summary(r) for r in real])
    if real:
        depth.to_csv(out / "depth.csv", index=False)
        usage.to_csv(out / "layer_usage_summary.csv", index=False)
    search = pd.DataFrame([analysis.search_summary(r) for r in runs])
    search.to_csv(out / "search.csv", index=False)
    task_variant = {"task": lambda r: r["task"], "variant": lambda r: r["variant"]}
    md += ["", "## Depth", ""] + md_table(depth, {
        **task_variant, "correct best chains": lambda r: r["n_correct"],
        "mean length": lambda r: f"{r['mean_length']:.2f}", "mean layers saved": lambda r: f"{r['mean_saved']:.2f}",
        "5th pct length": lambda r: f"{r['p5_length']:.1f}", "20th pct length": lambda r: f"{r['p20_length']:.1f}"})
    md += ["", "## Layer usage", ""] + md_table(usage, {
        **task_variant, "usage entropy (normalised)": lambda r: f"{r['entropy']:.3f}",
        "max concentration": lambda r: f"{r['max_concentration']:.3f}",
        "never skipped": lambda r: r["never_skipped"] or "none"})
    md += ["", "## Search behaviour", ""] + md_table(search, {
        **task_variant, "control": lambda r: r["control"], "budget": lambda r: r["budget"],
        "samples with a correct chain": lambda r: f"{r['found_correct']}/{r['samples']}",
        "median evaluations to first correct": lambda r: f"{r['median_first_correct']:.1f}",
        "mean share of budget": lambda r: _pct(r["mean_budget_share"]),
        "mean unique chains": lambda r: f"{r['mean_unique_chains']:.1f}"})

    for run in real:
        slug = _slug(run)
        usage_table = analysis.layer_usage(run)
        usage_table.to_csv(out / f"layer_usage-{slug}.csv", index=False)
        analysis.depth_table(run).to_csv(out / f"depth-{slug}.csv", index=False)
        for name, draw in (("depth", figure_depth), ("layers", figure_layers), ("search", figure_search)):
            path = out / f"{name}-{slug}.png"
            figures.append((path.name, draw(run, path)))

    control = analysis.chance_control(runs)
    control.to_csv(out / "chance_control.csv", index=False)
    md += ["", "## Chance control", ""]
    if control.empty:
        md.append("No decoy run (`cola search --control decoy`) matches these runs.")
    else:
        md += md_table(control, {
            **task_variant,
            "real: wrong → right": lambda c: f"{c['real_fixed']}/{c['real_wrong']} ({_pct(c['real_share'])})",
            "decoy: wrong → decoy": lambda c: f"{c['decoy_fixed']}/{c['decoy_wrong']} ({_pct(c['decoy_share'])})",
            "gap": lambda c: _pct(c["gap"])})
        md += ["", "With this many chains tried, some chain picks any given answer by luck; the decoy share measures "
               "that luck, and only the gap between the real and the decoy share is what the search finds beyond "
               "chance."]
        at_chance = [f"{c['task']} ({c['variant']})" for _, c in control.iterrows() if c["gap"] <= 0]
        if at_chance:
            md[-1] += (f" Where the gap is zero or below ({', '.join(at_chance)}), the search reaches the decoy as "
                       "often as the gold: its wrong → right fixes there are no more than chance gives.")
        path = out / "chance_control.png"
        figures.append((path.name, figure_control(control, path)))
    shorter = analysis.shorter_control(runs)
    shorter.to_csv(out / "shorter_control.csv", index=False)
    if not shorter.empty:
        md += ["", "The first finding against the same control: of the samples the full model gets right, the share "
               "with a correct shorter chain, beside the share of the same samples whose decoy search reached the "
               "decoy with a shorter chain; and per shorter chain tried on them, the share that keep the full "
               "model's answer, beside the share that give the decoy.", ""]
        md += md_table(shorter, {
            **task_variant,
            "real: right → correct shorter chain":
                lambda c: f"{c['real_shorter']}/{c['right']} ({_pct(c['real_share'])})",
            "decoy: right → shorter chain giving the decoy":
                lambda c: f"{c['decoy_shorter']}/{c['decoy_samples']} ({_pct(c['decoy_share'])})",
            "gap": lambda c: _pct(c["gap"]),
            "shorter chains keeping the answer": lambda c: f"{_pct(c['real_keep_rate'])} of {c['real_chains']}",
            "shorter chains giving the decoy": lambda c: f"{_pct(c['decoy_hit_rate'])} of {c['decoy_chains']}"})

    oracle = analysis.oracle_controls(runs)
    oracle.to_csv(out / "oracle_controls.csv", index=False)
    md += ["", "## Oracle controls", "", "pass@k: the share of samples with a right answer among their first k "
           "evaluations (k = 1 is the full model). The search, the decoy search (right = the decoy), the fixed menu "
           "(`--control menu`: the same chains, chosen without the sample, tried on every sample) and best-of-N "
           "sampling of the full model (`--control sample`) at the same k, on the samples all runs of the same "
           "samples finished: only what the search reaches beyond its controls is more than tries. Wrong → right: "
           "of the samples whose first answer is not right, those with a right one among the first k.", ""]
    md += md_table(oracle, {
        **task_variant, "control": lambda o: o["control"], "k": lambda o: o["at"],
        "pass@k": lambda o: f"{o['k']}/{o['n']} ({_pct(o['share'])})",
        "wrong → right": lambda o: f"{o['wrong_right']}/{o['wrong']} "
                                   f"({_pct(o['wrong_right'] / o['wrong'] if o['wrong'] else math.nan)})"})
    path = out / "pass_at_k.png"
    figures.append((path.name, figure_pass_at_k(analysis.aligned(runs), path)))


def _html(md: list[str], folder: Path) -> str:
    """A self-contained page of the Markdown (the ``markdown`` library, with tables), images inlined as data URIs."""
    import markdown

    def inline(match: re.Match) -> str:
        data = base64.b64encode((folder / match.group(2)).read_bytes()).decode()
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", inline, "\n".join(md))
    body = markdown.markdown(text, extensions=["tables"])
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>CoLa report</title><style>{style}</style></head>" \
           f"<body>{body}</body></html>\n"


def figure_accuracy_layers(table: pd.DataFrame, depth: int, path: Path, title: str,
                           curves: Sequence[tuple[str, list[dict]]] = ()) -> str:
    """Accuracy against layers computed per input: one point per evaluation of ``table`` (chains, routers, policies),
    and per swept policy family (``curves``: name, points) a line through its settings."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, points in curves:
        points = sorted(points, key=lambda p: p["mean_layers"])
        ax.plot([p["mean_layers"] for p in points], [p["accuracy"] for p in points], "-", marker=".", linewidth=0.8,
                markersize=3, alpha=0.6, label=f"{name}: every setting (swept)")
    for kind, marker, color, label in (("chain", "o", "tab:blue", "one chain"),
                                       ("router", "*", "tab:red", "router (layers incl. features)"),
                                       ("policy", "D", "tab:green", "policy (chosen on dev)")):
        rows = table[table["kind"] == kind]
        if rows.empty:
            continue
        ax.errorbar(rows["mean_layers"], rows["share"], yerr=[rows["share"] - rows["ci_low"],
                    rows["ci_high"] - rows["share"]], fmt=marker, color=color, capsize=2,
                    markersize=7 if kind == "router" else 5, label=label)
        for _, row in rows.iterrows():
            ax.annotate(row["name"], (row["mean_layers"], row["share"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    ax.axvline(depth, color="black", linestyle="--", linewidth=0.8, label=f"model depth {depth}")
    ax.set_xlabel("layers computed per input (mean)")
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, frameon=False, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"Accuracy against layers computed per input, {title}: every evaluation of the table (one chain for every "
            "input, routers, label-free policies), and a line through every setting of each swept policy family.")


def _policy_section(results: list[EvalResult], md: list[str]) -> None:
    """*Label-free policies*: each policy's accuracy, cost and wall time against full depth run beside it, and where
    its settings were chosen."""
    policies = [e for e in results if e.summary["kind"] == "policy"]
    if not policies:
        return
    md += ["", "## Label-free policies", "",
           "Each policy answered its inputs without their gold; full depth ran in the same process on the same inputs "
           "(its wall time measured side by side). Layers computed per input count every chain the policy asked, after "
           "the prefixes earlier chains on the input ran (the prefix cache's counters). *Chosen on* names the split "
           "its thresholds, k, rule or temperature were calibrated on; a policy evaluated on inputs it was calibrated "
           "on is flagged above.", ""]
    frame = pd.DataFrame([{"s": e.summary, "full": e.summary["baselines"]["full"], "group": e.group,
                           "cal": e.summary.get("calibration")} for e in policies])
    md += md_table(frame, {
        "policy": lambda r: r["s"]["name"], "group": lambda r: r["group"],
        "accuracy [95% CI]": lambda r: f"{r['s']['accuracy']:.3f} [{r['s']['acc']['ci'][0]:.3f}, "
                                       f"{r['s']['acc']['ci'][1]:.3f}]",
        "full depth": lambda r: f"{r['full']['accuracy']:.3f}", "McNemar p": lambda r: f"{r['full']['mcnemar_p']:.3g}",
        "layers (× full)": lambda r: f"{r['s']['mean_layers']:.2f} ({r['s']['layers_ratio']:.3f})",
        "chains asked": lambda r: f"{r['s']['mean_chains']:.2f}", "tokens": lambda r: f"{r['s']['mean_tokens']:.1f}",
        "wall (× full)": lambda r: "replayed, not timed" if r["s"].get("replayed")
        else f"{r['s']['wall_s']:.1f} s ({r['s']['wall_ratio']:.3f})",
        "chosen on": lambda r: f"{r['cal']['split']} ({r['cal']['n']}, {r['cal']['objective']})" if r["cal"]
        else "given"})


def _eval_sections(results: list[EvalResult], out: Path, md: list[str], figures: list[tuple[str, str]]) -> None:
    """*Per-sample or static?* (every evaluated chain and router, per task and split) and *Label-free adaptation*
    (each router against full depth, its random-pick control and every other evaluation of its group, paired)."""
    table = analysis.eval_table(results)
    table.to_csv(out / "evaluations.csv", index=False)
    md += ["", "## Per-sample or static?", "",
           "Held-out accuracy of one chain for every input — full depth, block-influence chains (`cola prune`, chosen "
           "on train), the best static chain (`cola search --static`, chosen on dev) — and of routers (`cola router "
           "fit`, fitted on train, selected on dev), from `cola eval --out` outputs. Each group is one model, task, "
           "split and prompt format: the split every number comes from is in its heading. The report selects "
           "nothing: each chain was chosen by the command that made it, on the split that command names."]
    for i, (group, rows) in enumerate(table.groupby("group", sort=False)):
        md += ["", f"### {group}", ""] + md_table(rows.sort_values("mean_layers", ascending=False), {
            "evaluation": lambda r: r["name"], "kind": lambda r: r["kind"],
            "chain": lambda r: "routed" if pd.isna(r["chain"]) else r["chain"],
            "layers per input": lambda r: f"{r['mean_layers']:.2f}",
            "accuracy [95% CI]": lambda r: f"{r['share']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
                                           f"({r['k']}/{r['n']})", "samples": lambda r: r["n"]})
        depth = next(e.summary["depth"] for e in results if e.group == group)
        curves = [(e.summary["name"], e.summary["sweep"]) for e in results
                  if e.group == group and e.summary.get("sweep")]
        path = out / f"accuracy_layers-{i}.png"
        figures.append((path.name, figure_accuracy_layers(rows, depth, path, group, curves)))
    for e in results:
        if e.summary.get("seen_in_fit"):
            md += ["", f"**{e.summary['name']}: {e.summary['seen_in_fit']} of its {e.summary['n']} samples were used "
                   "to fit or select the router: its numbers are not held-out.**"]
        if e.summary.get("seen_in_calibration"):
            md += ["", f"**{e.summary['name']}: {e.summary['seen_in_calibration']} of its {e.summary['n']} samples "
                   "were used to calibrate the policy: its numbers are not held-out.**"]
    _policy_section(results, md)

    versus = analysis.adaptation_table(results)
    versus.to_csv(out / "adaptation.csv", index=False)
    routers = [e for e in results if e.summary["kind"] == "router"]
    policies = [e for e in results if e.summary["kind"] == "policy"]
    paired_columns = {
        "versus": lambda v: v["versus"], "its layers": lambda v: f"{v['versus_layers']:.2f}",
        "samples": lambda v: v["samples"], "{who} right": lambda v: v["right"],
        "its right": lambda v: v["versus_right"],
        "{who} only": lambda v: v["only"], "it only": lambda v: v["versus_only"],
        "McNemar p": lambda v: f"{v['mcnemar_p']:.3g}"}

    def paired_table(frame: pd.DataFrame, who: str, lead: dict) -> list[str]:
        return md_table(frame, {**lead, **{k.format(who=who): f for k, f in paired_columns.items()}})

    if policies:
        md += ["", "### Each policy, paired", ""] + paired_table(versus[versus["kind"] == "policy"], "policy", {
            "policy": lambda v: v["evaluation"], "group": lambda v: v["group"],
            "layers": lambda v: f"{v['layers']:.2f}"})
    if not routers:
        return
    md += ["", "## Label-free adaptation", "",
           "Each router against what it must beat, paired on the samples both answered: right only under the router, "
           "right only under the other, and McNemar's exact two-sided p. Full depth and a random pick from the "
           "router's library with its pick frequencies come from the router's own evaluation; the rest are the "
           "other evaluations of its group (static chains, block-influence chains, a router fitted on decoy runs: it "
           "can only have learned luck, so if it beats full depth something leaks)."]
    for e in routers:
        s = e.summary
        fitted = s["fitted_on"]
        md += ["", f"### {s['name']} — {e.group}", "",
               f"Fitted on {fitted.get('task')} {fitted.get('split') or ''} runs (control {fitted.get('control')}); "
               f"{len(s['library'])} chains, features after {s['setting']['features']} layers; accuracy "
               f"{s['accuracy']:.3f} ({s['k']}/{s['n']}) at {s['mean_layers']:.2f} layers computed per input "
               f"({s['mean_layers'] / s['depth']:.3f} × depth, mean routed chain {s['mean_length']:.2f}); routed to "
               f"the full chain: {_pct(s['full_share'])} of inputs (all of them would be a collapse to full depth).",
               ""]
        md += paired_table(versus[(versus["kind"] == "router") & (versus["evaluation"] == s["name"])], "router", {})
