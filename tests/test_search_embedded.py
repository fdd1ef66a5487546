"""A real search on the embedded model: its best chains, re-run independently with `cola eval --chain`, give the
answers the search recorded; searching samples together in score mode visits what searching them alone does."""

import json

from cola.cli import main
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.search import MCTSConfig, SearchSpace
from cola.search.run import search_samples
from cola.storage import read_config, read_records
from cola.tasks import get_task, load_samples


def test_best_chains_reproduce_under_cola_eval(smol, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--task", "arc_easy", "--data-dir", str(data_dir), "--n", "2", "--seed", "1", "--mode", "score"]
    assert main(["search", *common, "--sims", "8", "--out", str(run), "--quiet"]) == 0
    printed = capsys.readouterr().out
    records = read_records(run)
    assert len(records) == 2 and read_config(run)["task"] == "arc_easy"
    assert f"original accuracy: {sum(r['full']['correct'] for r in records) / 2:.4f}" in printed
    for record in records:
        assert record["unique_evaluations"] == 8 and len(record["evaluations"]) == 9
        assert record["full"]["chain"] == "0-29"
        fixed = record["best"]["correct"] and not record["full"]["correct"]
        out = tmp_path / f"{record['id']}.jsonl"
        assert main(["eval", *common, "--chain", record["best"]["chain"], "--out", str(out)]) == 0
        again = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}[record["id"]]
        assert again["answer"] == record["best"]["answer"], ("fixed" if fixed else "kept", record["best"])
        assert again["correct"] == record["best"]["correct"]


def test_score_mode_searches_together_equal_one_by_one(smol, data_dir):
    """Score mode with several samples at once: every search's chain prefills its question in the same packed layer
    calls; the searches visit the same chains with the same answers, and the margins agree to rounding."""
    evaluator = Evaluator(smol, get_task("arc_easy"), config=EvalConfig(mode="score"))
    samples = load_samples(get_task("arc_easy"), data_dir, n=2, seed=2)
    space, config = SearchSpace(smol.depth), MCTSConfig(sims=6)
    alone = {r["id"]: r for r in search_samples(evaluator, samples, space, config, seed=5, reward="margin")}
    together = list(search_samples(evaluator, samples, space, config, seed=5, reward="margin", batch=2))
    assert sorted(r["id"] for r in together) == sorted(alone)
    for record in together:
        expected = alone[record["id"]]["evaluations"]
        assert [(e["chain"], e["answer"]) for e in record["evaluations"]] == [(e["chain"], e["answer"]) for e in expected]
        assert max(abs(a["reward"] - b["reward"]) for a, b in zip(record["evaluations"], expected)) <= 1e-3
