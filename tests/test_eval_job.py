"""`cola eval` as a library call: :class:`cola.policies.job.EvalJob` gives what the command writes, and a bad job
fails before any weight loads."""

from __future__ import annotations

import json

import pytest

from cola.cli import main
from cola.errors import UsageError
from cola.evaluation.evaluator import EvalConfig
from cola.policies.job import EvalJob
from cola.tasks import Selection


def test_a_job_writes_what_the_command_writes(tiny_folder, tmp_path):
    args = ["--model", str(tiny_folder), "--device", "cpu", "--task", "synthetic_mc", "--mode", "score", "--n", "6"]
    assert main(["eval", *args, "--chain", "0-2,2,3-5", "--out", str(tmp_path / "cli.jsonl")]) == 0
    job = EvalJob(Selection("synthetic_mc", n=6), EvalConfig(mode="score"), str(tiny_folder), device="cpu",
                  chains=("0-2,2,3-5",), out=str(tmp_path / "api.jsonl"))
    result = job.run()
    assert result.kind == "chain" and not result.reused and len(result.rows) == 6
    cli = [json.loads(line) for line in (tmp_path / "cli.jsonl").read_text().splitlines()]
    api = [json.loads(line) for line in (tmp_path / "api.jsonl").read_text().splitlines()]
    assert api == cli == result.rows
    assert job.run().reused  # the finished output is handed back, not recomputed


def test_batch_defaults_follow_what_is_asked():
    score, generate = EvalConfig(mode="score"), EvalConfig(mode="generate")
    assert EvalJob(Selection("arc_easy"), score).batch_size == 1  # each sample alone, as lm-eval
    assert EvalJob(Selection("arc_easy"), generate).batch_size == 16
    assert EvalJob(Selection("arc_easy"), score, router="r").batch_size == 16
    assert EvalJob(Selection("arc_easy"), score, policy="vote").batch_size == 16
    assert EvalJob(Selection("arc_easy"), score, batch=3).batch_size == 3


@pytest.mark.parametrize("changes, message", [
    (dict(router="r", chains=("full",)), "does not take --chain"),
    (dict(chains=("full", "0-3")), "need a policy"),
    (dict(chains=("0-99",)), "layer"),
    (dict(policy="vote", replay=True), "needs --sweep"),
    (dict(policy="chain", router="r"), "--router belongs to"),
    (dict(policy="layer-router", router="r", sweep=True), "no setting to calibrate"),
    (dict(policy="vote", chains=("full", "0-3"), calibrate="accuracy"), "synthetic_mc has none"),
])
def test_a_bad_job_fails_before_any_weight_loads(tiny_folder, monkeypatch, changes, message):
    monkeypatch.setattr("cola.core.loading.load_model", lambda *a, **k: pytest.fail("weights loaded"))
    job = EvalJob(Selection("synthetic_mc", n=2), EvalConfig(mode="score"), str(tiny_folder), **changes)
    with pytest.raises(Exception, match=message) as caught:
        job.run()
    assert isinstance(caught.value, (UsageError, ValueError))


@pytest.mark.parametrize("config, kind", [({"router": "program"}, "program"), (None, "layer-router")])
def test_router_without_policy_on_another_kind_of_folder_names_the_policy(tiny_folder, tmp_path, monkeypatch, config,
                                                                          kind):
    monkeypatch.setattr("cola.core.loading.load_model", lambda *a, **k: pytest.fail("weights loaded"))
    if config:
        (tmp_path / "config.json").write_text(json.dumps(config))
    job = EvalJob(Selection("synthetic_mc", n=2), EvalConfig(mode="score"), str(tiny_folder), router=str(tmp_path))
    with pytest.raises(UsageError, match=f"holds a {kind} router: pass --policy {kind} --router {tmp_path}"):
        job.run()
