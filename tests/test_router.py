"""Label-free routing: the library's greedy cover, the predictor and its selection on dev, the router folder's
refusals, and end to end on a tiny model a task whose right chain is planted as a function of the input: the router
learns it and beats full depth on held-out samples; with random golds it does not."""

from __future__ import annotations

import json
import pickle
import random
import signal

import matplotlib.image
import pandas as pd
import pytest
import torch
from helpers import run_cola, without_wall

from cola import Chain, load_model
from cola.cli import main
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.evaluation.stats import mcnemar_exact
from cola.policies.library_router import Router, RouterError, candidates, chain_library, layers_computed, select
from cola.storage import read_eval
from cola.tasks import get_task, load_samples

SHORT = Chain((0, 1, 4, 5))  # the tiny model's chain without layers 2 and 3
FULL = Chain.full(6)


def record(sample_id: str, right: list[str], wrong: list[str] = ()) -> dict:
    return {"id": sample_id, "evaluations": [{"chain": c, "correct": True} for c in right]
            + [{"chain": c, "correct": False} for c in wrong]}


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(3, 3) == 1.0


def test_candidates_are_the_chains_right_most_often_then_shorter():
    records = [record("a", ["0-5", "0-1,4-5", "0-2,2,3-5"]), record("b", ["0-1,4-5", "0,2-5"], ["0-5"]),
               record("c", ["0,2-5"], ["0-1,4-5"])]
    assert candidates(records, depth=6) == [SHORT, Chain.parse("0,2-5"), Chain.parse("0-2,2,3-5")]
    assert candidates(records, depth=6, most=1) == [SHORT]


def test_library_covers_greedily_and_ignores_chains_right_on_too_few_samples():
    right = {FULL: {"s0", "s1", "s2", "s3"}, SHORT: {"s0", "s1", "s2", "s3"},  # the short chain keeps 4 right ones
             Chain.parse("0-2,2,3-5"): {"f0", "f1", "f2"},  # a repeat fixes 3
             Chain.parse("0,2-5"): {"lucky"}}  # right on one sample only
    library = chain_library(right, depth=6, size=8, min_support=3)
    assert library[0] == FULL
    # the repeat fixes 3 samples (gain 3 x (1 - 0.5/6)); the short chain saves 2 of 6 layers on 4 (gain 4 x 0.5 x 2/6)
    assert library[1:] == [Chain.parse("0-2,2,3-5"), SHORT]
    # allowed, the one-sample chain (gain 1 + 0.5/6) comes before the short one
    assert chain_library(right, depth=6, size=8, min_support=1)[1:] == [Chain.parse("0-2,2,3-5"),
                                                                         Chain.parse("0,2-5"), SHORT]
    assert chain_library(right, depth=6, size=2, min_support=3) == [FULL, Chain.parse("0-2,2,3-5")]
    assert chain_library({FULL: {"s0"}, SHORT: {"s0"}}, depth=6, min_support=1, length_weight=0) == [FULL]


def test_layers_computed_counts_the_feature_layers_once():
    assert layers_computed(FULL, 2) == 6
    assert layers_computed(SHORT, 2) == 4
    assert layers_computed(Chain((3, 4, 5)), 2) == 5


def test_selection_on_dev_learns_a_planted_rule_and_not_noise():
    g = torch.Generator().manual_seed(0)

    def data(n: int, planted: bool):
        x = torch.randn(n, 5, generator=g)
        short_right = x[:, 0] > 0 if planted else torch.rand(n, generator=g) > 0.5
        return {2: x}, torch.stack([~short_right, short_right], dim=1)

    library = [FULL, SHORT]
    for planted in (True, False):
        train_x, train_y = data(200, planted)
        dev_x, dev_y = data(100, planted)
        test_x, test_y = data(400, planted)
        setting, predictor, table = select(train_x, train_y, dev_x, dev_y, library, depth=6, budget=1.0)
        assert len(table) == 3 * 2 * 6 and setting.features == 2
        picks = torch.argmax(predictor.probabilities(test_x[2]) - setting.mu * torch.tensor([6.0, 4.0]) / 6, dim=1)
        accuracy = float(test_y[torch.arange(400), picks].double().mean())
        full = float(test_y[:, 0].double().mean())
        if planted:
            assert accuracy > 0.9 and full < 0.6
        else:
            assert accuracy < full + 0.08


# -- end to end on a tiny model -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted_pool(tiny_folder) -> list[tuple[dict, str, str]]:
    """Four-option questions with the tiny model's answer through the full chain and through SHORT, where the two
    differ: (row, full's answer, SHORT's answer)."""
    cm = load_model(str(tiny_folder), device="cpu")
    rng = random.Random(0)
    rows = []
    for i in range(360):
        marker = rng.choice(("t40", "t41"))
        words = " ".join(f"t{rng.randrange(10, 38)}" for _ in range(3))
        options = rng.sample(range(50, 90), 4)
        rows.append({"id": f"q{i}", "question": f"{marker} {marker} {marker} {words}", "answerKey": "A",
                     "choices": [{"label": label, "text": f"t{o}"} for label, o in zip("ABCD", options)]})
    samples = [get_task("mc_jsonl").parse_row(r, r["id"]) for r in rows]
    evaluator = Evaluator(cm, get_task("mc_jsonl"), config=EvalConfig(mode="score", chat=False))
    full = {o.id: o.answer for o in evaluator.evaluate_many(FULL, samples, 64)}
    short = {o.id: o.answer for o in evaluator.evaluate_many(SHORT, samples, 64)}
    kept = [(r, full[r["id"]], short[r["id"]]) for r in rows if full[r["id"]] != short[r["id"]]]
    assert len(kept) >= 150, len(kept)
    return kept


def planted_files(pool, tmp_path, planted: bool) -> dict[str, str]:
    """train/dev/test JSONL files of the candidates: a question opening with 't40 t40 t40' has SHORT's answer as
    gold, one opening with 't41 t41 t41' the full chain's (``planted``), or the gold is either of the two at random."""
    rng = random.Random(1)
    rows = [{**r, "answerKey": short if (r["question"].startswith("t40") if planted else rng.random() < 0.5) else full}
            for r, full, short in pool]
    files = {}
    for name, part in (("train", rows[:60]), ("dev", rows[60:100]), ("test", rows[100:])):
        files[name] = str(tmp_path / f"{name}.jsonl")
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return files


def fit_and_eval(folder, pool, tmp_path, planted: bool, capsys) -> dict:
    files = planted_files(pool, tmp_path, planted)
    run = tmp_path / "run"
    common = ["--model", str(folder), "--device", "cpu", "--task", "mc_jsonl", "--mode", "score", "--no-chat"]
    assert main(["search", *common, "--data-file", files["train"], "--n", "0", "--sims", "3", "--out", str(run),
                 "--quiet"]) == 0
    router = tmp_path / "router"
    assert main(["router", "fit", "--runs", str(run), "--out", str(router), "--dev-file", files["dev"], "--dev-n", "0",
                 "--library", f"full;{SHORT}", "--features", "1,2", "--budget", "1.0", "--quiet"]) == 0
    out = tmp_path / "routed.jsonl"
    routed = ["eval", *common, "--data-file", files["test"], "--n", "0", "--router", str(router)]
    assert main(routed + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "McNemar exact p" in printed and "routed to the full chain" in printed
    summary, rows = read_eval(out)
    assert len(rows) == summary["n"] >= 50
    if planted:  # killed in its full-depth stage (the router's 10 batches recorded), resumed: the same rows and summary
        again = tmp_path / "killed.jsonl"
        child = run_cola([*routed, "--out", str(again)], kill_after=13)
        assert child.returncode == -signal.SIGKILL, child.stderr
        assert main(routed + ["--out", str(again)]) == 0
        assert read_eval(again)[1] == rows and without_wall(read_eval(again)[0]) == without_wall(summary)
    return summary, rows


def test_router_learns_a_planted_chain_and_beats_full_depth_held_out(tiny_folder, planted_pool, tmp_path, capsys):
    summary, rows = fit_and_eval(tiny_folder, planted_pool, tmp_path, True, capsys)
    full = summary["baselines"]["full"]
    assert summary["accuracy"] > 0.9 and full["accuracy"] < 0.65
    assert full["mcnemar_p"] < 1e-3 and full["router_only"] > full["other_only"]
    assert 0 < summary["full_share"] < 1  # both chains used: no collapse
    for r in rows:  # each input's chain is the planted one, and its layers count the 2 or 1 feature layers once
        assert r["chain"] in (str(FULL), str(SHORT))
        assert r["layers"] == layers_computed(Chain.parse(r["chain"]), summary["setting"]["features"])
    assert summary["mean_layers"] < 6
    random_pick = summary["baselines"]["random_pick"]
    assert random_pick["accuracy"] < summary["accuracy"] - 0.2
    # one static chain on the same samples, and the report's two sections from both evaluations
    common = ["--model", str(tiny_folder), "--device", "cpu", "--task", "mc_jsonl", "--mode", "score", "--no-chat",
              "--data-file", str(tmp_path / "test.jsonl"), "--n", "0"]
    assert main(["eval", *common, "--chain", str(SHORT), "--name", "short", "--out", str(tmp_path / "short.jsonl")]) == 0
    short_summary, short_rows = read_eval(tmp_path / "short.jsonl")
    assert short_summary["kind"] == "chain" and short_summary["mean_layers"] == 4 and short_summary["batch"] == 1
    assert short_summary["k"] == sum(r["correct"] for r in short_rows)
    report = tmp_path / "report"
    assert main(["report", "--evals", str(tmp_path / "routed.jsonl"), str(tmp_path / "short.jsonl"),
                 "--out", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert "## Per-sample or static?" in text and "## Label-free adaptation" in text
    assert "not held-out" not in text  # fitted on the train file, evaluated on the test file
    table = pd.read_csv(report / "adaptation.csv")
    row = table[table["versus"].str.startswith("full depth")].iloc[0]
    assert (row["only"], row["versus_only"]) == (full["router_only"], full["other_only"])
    row = table[table["versus"] == "short"].iloc[0]
    by_id = {r["id"]: r["correct"] for r in short_rows}
    assert row["only"] == sum(r["correct"] and not by_id[r["id"]] for r in rows)
    assert row["versus_only"] == sum(by_id[r["id"]] and not r["correct"] for r in rows)
    assert row["mcnemar_p"] == pytest.approx(mcnemar_exact(row["only"], row["versus_only"]))
    evaluations = pd.read_csv(report / "evaluations.csv")
    assert sorted(evaluations["kind"]) == ["chain", "router"]
    image = matplotlib.image.imread(report / "accuracy_layers-0.png")
    assert image.std() > 0.05 and "accuracy_layers-0.png" in text


def test_router_with_random_golds_does_not_beat_full_depth(tiny_folder, planted_pool, tmp_path, capsys):
    summary, _ = fit_and_eval(tiny_folder, planted_pool, tmp_path, False, capsys)
    full = summary["baselines"]["full"]
    assert not (full["mcnemar_p"] < 0.05 and full["router_only"] > full["other_only"])
    assert summary["accuracy"] < 0.7
    # the library chosen from the run itself: candidates asked on every searched sample, kept if right on >= 3
    covered = tmp_path / "covered"
    assert main(["router", "fit", "--runs", str(tmp_path / "run"), "--out", str(covered), "--dev-file",
                 str(tmp_path / "dev.jsonl"), "--dev-n", "0", "--features", "1", "--quiet"]) == 0
    assert "candidate chains asked on the 60 searched samples" in capsys.readouterr().out
    config = json.loads((covered / "config.json").read_text())
    assert config["library_from"] == "greedy cover" and config["library"][0] == str(FULL)
    assert config["environment"]["threads"] == torch.get_num_threads() and config["environment"]["torch"]
    assert all(round(c["train_accuracy"] * 60) >= 3 for c in config["library_accuracy"][1:])
    # evaluated on the samples it was selected on, it says so, and so does the report
    out = tmp_path / "on-dev.jsonl"
    assert main(["eval", "--model", str(tiny_folder), "--device", "cpu", "--task", "mc_jsonl", "--mode", "score",
                 "--no-chat", "--data-file", str(tmp_path / "dev.jsonl"), "--n", "0", "--router",
                 str(tmp_path / "router"), "--out", str(out)]) == 0
    assert "40 of these samples were used to fit or select" in capsys.readouterr().err
    assert read_eval(out)[0]["seen_in_fit"] == 40
    assert main(["report", "--evals", str(out), "--out", str(tmp_path / "report")]) == 0
    assert "its numbers are not held-out" in (tmp_path / "report" / "report.md").read_text()


def test_router_folder_refusals(tiny_folder, tmp_path):
    cm = load_model(str(tiny_folder), device="cpu")
    with pytest.raises(RouterError, match="not a router folder"):
        Router.load(tmp_path / "missing", cm)
    from cola.core.hashes import weights_hash
    from cola.policies.library_router import Predictor, Setting

    predictor = Predictor(torch.zeros(64).double(), torch.ones(64).double(), torch.zeros(2, 64).double(),
                          torch.zeros(2).double())
    config = {"model": cm.name, "depth": 6, "weights": weights_hash(cm), "mode": "score"}
    folder = Router(config, [FULL, SHORT], Setting(2, 1.0, "none", 0.0), predictor).save(tmp_path / "ok")
    assert Router.load(folder, cm).library == [FULL, SHORT]
    other = Router({**config, "model": "another", "depth": 30}, [FULL, SHORT], Setting(2, 1.0, "none", 0.0),
                   predictor).save(tmp_path / "other")
    with pytest.raises(RouterError, match="fitted for another"):
        Router.load(other, cm)
    stale = Router({**config, "weights": "sha256:0"}, [FULL, SHORT], Setting(2, 1.0, "none", 0.0),
                   predictor).save(tmp_path / "stale")
    with pytest.raises(RouterError, match="other weights"):
        Router.load(stale, cm)

    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (folder / "predictor.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(RouterError, match="not a readable predictor"):
        Router.load(folder, cm)
    assert not (tmp_path / "pwned").exists()
    (folder / "predictor.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(RouterError, match="not a readable predictor"):
        Router.load(folder, cm)


def test_router_fit_refuses_test_split_runs_and_missing_runs(tmp_path, capsys):
    assert main(["router", "fit", "--runs", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"mcts": {}, "split": "test", "task": "arc_easy"}))
    assert main(["router", "fit", "--runs", str(run), "--out", str(tmp_path / "r")]) == 2
    assert "fit a router on train runs" in capsys.readouterr().err


def test_run_samples_reads_a_runs_samples_again_in_order_with_its_control(data_dir):
    from cola.search.run import run_samples
    from cola.tasks import DataError, load_samples

    drawn = load_samples("arc_easy", data_dir, n=5, seed=3, split="train")
    ids = [s.id for s in reversed(drawn)]
    config = {"task": "arc_easy", "data": str(data_dir), "split": "train", "sample_ids": ids, "n": 5, "seed": 3}
    assert [s.id for s in run_samples(config)] == ids
    decoys = run_samples({**config, "control": "decoy"})
    assert [s.meta["true_gold"] for s in decoys] == [s.gold for s in run_samples(config)]
    assert all(s.gold != s.meta["true_gold"] for s in decoys)
    with pytest.raises(DataError, match="not in its data"):
        run_samples({**config, "split": "dev"})


def test_eval_and_report_bad_inputs(tmp_path, capsys):
    assert main(["eval", "--task", "synthetic", "--n", "2", "--out", str(tmp_path / "x.json")]) == 2
    assert "use .jsonl" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "r")]) == 2
    assert "--evals" in capsys.readouterr().err
    assert main(["report", "--evals", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r")]) == 2
    assert "not a cola eval output" in capsys.readouterr().err
    assert main(["eval", "--task", "synthetic", "--n", "2", "--router", str(tmp_path), "--chain", "0-3"]) == 2
    assert "does not take --chain" in capsys.readouterr().err


def test_router_fit_asks_each_chain_once_per_train_sample(tiny_folder, planted_pool, tmp_path, monkeypatch, capsys):
    """Without --library the candidates are asked on the searched samples to build the library; the fit reuses those
    verdicts (no chain asked twice on a sample), and each library chain's train accuracy is still its own."""
    import cola.policies.library_router

    files = planted_files(planted_pool, tmp_path, True)
    common = ["--model", str(tiny_folder), "--device", "cpu", "--task", "mc_jsonl", "--mode", "score", "--no-chat"]
    run = tmp_path / "run"
    assert main(["search", *common, "--data-file", files["train"], "--n", "12", "--sims", "8", "--out", str(run),
                 "--quiet"]) == 0
    asked, original = [], cola.policies.library_router.library_verdicts

    def counting(evaluator, library, samples, *args, **kwargs):
        asked.extend((str(c), s.id) for c in library for s in samples)
        return original(evaluator, library, samples, *args, **kwargs)

    monkeypatch.setattr(cola.policies.library_router, "library_verdicts", counting)
    router = tmp_path / "router"
    assert main(["router", "fit", "--runs", str(run), "--out", str(router), "--data-file", files["train"],
                 "--dev-file", files["dev"], "--dev-n", "20",
                 "--fit-n", "30", "--candidates", "4", "--min-support", "1", "--features", "1", "--budget", "1.0",
                 "--quiet"]) == 0
    assert len(asked) == len(set(asked))
    config = json.loads((router / "config.json").read_text())
    assert len(config["library"]) >= 2 and config["train_samples"] == 30
    evaluator = Evaluator(load_model(str(tiny_folder), device="cpu"), get_task("mc_jsonl"),
                          config=EvalConfig(mode="score", chat=False))
    by_id = {s.id: s for s in load_samples(get_task("mc_jsonl"), None, files["train"], 0)}
    train = [by_id[i] for i in config["train_ids"]]
    for entry in config["library_accuracy"]:
        right = [o.correct for o in evaluator.evaluate_many(Chain.parse(entry["chain"]), train, 16)]
        assert entry["train_accuracy"] == pytest.approx(sum(right) / len(right)), entry["chain"]
