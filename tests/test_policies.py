"""Label-free policies on a tiny random-weight model: a cascade on a planted task escalates exactly the inputs its
cheap chain is not confident on and computes the hand-counted layers; thresholds 0 and 1; a vote of identical chains
is the chain; self-consistency at temperature 0 is greedy decoding; the decoder's token log-probabilities; replaying a
table equals the live run; calibration; every bad spec is one clear error; the spec round-trips through `cola eval
--out`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import mc_rows, tiny_model

from cola import Chain
from cola.cli import main
from cola.core.prefix_cache import layers_computed
from cola.errors import ColaError
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.inference.generation import generate
from cola.policies import (
    KINDS,
    PolicySpec,
    ask_table,
    chains_from,
    confidence,
    make_spec,
    option_probabilities,
    policy,
    replay,
    run_policy,
    sweep,
)
from cola.policies.calibrate import calibrate, choose, parse_objective, table_requests
from cola.storage import read_eval
from cola.tasks import get_task

CHEAP = Chain((0, 1, 4, 5))
FULL = Chain.full(6)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def planted(tiny):
    """Questions whose gold is the cheap chain's answer where it is confident (max_prob at least the median: the
    *marked* inputs) and another option elsewhere, so the cheap chain is right exactly on the marked ones."""
    task = get_task("mc_jsonl")
    rows = mc_rows(40)
    evaluator = Evaluator(tiny, task, config=EvalConfig(mode="score", chat=False))
    samples = [task.parse_row(r, r["id"]) for r in rows]
    cheap = evaluator.evaluate_many(CHEAP, samples, 1)
    conf = [confidence(o, "max_prob") for o in cheap]
    threshold = sorted(conf)[len(conf) // 2]
    marked = {o.id for o, c in zip(cheap, conf) if c >= threshold}
    for r, o in zip(rows, cheap):
        r["answerKey"] = o.answer if r["id"] in marked else next(lab for lab in "ABCD" if lab != o.answer)
    samples = [task.parse_row(r, r["id"]) for r in rows]
    return evaluator, samples, rows, marked, threshold


def eval_command(folder, rows: list[dict], tmp_path) -> list[str]:
    """`cola eval` of the tiny model folder in score mode on ``rows`` (written as a data file under ``tmp_path``)."""
    data = tmp_path / "planted.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["eval", "--model", str(folder), "--device", "cpu", "--task", "mc_jsonl", "--data-file", str(data),
            "--mode", "score", "--no-chat", "--n", "0", "--batch-size", "8"]


def test_cascade_escalates_exactly_the_unmarked_inputs_and_counts_layers_by_hand(planted):
    evaluator, samples, _, marked, threshold = planted
    spec = policy("cascade", chains=(str(CHEAP), "full"), thresholds=(threshold,))
    rows = run_policy(spec, evaluator, samples, batch=8)
    escalated = {r["id"] for r in rows if r["chains_asked"] == 2}
    assert escalated == {s.id for s in samples} - marked and 0 < len(marked) < len(samples)
    assert all(r["correct"] for r in rows if r["id"] in marked)
    # the escalation reuses the cheap chain's first two positions (0, 1): 4 + (6 - 2) layers
    assert sum(r["layers"] for r in rows) == 4 * len(marked) + 8 * (len(samples) - len(marked))
    assert {r["stop"] for r in rows if r["id"] in marked} == {"kept at step 1"}


def test_threshold_zero_never_escalates_and_one_always_does(planted):
    evaluator, samples, *_ = planted
    never = run_policy(policy("cascade", chains=(str(CHEAP), "full"), thresholds=(0.0,)), evaluator, samples, 8)
    always = run_policy(policy("cascade", chains=(str(CHEAP), "full"), thresholds=(1.0,)), evaluator, samples, 8)
    assert {r["chains_asked"] for r in never} == {1} and {r["chains_asked"] for r in always} == {2}
    full = run_policy(policy("chain"), evaluator, samples, 8)
    assert [r["answer"] for r in always] == [r["answer"] for r in full]
    assert [r["answer"] for r in never] == [r["asked"][0]["answer"] for r in always]


def test_a_vote_of_identical_chains_is_the_chain_and_computes_it_once(planted):
    evaluator, samples, *_ = planted
    alone = run_policy(policy("chain", chains=(str(CHEAP),)), evaluator, samples, 8)
    for rule in ("majority", "confident", "weighted"):
        vote = run_policy(policy("vote", chains=(str(CHEAP),) * 3, k=3, rule=rule), evaluator, samples, 8)
        assert [r["answer"] for r in vote] == [r["answer"] for r in alone]
        assert [r["layers"] for r in vote] == [4] * len(samples)  # the second and third reuse the first's prefix


def test_vote_ties_go_to_the_chain_listed_first(planted):
    evaluator, samples, *_ = planted
    chains = ("0-1,4-5", "0-5", "0,2-5")
    rows = run_policy(policy("vote", chains=chains, k=3), evaluator, samples, 8)
    for r in rows:
        answers = [a["answer"] for a in r["asked"]]
        top = max(answers.count(a) for a in answers)
        assert r["answer"] == next(a for a in answers if answers.count(a) == top)
    assert any(len(set(a["answer"] for a in r["asked"])) == 3 for r in rows)  # the tie rule was exercised


def test_replaying_a_table_equals_the_live_run(planted):
    evaluator, samples, *_ = planted
    family = policy("cascade", chains=("0-1,4-5", "0-3", "full"), thresholds=(0.5, 0.5)).family()
    table = ask_table(evaluator, samples, table_requests(family, 6), family[0], batch=8)
    for spec in family[::37]:
        live = run_policy(spec, evaluator, samples, 8)
        chains = [Chain.parse(c, 6) for c in spec.chains]
        replayed = [replay(spec, chains, s, t) for s, t in zip(samples, table)]
        assert [(r["answer"], r["layers"], r["chains_asked"]) for r in live] == \
               [(r["answer"], r["layers"], r["chains_asked"]) for r in replayed]


def test_layers_computed_counts_what_a_prefix_cache_computes():
    assert layers_computed([(0, 1, 4, 5), range(6)]) == 8
    assert layers_computed([(0, 1, 2), (0, 1, 2), (0, 1)]) == 3
    assert layers_computed([(0, 2), (1, 2), (0, 2, 3)]) == 5


def test_calibration_objectives_choose_on_the_points_given():
    points = [{"accuracy": 0.50, "mean_layers": 30, "agreement": 1.00, "mean_chains": 1},
              {"accuracy": 0.52, "mean_layers": 25, "agreement": 0.96, "mean_chains": 1.4},
              {"accuracy": 0.40, "mean_layers": 20, "agreement": 0.80, "mean_chains": 1}]
    assert choose(points, parse_objective("consistency=0.95"), 30) == 1
    assert choose(points, parse_objective("budget=0.7"), 30) == 2
    assert choose(points, parse_objective("accuracy"), 30) == 1
    with pytest.raises(ColaError, match="agrees"):
        choose(points, ("consistency", 1.0 + 1e-6), 30)
    for bad in ("consistency", "consistency=1.5", "speed=2", "accuracy=1"):
        with pytest.raises(ColaError):
            parse_objective(bad)


def test_calibrate_uses_only_the_samples_it_is_given_and_meets_its_target(planted):
    evaluator, samples, *_ = planted
    spec = policy("cascade", chains=(str(CHEAP), "full"), thresholds=(1.0,))
    chosen, info = calibrate(spec, evaluator, samples[:20], "consistency=0.9", batch=8, split="dev")
    assert info["ids"] == [s.id for s in samples[:20]]
    point = info["points"][info["chosen"]]
    assert point["agreement"] >= 0.9 and chosen.thresholds == tuple(point["policy"]["thresholds"])
    cheaper = [p for p in info["points"] if p["mean_layers"] < point["mean_layers"]]
    assert all(p["agreement"] < 0.9 for p in cheaper)
    rows = run_policy(chosen, evaluator, samples[:20], 8)  # the point is what the live policy does on those inputs
    assert sum(r["layers"] for r in rows) / 20 == pytest.approx(point["mean_layers"])


def test_signals_by_hand():
    probs = option_probabilities([math.log(0.6), math.log(0.3), math.log(0.1)])
    assert probs == pytest.approx([0.6, 0.3, 0.1])
    assert option_probabilities([-2.0, -4.0], n_chars=[2, 4]) == pytest.approx([0.5, 0.5])
    from cola.evaluation.evaluator import Outcome

    o = Outcome("x", "0-5", "p", [math.log(0.6), math.log(0.3), math.log(0.1)], "A", "A", True)
    assert confidence(o, "max_prob") == pytest.approx(0.6)
    assert confidence(o, "margin") == pytest.approx(0.3)
    entropy = -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1))
    assert confidence(o, "certainty") == pytest.approx(1 - entropy / math.log(3))
    g = Outcome("x", "0-5", "p", "text", "12", "12", True, tokens=3, mean_logprob=math.log(0.5))
    assert confidence(g, "answer_prob") == pytest.approx(0.5)
    assert confidence(Outcome("x", "0-5", "p", "text", None, "12", False, tokens=3, mean_logprob=0.0),
                      "answer_prob") == 0.0


def test_decoder_log_probabilities_are_the_models_own(tiny):
    ids = torch.tensor([[1, 14, 27, 33, 8]])
    out = generate(tiny, FULL, ids, max_new_tokens=6)[0]
    whole = torch.cat([ids, torch.tensor([out.tokens])], dim=1)
    with torch.no_grad():
        logits = tiny.model(whole).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    expected = [float(logprobs[ids.shape[1] - 1 + i, t]) for i, t in enumerate(out.tokens)]
    assert out.logprobs == pytest.approx(expected, abs=1e-4)


def test_self_consistency_at_temperature_zero_is_greedy_and_seeded_samples_repeat(tiny):
    task = get_task("mc_jsonl")
    samples = [task.parse_row(r, r["id"]) for r in mc_rows(12, seed=3)]
    evaluator = Evaluator(tiny, task, config=EvalConfig(mode="generate", chat=False))
    greedy = run_policy(policy("chain"), evaluator, samples, 4)
    sc0 = run_policy(policy("self-consistency", k=5, temperature=0.0), evaluator, samples, 4)
    assert [(r["answer"], r["tokens"]) for r in sc0] == [(r["answer"], r["tokens"]) for r in greedy]
    hot = policy("self-consistency", k=4, temperature=1.0, seed=7)
    a, b = run_policy(hot, evaluator, samples, 4), run_policy(hot, evaluator, samples, 4)
    assert [r["asked"] for r in a] == [r["asked"] for r in b]
    assert all(r["chains_asked"] == 4 for r in a)
    assert any(len({x["tokens"] for x in r["asked"]} | {r["tokens"]}) > 1 for r in a)  # the samples differ


@pytest.mark.parametrize("kind, settings, match", [
    ("cascade", dict(chains=("0-3,9", "full"), thresholds=(0.5,)), "out of range"),
    ("cascade", dict(chains=("0-5,0-5,0-5", "full"), thresholds=(0.5,)), "longer than the maximum"),
    ("cascade", dict(chains=("0-x", "full"), thresholds=(0.5,)), "malformed"),
    ("cascade", dict(chains=("0-3", "full"), thresholds=(1.5,)), r"outside \[0, 1\]"),
    ("cascade", dict(chains=("0-3", "full"), thresholds=()), "needs 1 threshold"),
    ("vote", dict(chains=("0-3", "full"), k=3), "needs 3 chains"),
    ("vote", dict(chains=("0-3", "full"), k=0), "k must be at least 1"),
    ("vote", dict(chains=("0-3", "full"), rule="loudest"), "unknown vote rule"),
    ("self-consistency", dict(k=3), "needs --mode generate"),
    ("hedge", {}, "unknown policy"),
    ("chain", dict(signal="answer_prob"), "does not exist in score mode"),
    ("chain", dict(chains=("0-3", "full")), "asks one chain; 2 given"),
    ("chain", dict(thresholds=(0.5,)), "thresholds belong to a cascade policy, not a chain policy"),
    ("cascade", dict(chains=("0-3", "full"), thresholds=(0.5,), k=2), "k belongs to a vote or self-consistency"),
    ("router", {}, "needs the router's folder"),
])
def test_a_bad_spec_is_one_clear_error(kind, settings, match):
    with pytest.raises(ColaError, match=match):
        policy(kind, **settings).check(6, "score")


def test_every_kind_is_one_registered_class_and_spec_files_keep_one_layout():
    """Each kind's class owns its settings; every spec writes the same keys in the same order (those it has not at
    their layout values), so files written by any version load, and a spec round-trips through its JSON."""
    from cola.policies.spec import LAYOUT

    assert list(KINDS)[:6] == ["chain", "cascade", "vote", "self-consistency", "router", "layer-router"]
    specs = [policy("chain", chains=("0-3",)), policy("cascade", chains=("0-3", "full"), thresholds=(0.4,)),
             policy("vote", chains=("0-3", "full"), k=2, rule="weighted"),
             policy("self-consistency", k=4, temperature=0.7, seed=3), policy("router", router="r"),
             policy("layer-router", router="l")]
    for spec in specs:
        data = spec.to_dict()
        assert list(data) == ["kind", *LAYOUT] and type(spec) is KINDS[data["kind"]]
        assert PolicySpec.from_dict(json.loads(json.dumps(data))) == spec
    assert specs[0].to_dict() == {"kind": "chain", "chains": ["0-3"], "thresholds": [], "signal": None, "norm": False,
                                  "rule": "majority", "k": 1, "temperature": 0.0, "seed": 0, "router": None}


def test_missing_files_and_unknown_keys_are_clear_errors(tmp_path):
    with pytest.raises(ColaError, match="not found"):
        chains_from(tmp_path / "nope.json", 6)
    with pytest.raises(ColaError, match="not found"):
        PolicySpec.load(tmp_path / "nope.json")
    with pytest.raises(ColaError, match="unknown key"):
        PolicySpec.from_dict({"kind": "vote", "chainz": ["full"]})
    (tmp_path / "bi.json").write_text(json.dumps({"block_influence": [0.1] * 6, "chains": {"2": "0-1,4-5",
                                                                                          "1": "0-3,5"}}))
    assert chains_from(tmp_path / "bi.json", 6) == ["0-3,5", "0-1,4-5"]
    cascade = make_spec("cascade", 6, (), str(tmp_path / "bi.json"), calibrating=True)
    assert cascade.chains == ("0-1,4-5", "0-3,5", "0-5") and cascade.thresholds == (1.0, 1.0)


def test_cola_eval_policy_round_trips_its_spec_through_the_jsonl(tiny_folder, planted, tmp_path, capsys):
    _, _, rows, *_ = planted
    common = eval_command(tiny_folder, rows, tmp_path)
    first = tmp_path / "cascade.jsonl"
    assert main(common + ["--policy", "cascade", "--chain", str(CHEAP), "--threshold", "0.4", "--signal", "margin",
                          "--out", str(first)]) == 0
    summary, per_sample = read_eval(first)
    spec = PolicySpec.from_dict(summary["policy"])
    assert spec == policy("cascade", chains=(str(CHEAP), "0-5"), thresholds=(0.4,), signal="margin")
    assert summary["baselines"]["full"]["mcnemar_p"] <= 1 and len(per_sample) == len(rows)
    again = tmp_path / "again.jsonl"
    assert main(common + ["--policy", str(first.with_suffix(".json")), "--out", str(again)]) == 0
    assert [(r["answer"], r["layers"]) for r in read_eval(again)[1]] == [(r["answer"], r["layers"]) for r in per_sample]
    assert "McNemar" in capsys.readouterr().out
    assert main(common + ["--policy", "cascade", "--chain", "0-3,9", "--threshold", "0.4"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_sweep_points_are_replayed_settings_on_the_reported_samples(planted):
    evaluator, samples, *_ = planted
    family = policy("vote", chains=(str(CHEAP), "full", "0-3"), k=3).family(ks=(1, 3), rules=("majority", "confident"))
    assert [(s.k, s.rule) for s in family] == [(1, "majority"), (1, "confident"), (3, "majority"), (3, "confident")]
    table = ask_table(evaluator, samples, table_requests(family, 6), family[0], 8)
    points = sweep(family, samples, table, 6)
    live = run_policy(family[2], evaluator, samples, 8)
    assert points[2]["k"] == sum(r["correct"] for r in live)
    assert points[0]["mean_layers"] == 4 and points[0]["mean_chains"] == 1


def test_report_lists_each_policy_paired_and_draws_its_sweep(tiny_folder, planted, tmp_path, capsys):
    import matplotlib.image
    import pandas as pd

    _, _, rows, *_ = planted
    common = eval_command(tiny_folder, rows, tmp_path)
    assert main(common + ["--policy", "cascade", "--chain", str(CHEAP), "--threshold", "0.5", "--sweep",
                          "--out", str(tmp_path / "c.jsonl")]) == 0
    assert main(common + ["--chain", str(CHEAP), "--name", "cheap", "--out", str(tmp_path / "cheap.jsonl")]) == 0
    assert main(["report", "--evals", str(tmp_path / "c.jsonl"), str(tmp_path / "cheap.jsonl"),
                 "--out", str(tmp_path / "report")]) == 0
    summary, _ = read_eval(tmp_path / "c.jsonl")
    assert len(summary["sweep"]) == 21 and summary["calibration"] is None
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Label-free policies" in text and summary["name"] in text
    table = pd.read_csv(tmp_path / "report" / "adaptation.csv")
    versus = table[(table["kind"] == "policy") & (table["versus"] == "cheap")].iloc[0]
    assert versus["layers"] == pytest.approx(summary["mean_layers"]) and versus["samples"] == len(rows)
    evaluations = pd.read_csv(tmp_path / "report" / "evaluations.csv")
    assert set(evaluations["kind"]) == {"policy", "chain"}
    image = matplotlib.image.imread(tmp_path / "report" / "accuracy_layers-0.png")
    assert image.shape[0] > 100 and image.std() > 0


def test_the_router_as_a_policy_routes_and_counts_as_the_router_evaluation_does(planted):
    from cola.policies.library_router import Predictor, Router, Setting, routed_outcomes

    evaluator, samples, *_ = planted
    dim = evaluator.cm.config.hidden_size
    g = torch.Generator().manual_seed(0)
    predictor = Predictor(torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64),
                          torch.randn(2, dim, generator=g, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    router = Router({}, [FULL, CHEAP], Setting(2, 1.0, "none", 0.0), predictor)
    rows = run_policy(policy("router", router="r"), evaluator, samples, 8, router=router)
    expected = routed_outcomes(router, evaluator, samples, 8)
    assert [(r["asked"][0]["chain"], r["layers"], r["answer"]) for r in rows] == \
           [(str(c), layers, o.answer) for c, layers, o in expected]
    assert len({r["asked"][0]["chain"] for r in rows}) == 2  # both chains are routed to


def test_a_replayed_evaluation_equals_the_live_one_but_is_not_timed(planted):
    from cola.policies import evaluate_policy

    evaluator, samples, *_ = planted
    spec = policy("vote", chains=(str(CHEAP), "full", "0-3"), k=3, rule="confident")
    family = spec.family(ks=(1, 3))
    header = {"task": "mc_jsonl", "split": None}
    live, live_rows = evaluate_policy(spec, evaluator, samples, 8, header, family=family)
    again, rows = evaluate_policy(spec, evaluator, samples, 8, header, family=family, replayed=True)
    keys = ("answer", "correct", "layers", "chains_asked", "full_correct")
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in live_rows]
    assert again["sweep"] == live["sweep"] and again["wall_s"] is None and live["wall_s"] > 0
    assert again["baselines"]["full"]["mcnemar_p"] == live["baselines"]["full"]["mcnemar_p"]
