"""`cola report` on fixture runs written by a small real search on the embedded model (tests/fixtures/runs):
every number is checked against a direct computation from the records."""

import json
import math
import shutil

import matplotlib.image
import pandas as pd
import pytest
from helpers import RUNS, records

from cola.cli import main


def layers(chain: str) -> list[int]:
    out = []
    for part in chain.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", *map(str, RUNS.values()), "--out", str(out)]) == 0
    return out


def test_accuracy_table_matches_records(report):
    table = pd.read_csv(report / "accuracy.csv")
    for name, variant in (("cola", "CoLa"), ("skip", "skip-only"), ("repeat", "recurrence-only")):
        rs = records(name)
        row = table[table["variant"] == variant].iloc[0]
        assert row["k"] == sum(r["best"]["correct"] for r in rs) and row["n"] == len(rs)
    original = table[table["variant"] == "original"]
    assert len(original) == 1 and original.iloc[0]["k"] == sum(r["full"]["correct"] for r in records("cola"))
    assert "decoy" not in set(table["variant"])


def test_findings_match_records(report):
    found = pd.read_csv(report / "findings.csv")
    for name, variant in (("cola", "CoLa"), ("skip", "skip-only"), ("repeat", "recurrence-only")):
        rs, depth = records(name), 30
        row = found[found["variant"] == variant].iloc[0]
        right = [r for r in rs if r["full"]["correct"]]
        wrong = [r for r in rs if not r["full"]["correct"]]
        shorter = [r for r in right if any(e["correct"] and e["length"] < depth for e in r["evaluations"])]
        fixed = [r for r in wrong if any(e["correct"] for e in r["evaluations"])]
        assert (row["right"], row["right_with_shorter"]) == (len(right), len(shorter))
        assert (row["wrong"], row["wrong_fixed"]) == (len(wrong), len(fixed))


def test_depth_usage_and_search_match_records(report):
    rs = records("cola")
    correct = [r for r in rs if r["best"]["correct"]]
    lengths = pd.Series([len(layers(r["best"]["chain"])) for r in correct])
    depth = pd.read_csv(report / "depth.csv")
    row = depth[depth["variant"] == "CoLa"].iloc[0]
    assert row["n_correct"] == len(correct)
    assert math.isclose(row["mean_length"], lengths.mean()) and math.isclose(row["mean_saved"], 30 - lengths.mean())
    assert math.isclose(row["p5_length"], lengths.quantile(0.05)) and math.isclose(row["p20_length"], lengths.quantile(0.2))

    usage = pd.read_csv(next(report.glob("layer_usage-*-all-none-*.csv")))
    for layer in (0, 7, 15, 29):
        counts = [layers(r["best"]["chain"]).count(layer) for r in correct]
        assert math.isclose(usage.loc[layer, "skipped"], sum(c == 0 for c in counts) / len(correct))
        assert math.isclose(usage.loc[layer, "repeated"], sum(c >= 2 for c in counts) / len(correct))
    uses = [sum(layers(r["best"]["chain"]).count(i) for r in correct) for i in range(30)]
    p = [u / sum(uses) for u in uses]
    summary = pd.read_csv(report / "layer_usage_summary.csv")
    row = summary[summary["variant"] == "CoLa"].iloc[0]
    assert math.isclose(row["entropy"], -sum(x * math.log(x) for x in p if x) / math.log(30))
    assert math.isclose(row["max_concentration"], max(p))

    search = pd.read_csv(report / "search.csv")
    row = search[(search["variant"] == "CoLa") & (search["control"] == "none")].iloc[0]
    firsts = [next((i for i, e in enumerate(r["evaluations"][1:], 1) if e["correct"]), None) for r in rs]
    firsts = [f for f in firsts if f is not None]
    assert row["found_correct"] == len(firsts)
    assert math.isclose(row["median_first_correct"], pd.Series(firsts).median())
    assert math.isclose(row["mean_unique_chains"], sum(len(r["evaluations"]) - 1 for r in rs) / len(rs))


def test_chance_control_matches_records(report):
    control = pd.read_csv(report / "chance_control.csv")
    assert len(control) == 1
    row = control.iloc[0]
    real, decoy = records("cola"), records("decoy")
    assert all(d["gold"] != d["true_gold"] for d in decoy)
    real_wrong = [r for r in real if not r["full"]["correct"]]
    decoy_wrong = [r for r in decoy if not r["full"]["correct"]]
    assert row["real_fixed"] == sum(any(e["correct"] for e in r["evaluations"]) for r in real_wrong)
    assert row["decoy_fixed"] == sum(any(e["correct"] for e in r["evaluations"]) for r in decoy_wrong)
    assert row["decoy_wrong"] == len(decoy_wrong)
    text = (report / "report.md").read_text()
    assert "only the gap between the real and the decoy share is what the search finds beyond chance" in text


def test_figures_exist_and_are_not_blank(report):
    pngs = list(report.glob("*.png"))
    assert {p.name.split("-")[0] for p in pngs} >= {"depth", "layers", "search", "chance_control.png"}
    for png in pngs:
        image = matplotlib.image.imread(png)
        assert png.stat().st_size > 5000 and image.std() > 0.05, png.name
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs) and "<table>" in html
    md = (report / "report.md").read_text()
    assert md.count("\n| ") == html.count("<tr>")  # every table row (header rows included) is a row of the page


def test_the_page_keeps_bold_tables_and_figures(tmp_path):
    from cola.report.pages import _html

    matplotlib.image.imsave(tmp_path / "f.png", [[0.0, 1.0]])
    page = _html(["# Title", "", "a **bold** word", "", "| x | y |", "|---|---|", "| 1 | 2 |", "",
                  "![a figure](f.png)"], tmp_path)
    assert "<h1>Title</h1>" in page and "<strong>bold</strong>" in page
    assert "<td>1</td>" in page and "<th>x</th>" in page and page.count("<tr>") == 2
    assert '<img alt="a figure" src="data:image/png;base64,' in page


def test_every_table_reads_with_pandas(report):
    for csv in report.glob("*.csv"):
        assert not pd.read_csv(csv).empty or csv.name == "chance_control.csv", csv.name


def test_mixed_configs_are_flagged(report, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(RUNS["cola"], other)
    config = json.loads((other / "config.json").read_text())
    config["model"] = "some-other-model"
    (other / "config.json").write_text(json.dumps(config))
    out = tmp_path / "mixed"
    assert main(["report", str(RUNS["cola"]), str(other), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "**These runs differ in model.**" in text and "no number averages across groups" in text
    table = pd.read_csv(out / "accuracy.csv")
    assert table["group"].nunique() == 2 and len(table[table["variant"] == "original"]) == 2


def test_shorter_chain_control_matches_records(report):
    table = pd.read_csv(report / "shorter_control.csv")
    assert len(table) == 1
    row = table.iloc[0]
    real, decoy = records("cola"), records("decoy")
    right = {r["id"]: r for r in real if r["full"]["correct"]}
    depth = 30
    assert row["right"] == len(right)
    assert row["real_shorter"] == sum(1 for r in right.values() if r["shortest_correct"] and
                                      r["shortest_correct"]["length"] < depth)
    same = [r for r in decoy if r["id"] in right]
    assert row["decoy_samples"] == len(same)
    assert row["decoy_shorter"] == sum(1 for r in same if r["shortest_correct"] and r["shortest_correct"]["length"] < depth)
    kept = [e["answer"] == r["full"]["answer"] for r in right.values() for e in r["evaluations"][1:] if e["length"] < depth]
    hit = [e["answer"] == r["gold"] for r in same for e in r["evaluations"][1:] if e["length"] < depth]
    assert row["real_chains"] == len(kept) and math.isclose(row["real_keep_rate"], sum(kept) / len(kept))
    assert row["decoy_chains"] == len(hit) and math.isclose(row["decoy_hit_rate"], sum(hit) / len(hit))
    assert "shorter chains giving the decoy" in (report / "report.md").read_text()


def test_oracle_controls_pass_at_k_by_hand(report):
    table = pd.read_csv(report / "oracle_controls.csv")
    budget = json.loads((RUNS["cola"] / "config.json").read_text())["mcts"]["sims"] + 1
    for name, control in (("cola", "none"), ("decoy", "decoy")):
        rows = table[(table["control"] == control) & (table["variant"] == "CoLa")]
        assert sorted(rows["at"]) == sorted({1, 5, budget} & set(range(1, budget + 1)))
        for _, row in rows.iterrows():
            expected = sum(any(e["correct"] for e in r["evaluations"][: row["at"]]) for r in records(name))
            assert row["k"] == expected and row["n"] == len(records(name))
            from cola.report.analysis import Run, pass_curve

            assert math.isclose(pass_curve(Run.load(RUNS[name]))[row["at"] - 1], expected / len(records(name)))
    first = table[(table["control"] == "none") & (table["variant"] == "CoLa") & (table["at"] == 1)].iloc[0]
    assert first["k"] == sum(r["full"]["correct"] for r in records("cola"))  # pass@1 is the full model
    assert matplotlib.image.imread(report / "pass_at_k.png").shape[0] > 100
    assert "## Oracle controls" in (report / "report.md").read_text()


def test_pass_at_k_refuses_k_beyond_the_budget():
    from cola.report.analysis import Run, pass_at_k

    run = Run.load(RUNS["cola"])
    with pytest.raises(ValueError, match="k must be between 1 and the run's 16 evaluations"):
        pass_at_k(run, 17)


def test_controls_compare_the_samples_both_runs_finished(tmp_path):
    """A decoy run stopped early (its first two samples only finished) and a real run that ran on: the chance, the
    shorter-chain and the oracle controls count both on the two samples both finished, and the oracle table's
    wrong -> right is counted by hand."""
    stopped = tmp_path / "decoy"
    shutil.copytree(RUNS["decoy"], stopped)
    lines = (stopped / "records.jsonl").read_text().splitlines(keepends=True)
    (stopped / "records.jsonl").write_text("".join(lines[:2]))
    out = tmp_path / "report"
    assert main(["report", str(RUNS["cola"]), str(stopped), "--out", str(out)]) == 0
    finished = {json.loads(line)["id"] for line in lines[:2]}
    real = [r for r in records("cola") if r["id"] in finished]
    decoy = [r for r in records("decoy") if r["id"] in finished]
    assert len(real) == len(decoy) == 2

    control = pd.read_csv(out / "chance_control.csv").iloc[0]
    assert control["real_wrong"] == sum(not r["full"]["correct"] for r in real)
    assert control["decoy_wrong"] == sum(not r["full"]["correct"] for r in decoy)
    shorter = pd.read_csv(out / "shorter_control.csv").iloc[0]
    assert shorter["right"] == sum(r["full"]["correct"] for r in real)

    oracle = pd.read_csv(out / "oracle_controls.csv")
    assert set(oracle["n"]) == {2}
    for control_name, rs in (("none", real), ("decoy", decoy)):
        last = oracle[oracle["control"] == control_name].sort_values("at").iloc[-1]
        wrong = [r for r in rs if not r["evaluations"][0]["correct"]]
        assert last["wrong"] == len(wrong)
        assert last["wrong_right"] == sum(any(e["correct"] for e in r["evaluations"]) for r in wrong)
    text = (out / "report.md").read_text()
    assert "| wrong → right |" in text and "arc_easy" in text


def test_the_label_names_the_split():
    from cola.report.analysis import Run

    run = Run.load(RUNS["cola"])
    run.config = {**run.config, "split": "dev"}
    assert run.label == f"{run.config['task']} dev ({run.config['mode']})"


def test_a_menu_control_is_in_its_searchs_group():
    from cola.report.analysis import Run

    run = Run.load(RUNS["cola"])
    menu = Run(run.folder, {**run.config, "control": "menu", "menu": "sha256:0"}, run.records)
    assert menu.group == run.group
    assert Run(run.folder, {**run.config, "seed": 1}, run.records).group != run.group
