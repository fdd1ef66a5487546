"""CoLa as an lm-eval backend (`cola.lmeval`): a chain's log-likelihoods, greedy flags, rolling log-likelihoods and
generations equal lm-eval's own `hf` backend on the physically rebuilt model; a policy and a router choose each
context's chain once; lm-eval's response cache is refused; `cola lm-eval` runs lm-eval's command line with a local
YAML task; and on the embedded model, lm-eval through the backend equals `cola eval` per sample."""

from __future__ import annotations

import json

import pytest

lm_eval = pytest.importorskip("lm_eval")

from helpers import generate_task_yaml, mc_rows, tiny_model  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from cola import Chain  # noqa: E402
from cola.cli import main  # noqa: E402
from cola.core.export import as_hf  # noqa: E402
from cola.errors import ChainError, UsageError  # noqa: E402
from cola.core.hashes import weights_hash  # noqa: E402
from cola.lmeval import ColaLM, context_key  # noqa: E402
from cola.policies.layer_router import RandomRouting, save_routers  # noqa: E402
from cola.tasks.lmeval import ARC_FIELDS, task_yaml  # noqa: E402

CONTEXTS = ["t11 t12 t13", "t20 t21", "t30 t31 t32 t33 "]  # the last ends in a space, moved onto its continuations
CONTINUATIONS = [" t50", " t51 t52", " t60 t61 t62"]


def instances(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def pairs() -> list[tuple[str, str]]:
    return [(c, o) for c in CONTEXTS for o in CONTINUATIONS]


@pytest.mark.parametrize("chain", ["0-5", "0-2,2,4-5", "5,4,3,2,1,0,0"])
def test_a_chain_through_the_backend_equals_the_hf_backend_on_the_rebuilt_model(chain):
    cm = tiny_model("llama")
    ours = ColaLM(cm=cm, chain=chain.replace(",", "+"), batch_size=2)
    theirs = HFLM(pretrained=as_hf(cm, chain), tokenizer=cm.tokenizer, batch_size=1)
    gen = [(c, {"until": ["t7"], "max_gen_toks": 6, "do_sample": False}) for c in CONTEXTS]
    written = ours.generate_until(instances("generate_until", gen))
    assert written == theirs.generate_until(instances("generate_until", gen))
    # each context's own greedy continuation among the others: its greedy flag is set, the others' are not
    asked = pairs() + [(c, " " + w.split()[0]) for c, w in zip(CONTEXTS, written) if w.split()]
    got = ours.loglikelihood(instances("loglikelihood", asked))
    want = theirs.loglikelihood(instances("loglikelihood", asked))
    assert [g for _, g in got] == [g for _, g in want] and any(g for _, g in got)
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in want], abs=1e-4)
    docs = [("t40 t41 t42 t43 t44 t45 t46",), ("t50",)]
    assert ours.loglikelihood_rolling(instances("loglikelihood_rolling", docs)) == pytest.approx(
        theirs.loglikelihood_rolling(instances("loglikelihood_rolling", docs)), abs=1e-4)


def test_each_context_is_routed_once_and_answered_through_its_routed_chain(tmp_path):
    cm = tiny_model("llama")
    folder = tmp_path / "random-routers"
    save_routers(RandomRouting([[0.3, 0.5, 0.2]] * cm.depth, seed=1), folder,
                 {"model": cm.name, "weights": weights_hash(cm)})
    backend = ColaLM(cm=cm, router=str(folder), batch_size=2)
    decided = []
    decide = backend.router.decide
    backend.router.decide = lambda layer, pooled, key: decided.append((layer, key)) or decide(layer, pooled, key)
    got = backend.loglikelihood(instances("loglikelihood", pairs()))
    assert len(decided) == len(CONTEXTS) * cm.depth  # one decision per layer per context, not per continuation
    for c, context in enumerate(CONTEXTS):
        ids = cm.tokenizer(context.rstrip())["input_ids"]
        chain = Chain(tuple(layer for layer in range(cm.depth)
                            for _ in range(decide(layer, None, context_key(ids)))) or (cm.depth - 1,))
        alone = ColaLM(cm=cm, chain=str(chain).replace(",", "+"))
        assert got[3 * c : 3 * c + 3] == alone.loglikelihood(instances("loglikelihood", pairs()[3 * c : 3 * c + 3]))


def test_a_policy_spec_answers_with_the_chain_it_decides(tmp_path):
    cm = tiny_model("llama")
    spec = tmp_path / "vote.json"
    spec.write_text(json.dumps({"kind": "vote", "chains": ["0-5", "0-2,4-5", "0-5"], "k": 3}))
    got = ColaLM(cm=cm, policy=str(spec)).loglikelihood(instances("loglikelihood", pairs()))
    full = ColaLM(cm=cm).loglikelihood(instances("loglikelihood", pairs()))
    assert got == full  # two of three votes are full depth's, and the first chain giving the winning answer is full


def test_bad_model_args_and_the_response_cache_are_one_clear_error(tmp_path):
    cm = tiny_model("llama")
    with pytest.raises(ChainError, match="out of range"):
        ColaLM(cm=cm, chain="0-6")
    with pytest.raises(UsageError, match="one of chain=, policy= or router="):
        ColaLM(cm=cm, chain="0-5", router=str(tmp_path))
    with pytest.raises(UsageError, match="unknown model_args colour"):
        ColaLM(cm=cm, colour="red")
    with pytest.raises(UsageError, match="--use_cache"):
        lm_eval.api.model.CachingLM(ColaLM(cm=cm), str(tmp_path / "cache.db"))
    info = ColaLM(cm=cm, chain="0-2+2").get_model_info()["cola"]
    assert info["chain"] == "0-2,2" and info["weights"] == weights_hash(cm) and info["depth"] == 6




@pytest.mark.slow  # `cola` in child processes: seconds each to start
def test_cola_lm_eval_runs_lm_evals_command_line_and_equals_cola_eval_per_sample(tiny_folder, tmp_path):
    # no --device: lm-eval asks for cuda:0, and on a machine without CUDA the backend runs on the CPU, as lm-eval's does
    from cola.core.loading import load_model
    from cola.evaluation.evaluator import EvalConfig, Evaluator
    from cola.tasks import get_task, load_samples

    _tiny_task(tmp_path, rows=12)
    data = tmp_path / "mc.jsonl"
    out = tmp_path / "out"
    assert main(["lm-eval", "--model_args", f"pretrained={tiny_folder},chain=0-2+2+4-5",  # --model cola: the default
                 "--tasks", "tiny_mc", "--include_path", str(tmp_path), "--batch_size", "4",
                 "--output_path", str(out), "--log_samples"]) == 0
    logged = {json.loads(line)["doc"]["id"]: json.loads(line) for path in out.rglob("samples_tiny_mc_*.jsonl")
              for line in path.read_text().splitlines()}
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["config"]["cola"]["chain"] == "0-2,2,4-5"
    evaluator = Evaluator(load_model(str(tiny_folder), device="cpu"), get_task("mc_jsonl"),
                          config=EvalConfig(mode="score"))
    samples = load_samples("mc_jsonl", data_file=data, n=0)
    outcomes = evaluator.evaluate_many(Chain.parse("0-2,2,4-5"), samples, batch=1)
    assert len(logged) == len(samples) == 12
    assert [(float(o.correct), float(bool(o.correct_norm))) for o in outcomes] == [
        (logged[o.id]["acc"], logged[o.id]["acc_norm"]) for o in outcomes]
    for o in outcomes:  # the same log-likelihoods, option by option, bitwise (batch 4 against 1: batch-invariant)
        assert [float(r[0][0]) for r in logged[o.id]["resps"]] == o.output


def _tiny_task(folder, rows: int = 6, metrics: tuple[str, ...] = ("acc", "acc_norm")) -> None:
    data = folder / "mc.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in mc_rows(rows)))
    fields = {**ARC_FIELDS, "metric_list": [{"metric": m} for m in metrics]}
    (folder / "tiny_mc.yaml").write_text(task_yaml("tiny_mc", data, **fields))


@pytest.mark.slow  # `cola` in child processes (the first in a test process starts their server: seconds)
def test_cola_search_on_an_lm_eval_task_records_resumes_after_sigkill_and_takes_the_decoy(tiny_folder, tmp_path):
    import signal

    from helpers import run_cola

    from cola.storage import read_config, read_records
    from cola.tasks import get_task, load_samples

    _tiny_task(tmp_path)
    task = get_task("lm-eval:tiny_mc", str(tmp_path))
    samples = load_samples(task, n=0)
    assert task.modes == ("score",) and sorted(s.id for s in samples) == [f"q{i}" for i in range(6)]
    rows = {row["id"]: row for row in mc_rows(6)}
    assert all(s.question == f"Question: {rows[s.id]['question']}\nAnswer:" for s in samples)  # lm-eval's context
    common = ["search", "--model", str(tiny_folder), "--device", "cpu", "--lm-eval-task", "tiny_mc",
              "--lm-eval-include", str(tmp_path), "--n", "0", "--sims", "6", "--quiet"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*common, "--out", str(whole)]) == 0
    child = run_cola([*common, "--out", str(killed)], kill_after=2)
    assert child.returncode == -signal.SIGKILL and len(read_records(killed)) == 2
    assert main([*common, "--out", str(killed)]) == 0  # resumed

    def strip(rs):
        return sorted(json.dumps({k: v for k, v in r.items() if k != "wall_time"}, sort_keys=True) for r in rs)

    assert strip(read_records(killed)) == strip(read_records(whole))
    config = read_config(whole)
    assert config["task"] == "lm-eval:tiny_mc" and config["mode"] == "score"
    assert config["lm_eval_include"] == str(tmp_path)
    # the full chain's verdicts are lm-eval's acc through the backend, document by document
    records = {r["id"]: r for r in read_records(whole)}
    backend = ColaLM(pretrained=str(tiny_folder), device="cpu")
    for s in samples:
        lls = [lp for lp, _ in backend.loglikelihood(instances("loglikelihood", [(s.question, " " + t)
                                                                                 for _, t in s.choices]))]
        assert records[s.id]["full"]["correct"] == (max(range(len(lls)), key=lls.__getitem__) == int(s.gold))
    decoy = tmp_path / "decoy"
    assert main([*common, "--control", "decoy", "--out", str(decoy)]) == 0
    assert main(["report", str(whole), str(decoy), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file()


def test_an_lm_eval_task_without_a_per_document_acc_is_one_clear_error(tiny_folder, tmp_path, capsys):
    _tiny_task(tmp_path, metrics=("mcc",))
    code = main(["search", "--model", str(tiny_folder), "--device", "cpu", "--lm-eval-task", "tiny_mc",
                 "--lm-eval-include", str(tmp_path), "--n", "0", "--sims", "4", "--quiet", "--out",
                 str(tmp_path / "run")])
    assert code == 2 and "no per-document acc" in capsys.readouterr().err




def test_a_generation_task_is_graded_by_its_filters_and_exact_match_as_lm_eval_grades_it(tiny_folder, tmp_path, capsys):
    from lm_eval.tasks import TaskManager

    from cola.evaluation.evaluator import EvalConfig, Evaluator
    from cola.tasks import get_task, load_samples

    cm = tiny_model("llama")
    questions = [" ".join(f"t{10 + (7 * i + j) % 60}" for j in range(4)) for i in range(6)]
    written = ColaLM(cm=cm).generate_until(instances("generate_until", [
        (q, {"until": ["t7"], "max_gen_toks": 5, "do_sample": False}) for q in questions]))
    # half the documents' answers are what the model writes (right), the others are not
    rows = [{"id": f"g{i}", "question": q, "answer": w if i % 2 == 0 else "t99"}
            for i, (q, w) in enumerate(zip(questions, written))]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tiny_gen.yaml").write_text(generate_task_yaml("tiny_gen", tmp_path / "gen.jsonl", "{{question}}",
                                                               ["t7"], 5))
    task = get_task("lm-eval:tiny_gen", str(tmp_path))
    outcomes = Evaluator(cm, task, config=EvalConfig(mode="generate")).evaluate_many(Chain.full(6),
                                                                                     load_samples(task, n=0), batch=3)
    theirs = lm_eval.simple_evaluate(model=ColaLM(cm=cm), tasks=["tiny_gen"], log_samples=True,
                                     task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    logged = {row["doc"]["id"]: row for row in theirs["samples"]["tiny_gen"]}
    assert {o.id: (o.answer, float(o.correct)) for o in outcomes} == {
        i: (row["filtered_resps"][0], row["exact_match"]) for i, row in logged.items()}
    assert sum(o.correct for o in outcomes) == 3
    # its gold is lm-eval's own target: a decoy cannot replace it, and is refused
    assert main(["search", "--model", str(tiny_folder), "--lm-eval-task", "tiny_gen", "--lm-eval-include",
                 str(tmp_path), "--mode", "generate", "--control", "decoy", "--quiet"]) == 2
    assert "decoy control takes lm-eval's multiple_choice tasks" in capsys.readouterr().err
