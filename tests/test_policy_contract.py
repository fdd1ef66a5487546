"""The contract every registered policy kind keeps, run for each kind :data:`cola.policies.spec.KINDS` holds: a new
kind (one class in cola/policies/spec.py, with its ``example``) is tested here with no edit. Its spec round-trips
its JSON; ``cola eval --policy`` and the lm-eval backend give the same answer to every input; a replayed table gives
the live rows."""

from __future__ import annotations

import json

import pytest
from helpers import mc_rows

from cola.core.loading import load_model
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.policies.harness import ask_table, replay, run_policy
from cola.policies.job import EvalJob
from cola.policies.spec import KINDS, LAYOUT, PolicySpec
from cola.tasks import Selection, get_task, load_samples

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from cola.lmeval import ColaLM  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_folder):
    return load_model(str(tiny_folder), device="cpu")


def _mode(spec: PolicySpec, depth: int) -> str:
    """Score mode where the kind takes it, else generate mode."""
    try:
        spec.check(depth, "score")
        return "score"
    except ValueError:
        spec.check(depth, "generate")
        return "generate"


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_spec_of_every_kind_round_trips_its_json_and_describes_itself(kind, model, tmp_path):
    spec = KINDS[kind].example(model, tmp_path / "router")
    assert type(spec) is KINDS[kind] and spec.kind == kind
    data = spec.to_dict()
    assert list(data) == ["kind", *LAYOUT]
    assert PolicySpec.from_dict(json.loads(json.dumps(data))) == spec
    (tmp_path / "spec.json").write_text(json.dumps(data))
    assert PolicySpec.load(tmp_path / "spec.json") == spec
    mode = _mode(spec, model.depth)
    assert isinstance(spec.describe(mode), str) and spec.describe(mode)
    assert spec.family() and all(type(s) is type(spec) for s in spec.family())


def _rows(tmp_path, n: int = 6):
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in mc_rows(n, seed=3)))
    return data


def _lm_eval_answers(backend: ColaLM, evaluator: Evaluator, samples) -> list[str | None]:
    """What the lm-eval backend answers each sample with, asked as lm-eval asks: each option's log-likelihood after
    the context in score mode (the highest wins), the context continued in generate mode (then graded by the
    task's extraction)."""
    if evaluator.config.mode == "score":
        answers = []
        for sample in samples:
            context, options = evaluator.task.score_format(sample)
            asked = [Instance("loglikelihood", {}, (context, evaluator.task.target_delimiter + o), i)
                     for i, o in enumerate(options)]
            scores = [lp for lp, _ in backend.loglikelihood(asked)]
            answers.append(sample.labels[max(range(len(scores)), key=scores.__getitem__)])
        return answers
    budget = evaluator.task.max_new_tokens
    asked = [Instance("generate_until", {}, (evaluator.prepare(s).prompt,
                                             {"until": ["\n\n"], "max_gen_toks": budget, "do_sample": False}), i)
             for i, s in enumerate(samples)]
    return [evaluator.task.extract(text, s) for text, s in zip(backend.generate_until(asked), samples)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_cola_eval_and_the_lm_eval_backend_give_the_same_answer_for_every_kind(kind, model, tiny_folder, tmp_path):
    spec = KINDS[kind].example(model, tmp_path / "router")
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    mode = _mode(spec, model.depth)
    task, data = ("mc_jsonl", _rows(tmp_path)) if mode == "score" else ("qa_jsonl", tmp_path / "qa.jsonl")
    if mode == "generate":
        data.write_text("".join(json.dumps({"id": f"g{i}", "question": f"t{10 + i} t{20 + i} t{30 + i}",
                                            "answer": "t40"}) + "\n" for i in range(4)))
    config = EvalConfig(mode=mode, chat=False)
    result = EvalJob(Selection(task, data_file=str(data), n=0), config, str(tiny_folder), "cpu",
                     policy=str(tmp_path / "spec.json"), batch=3).run()
    samples = load_samples(task, data_file=data, n=0)
    by_id = {row["id"]: row for row in result.rows}
    backend = ColaLM(cm=model, policy=str(tmp_path / "spec.json"), batch_size=2)
    answers = _lm_eval_answers(backend, Evaluator(model, get_task(task), config), samples)
    assert [by_id[s.id]["answer"] for s in samples] == answers


@pytest.mark.parametrize("kind", [k for k in KINDS if not KINDS[k].routed])
def test_a_table_replayed_gives_the_live_rows_for_every_kind(kind, model, tmp_path):
    spec = KINDS[kind].example(model, tmp_path / "router")
    mode = _mode(spec, model.depth)
    if mode != "score":
        pytest.skip(f"{kind} asks in generate mode; its table is compared in test_policies")
    evaluator = Evaluator(model, get_task("mc_jsonl"), EvalConfig(mode="score", chat=False))
    samples = load_samples("mc_jsonl", data_file=_rows(tmp_path), n=0)
    live = run_policy(spec, evaluator, samples, batch=3)
    table = ask_table(evaluator, samples, spec.requests(model.depth), spec, batch=3)
    chains = spec.check(model.depth, "score")
    replayed = [replay(spec, chains, s, answers) for s, answers in zip(samples, table)]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "layers"} for r in rows]  # noqa: E731
    assert strip(replayed) == strip(live)
