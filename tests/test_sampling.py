"""The best-of-N sampling control: draws follow the model's own distribution, seeded; the first evaluation is the
greedy answer; `cola search --control sample` writes records the report reads."""

import json
import math
from collections import Counter

import torch
from helpers import tiny_model

from cola import Chain
from cola.cli import main
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.inference.generation import RowDecoder, Sampler, generate
from cola.search.sampling import sampling_records
from cola.storage import read_records
from cola.tasks import get_task, load_samples


def test_sampler_draws_from_the_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    sampler = Sampler(seed=7)
    counts = Counter(sampler.draw(logits) for _ in range(4000))
    probs = torch.softmax(logits, -1).tolist()
    assert all(abs(counts[i] / 4000 - p) < 0.03 for i, p in enumerate(probs))
    a, b = Sampler(seed=3), Sampler(seed=3)
    assert [a.draw(logits) for _ in range(50)] == [b.draw(logits) for _ in range(50)]  # seeded


def test_sampling_at_a_low_temperature_is_greedy_and_at_one_varies():
    cm = tiny_model("llama")
    ids = torch.randint(3, 96, (1, 8), generator=torch.Generator().manual_seed(2))
    chain = Chain.full(cm.depth)
    greedy = generate(cm, chain, ids, max_new_tokens=10)[0].tokens
    decoder, got = RowDecoder(cm, max_new_tokens=10), {}
    decoder.add("cold", chain, ids, sampler=Sampler(seed=1, temperature=1e-4))
    for seed in range(4):
        decoder.add(seed, chain, ids, sampler=Sampler(seed=seed))
    while decoder:
        got.update(decoder.step())
    assert got["cold"].tokens == greedy
    assert len({tuple(got[s].tokens) for s in range(4)}) > 1


def test_score_mode_draws_options_from_their_likelihoods():
    cm = tiny_model("llama")
    evaluator = Evaluator(cm, get_task("synthetic_mc"), config=EvalConfig(mode="score"))
    sample = load_samples("synthetic_mc", n=1, seed=4)[0]
    [record] = sampling_records(evaluator, [sample], draws=3000, seed=0)
    greedy = evaluator.evaluate_one(Chain.full(cm.depth), sample)
    assert record["evaluations"][0]["answer"] == greedy.answer and record["full"]["answer"] == greedy.answer
    top = max(greedy.output)
    weights = [math.exp(lp - top) for lp in greedy.output]
    counts = Counter(e["answer"] for e in record["evaluations"][1:])
    for label, w in zip(sample.labels, weights):
        assert abs(counts[label] / 3000 - w / sum(weights)) < 0.03
    assert [e["correct"] for e in record["evaluations"]] == [e["answer"] == sample.gold for e in record["evaluations"]]
    assert list(sampling_records(evaluator, [sample], draws=3000, seed=0))[0]["evaluations"] == record["evaluations"]


def test_cli_sample_control_in_generate_mode(tiny_folder, tmp_path, capsys):
    out = tmp_path / "sample"
    assert main(["search", "--model", str(tiny_folder), "--task", "synthetic", "--n", "2", "--sims", "6", "--control",
                 "sample", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "best of N sampling" in printed and "answers of the full model" in printed
    records = read_records(out)
    assert len(records) == 2 and all(len(r["evaluations"]) == 7 for r in records)
    assert all({e["chain"] for e in r["evaluations"]} == {"0-5"} for r in records)
    assert json.loads((out / "config.json").read_text())["control"] == "sample"
