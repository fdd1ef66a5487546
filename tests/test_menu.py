"""The fixed-menu control: every sample tries the chains of another run ranked without itself (leave-one-out), on
the embedded model; bad inputs are one clear error each."""

import json

import pytest
from helpers import RUNS, records

from cola import Chain
from cola.cli import main
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.search.menu import load_menu, ranked
from cola.storage import read_records
from cola.tasks import get_task, load_samples


def test_ranking_leaves_the_sample_out():
    menu = {"0-5": ["a", "b"], "0-4": ["a", "b", "c"], "0-3,5": ["a"], "1-5": ["b", "c"]}
    assert [str(c) for c in ranked(menu, "a")] == ["0-4", "1-5", "0-5"]  # 0-3,5 only had 'a' itself
    assert [str(c) for c in ranked(menu, "c")] == ["0-4", "0-5", "0-3,5", "1-5"]


def test_menu_run_tries_the_ranked_chains_on_the_embedded_model(smol, data_dir, tmp_path, capsys):
    out = tmp_path / "menu"
    args = ["search", "--task", "arc_easy", "--mode", "score", "--data-dir", str(data_dir), "--n", "2", "--seed", "1",
            "--sims", "5", "--control", "menu", "--menu", str(RUNS["cola"]), "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "same menu of chains" in capsys.readouterr().out
    menu = load_menu(RUNS["cola"], "smollm2-135m")
    assert menu == {e["chain"]: [r["id"] for r in records("cola") if any(
        x["chain"] == e["chain"] and x["correct"] for x in r["evaluations"])] for r in records("cola")
        for e in r["evaluations"] if e["correct"]}
    samples = {s.id: s for s in load_samples("arc_easy", data_dir, n=2, seed=1)}
    evaluator = Evaluator(smol, get_task("arc_easy"), config=EvalConfig(mode="score"))
    for record in read_records(out):
        chains = [e["chain"] for e in record["evaluations"]]
        full = str(Chain.full(30))
        assert chains == [full] + [str(c) for c in ranked(menu, record["id"]) if str(c) != full][:5]
        for e in record["evaluations"][:3]:  # verdicts are the evaluator's, chain by chain
            assert e["answer"] == evaluator.evaluate_one(Chain.parse(e["chain"]), samples[record["id"]]).answer
    assert json.loads((out / "config.json").read_text())["menu"].startswith("sha256:")


def test_bad_menu_inputs(tiny_folder, tmp_path, capsys):
    base = ["search", "--task", "synthetic", "--n", "2", "--sims", "3", "--quiet", "--out", str(tmp_path / "x")]
    assert main(base + ["--control", "menu"]) == 2
    assert "needs --menu RUN_DIR" in capsys.readouterr().err
    assert main(base + ["--control", "menu", "--menu", str(tmp_path / "nowhere")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(base + ["--model", str(tiny_folder), "--device", "cpu", "--control", "menu", "--menu",
                        str(RUNS["cola"])]) == 2
    assert "a run of another model" in capsys.readouterr().err
    assert main(base + ["--menu", str(RUNS["cola"])]) == 2
    with pytest.raises(ValueError, match="per-sample search run"):
        static = tmp_path / "static"
        static.mkdir()
        (static / "config.json").write_text(json.dumps({"static": True, "model": "m", "depth": 6}))
        load_menu(static, "m")
