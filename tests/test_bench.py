"""`cola bench`: every family of methods on one model and task, each beside its control, one resumable command and
one page; here on a tiny model with the smoke preset (the real models' pages are in docs/results/)."""

from __future__ import annotations

import json
import shutil
import signal
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from helpers import DATA_DIR, run_cola

import cola.core.loading
from cola.bench.plan import program_fit_steps
from cola.cli import main
from cola.storage import read_records, save_tensors_atomic

TRANSFER = ("--data-dir", str(DATA_DIR), "--transfer", "arc_easy")  # the smoke bench's methods also on ARC-Easy


def _bench(model, out, *extra) -> list[str]:
    return ["bench", "--preset", "smoke", "--model", str(model), "--device", "cpu", "--out", str(out), "--quiet",
            *extra]


@pytest.fixture(scope="module")
def smoke(tiny_folder, data_dir, tmp_path_factory) -> Path:
    """The smoke preset end to end (its methods also transferred to ARC-Easy), killed (SIGKILL) in its 30th durable
    write, then resumed by the same command: nothing that finished is recomputed and no sample is searched twice."""
    out = tmp_path_factory.mktemp("bench") / "smoke"
    child = run_cola(_bench(tiny_folder, out, *TRANSFER), kill_after=30, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr
    finished = {p: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    assert finished  # some stages finished before the kill
    assert main(_bench(tiny_folder, out, *TRANSFER)) == 0
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing that finished was recomputed
    for run in (out / "stages").iterdir():
        if (run / "records.jsonl").is_file():
            ids = [json.loads(line)["id"] for line in (run / "records.jsonl").read_text().splitlines()]
            assert len(ids) == len(set(ids)) == len(read_records(run))
    return out


@pytest.mark.slow  # the smoke fixture runs `cola bench` in a child process, killed
def test_smoke_has_every_family_each_learned_method_beside_its_controls_and_a_page(smoke):
    rows = json.loads((smoke / "results.json").read_text())
    by = {r["method"]: r for r in rows}
    families = {r["family"] for r in rows}
    assert {"reference", "static", "oracle", "learned", "label-free", "control"} <= families
    for name, control in (("library router", "random pick from the router's library"),
                          ("Dr.LLM's per-layer routers", "per-layer routers' random control"),
                          ("PoLar's predictor, pass@1", "random programs at the predictor's rates, pass@1")):
        assert by[name]["control"] == control and control in by and by[name]["vs_control"] is not None
    assert "per-layer routers trained on decoy labels" in by and "decoy-trained predictor, pass@1" in by
    # the tiny model's real and decoy searches keep no sample in common: the matched pair is left out, and said so
    left_out = json.loads((smoke / "stages" / "skipped.json").read_text())
    assert set(left_out) == {f"{where}{name}" for where in ("", "arc_easy/") for name in (
        "layer-router-matched", "layer-router-decoy-matched")} | {"layers-fit-matched", "layers-fit-decoy-matched"}
    why = left_out["layers-fit-matched"]
    assert "no train sample has a right path in both drllm-train and drllm-train-decoy" in why
    assert "Stages left out" in (smoke / "report.md").read_text() and not any("matched" in m for m in by)
    for r in rows:  # an oracle never stands beside full depth, nor without its control (bar the control itself)
        if r["oracle"]:
            assert r["vs_full"] is None and (r["control"] or r["family"] == "control")
    full_layers = by["full depth"]["mean_layers"]
    for r in rows:  # a static chain at equal layers is a control only below full depth's cost
        if r["family"] in ("learned", "label-free") and not r["oracle"] and r["mean_layers"] >= full_layers:
            assert "static_at_equal_layers" not in r and (r["family"] == "learned" or r["control"] is None), r
    assert any("static_at_equal_layers" in r for r in rows)
    for r in rows:  # each verdict follows from the row's own numbers
        if r["family"] == "control":
            assert r["verdict"] == "chance control"
        elif r["vs_control"] is not None and not (r["vs_control"]["p"] < 0.05 and r["vs_control"]["delta"] > 0):
            assert r["verdict"] == "no better than its chance control"
    assert (smoke / "pareto.png").stat().st_size > 10_000
    page = (smoke / "report.html").read_text()
    parser = HTMLParser()
    parser.feed(page)  # parses as HTML
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "<table>" in page
    md = (smoke / "report.md").read_text()
    assert md.index("## Verdicts") < md.index("ORACLE")  # the verdict table comes first
    plan = json.loads((smoke / "plan.json").read_text())
    test_ids = plan["splits"]["test"]["ids"]
    assert test_ids and not set(test_ids) & set(plan["splits"]["train"]["ids"])
    csv = (smoke / "results.csv").read_text().splitlines()
    assert csv[0].startswith("method,family,oracle") and len(csv) == len(rows) + 1
    # each stage's wall time, over the sittings it ran in: every stage made here finished once (the one the kill cut
    # short, in the resumed sitting), none that was left out
    times = [json.loads(line) for line in (smoke / "stages" / "times.jsonl").read_text().splitlines()]
    finished = [t["stage"] for t in times if t["finished"]]
    assert sorted(finished) == sorted({s["name"] for s in plan["stages"]} - set(left_out))
    assert all(t["seconds"] >= 0 and t["threads"] >= 1 for t in times)
    assert f"Time: the {len(finished)} stages timed in this folder took " in md


@pytest.mark.slow
def test_a_finished_bench_run_again_recomputes_nothing(smoke, tiny_folder, monkeypatch, capsys):
    stamps = {p: p.stat().st_mtime_ns for p in (smoke / "stages").rglob("*") if p.is_file()}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished bench loaded its model again")

    monkeypatch.setattr(cola.core.loading, "load_model", refuse)
    assert main(_bench(tiny_folder, smoke, *TRANSFER)) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    out = capsys.readouterr().out
    assert "page:" in out and "transfer to arc_easy (chosen on synthetic_mc):" in out


@pytest.mark.slow
def test_dry_run_on_a_bench_folder_estimates_what_is_left(smoke, tiny_folder, tmp_path, monkeypatch, capsys):
    """A finished stage costs nothing more; a search part-way costs the samples it has left."""
    monkeypatch.setattr(cola.core.loading, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    assert main(_bench(tiny_folder, smoke, *TRANSFER, "--dry-run")) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    left_out = json.loads((smoke / "stages" / "skipped.json").read_text())
    for name, line in lines.items():
        if name in left_out:  # tried again by a later run: not done
            assert not line.endswith("done")
        elif name != "(an":
            assert line.endswith("done") and " ~      0 s " in line, line
    half = tmp_path / "half"  # a bench whose search-test has half its samples recorded
    shutil.copytree(smoke / "stages" / "search-test", half / "stages" / "search-test")
    shutil.copy(smoke / "plan.json", half / "plan.json")
    records = (half / "stages" / "search-test" / "records.jsonl").read_text().splitlines()
    (half / "stages" / "search-test" / "records.jsonl").write_text("\n".join(records[:2]) + "\n")
    fit = half / "stages" / "program-fit" / "fit.partial"  # and PoLar's fit stopped after 3 of its 10 epochs
    fit.mkdir(parents=True)
    save_tensors_atomic(fit / "state.safetensors", {"x": torch.zeros(1)},
                        {"state": json.dumps({"history": [{}, {}, {}]})})
    assert main(_bench(tiny_folder, half, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert f"2 of {len(records)} samples recorded here" in out and "estimated left:" in out
    fit_line = next(line for line in out.splitlines() if line.startswith("  program-fit "))
    assert fit_line.endswith("3 of 10 epochs kept here")


@pytest.mark.slow
def test_an_only_run_keeps_the_whole_plan_and_page(smoke, tiny_folder, monkeypatch):
    """`--only` (or `--skip`) on a bench folder runs a part of the plan; plan.json keeps the whole plan in its order,
    and the page keeps every finished stage's row."""
    plan, page = (smoke / "plan.json").read_text(), (smoke / "report.md").read_text()
    monkeypatch.setattr(cola.core.loading, "load_model", lambda *a, **k: pytest.fail("vote is done: nothing loads"))
    assert main(_bench(tiny_folder, smoke, *TRANSFER, "--only", "vote")) == 0  # and what it reads
    assert (smoke / "plan.json").read_text() == plan
    assert (smoke / "report.md").read_text() == page


@pytest.mark.slow
def test_the_matched_routers_train_on_the_samples_both_searches_keep(smoke, tiny_folder, tmp_path):
    """Where the real and the decoy search keep samples in common (here: the real run standing in for the decoy's),
    the matched pair is fitted on exactly those."""
    from cola.bench.plan import Bench
    from cola.bench.run import run_bench
    from cola.policies.layer_router import kept_ids

    bench = Bench(str(tiny_folder), "synthetic_mc", str(tmp_path / "b"), "smoke", data_dir=str(DATA_DIR),
                  device="cpu")
    (tmp_path / "b" / "stages").mkdir(parents=True)
    for name, source in (("drllm-train", "drllm-train"), ("drllm-train-decoy", "drllm-train"),
                         ("drllm-dev", "drllm-dev")):
        bench.stage_path(name).symlink_to(smoke / "stages" / source, target_is_directory=True)
    stages = bench.select(("layers-fit-matched",))
    assert run_bench(bench, stages, bench.splits(), bench.plan(stages, bench.splits())) == {}
    config = json.loads((bench.stage_path("layers-fit-matched") / "config.json").read_text())
    assert config["same_samples_as"] == [str(bench.stage_path("drllm-train-decoy"))]
    assert config["train"]["used"] == len(kept_ids([smoke / "stages" / "drllm-train"])) > 0


@pytest.mark.slow
def test_transfer_reports_the_methods_as_chosen_on_the_bench_task_on_another_task(smoke):
    """`--transfer arc_easy`: every deployable method and its controls on ARC-Easy's test split, its chains, routers
    and predictors the bench's, its calibrated policies replayed as chosen on the bench's dev (not calibrated
    again), each beside full depth and its control there; a section of the page."""
    rows = json.loads((smoke / "transfer-arc_easy.json").read_text())
    by = {r["method"]: r for r in rows}
    for name, control in (("library router", "random pick from the router's library"),
                          ("Dr.LLM's per-layer routers", "per-layer routers' random control"),
                          ("PoLar's predictor, pass@1", "random programs at the predictor's rates, pass@1")):
        assert by[name]["control"] == control and control in by and by[name]["vs_full"] is not None
    assert {"full depth", "confidence cascade (at most 0.85 x depth layers on dev)",
            "confidence cascade (95% agreement with full depth on dev)", "vote over chains (calibrated on dev)",
            "best static chain (searched on dev)"} <= set(by)
    assert not any(r["method"].startswith(("per-sample search", "decoy search")) for r in rows)  # no search there
    assert {r["n"] for r in rows} == {12}
    from cola.tasks import load_samples

    test_ids = {s.id for s in load_samples("arc_easy", DATA_DIR, n=0, split="test")}
    stages = smoke / "stages"
    for name in ("full", "cascade", "vote", "router", "eval-program"):
        summary, there = json.loads((stages / "arc_easy" / f"{name}.json").read_text()), \
            [json.loads(line) for line in (stages / "arc_easy" / f"{name}.jsonl").read_text().splitlines()]
        assert summary["task"] == "arc_easy" and summary["split"] == "test" and {r["id"] for r in there} <= test_ids
    for name in ("cascade", "cascade-consistency", "vote"):  # as chosen on the bench's dev, replayed
        here, there = (json.loads((folder / f"{name}.json").read_text()) for folder in (stages, stages / "arc_easy"))
        assert here["calibration"] and not there.get("calibration") and there["policy"] == here["policy"]
    md = (smoke / "report.md").read_text()
    assert "## Transfer: arc_easy" in md and md.index("## Verdicts") < md.index("## Transfer")
    assert (smoke / "transfer-arc_easy.csv").read_text().startswith("method,family,oracle")


def test_a_transfer_task_is_checked_before_any_weight_loads(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cola.core.loading, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    for task, why in (("synthetic_mc", "is the bench's own task"), ("mc_jsonl", "reads a --data-file"),
                      ("gsm8k", "is not asked in score mode")):
        assert main(_bench(tiny_folder, tmp_path / "b", "--transfer", task)) == 2
        assert f"--transfer {task}: that task {why}" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_dry_run_prints_the_plan_and_loads_no_weights(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cola.core.loading, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    assert main(_bench(tiny_folder, tmp_path / "b", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "estimated total" in out and "polar-train" in out and "eval-program-random-full" in out
    assert not (tmp_path / "b").exists()
    seconds = {line.split()[0]: float(line.split("~")[1].split()[0]) for line in out.splitlines() if "~" in line}
    sizes = {line.split()[0]: int(line.split()[3]) for line in out.splitlines() if "~" in line}
    per_chain = seconds["full"] / sizes["full"]  # PoLar's fit is timed as training steps, beyond its encoding
    assert seconds["program-fit"] > sizes["program-fit"] * per_chain + 0.5
    assert program_fit_steps(1000) == 10 * -(-round(50_000 * 5 / 6) // 128)  # at most 50 programs a sample
    assert program_fit_steps(4, [3, 80, 0]) == 10 * -(-round((3 + 50 + 0 + 50) * 5 / 6) // 128)  # found, then at most
    assert main(_bench(tiny_folder, tmp_path / "b", "--dry-run", "--only", "static")) == 0
    only = capsys.readouterr().out
    assert " prune " in only and "static-best" in only and "layer-router" not in only
    assert "  full " in only  # every row is read against full depth: it comes along
    assert main(_bench(tiny_folder, tmp_path / "b", "--dry-run", "--only", "transfer", "--skip", "full",
                       *TRANSFER)) == 0
    only = capsys.readouterr().out
    assert "  arc_easy/full " in only and "  full " not in only
    assert main(_bench(tiny_folder, tmp_path / "b", "--dry-run", "--only", "nonsense")) == 2
    assert "unknown stage or family nonsense" in capsys.readouterr().err


@pytest.mark.slow
def test_an_output_made_by_cola_eval_is_adopted_as_the_same_row(smoke, tiny_folder, tmp_path):
    """The full-depth stage computed by the `cola eval` command (as the committed study's outputs were) and put in a
    bench's place gives the row the bench computed itself."""
    plan = json.loads((smoke / "plan.json").read_text())
    ids = plan["splits"]["test"]["ids"]
    data = tmp_path / "test.jsonl"
    from cola.tasks import load_samples

    samples = {s.id: s for s in load_samples("synthetic_mc", n=len(ids) * 6, seed=0)}
    rows = [{"id": i, "question": samples[i].question, "answerKey": samples[i].gold,
             "choices": [{"label": lab, "text": t} for lab, t in samples[i].choices]} for i in ids]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "full.jsonl"
    assert main(["eval", "--model", str(tiny_folder), "--device", "cpu", "--task", "mc_jsonl", "--data-file",
                 str(data), "--n", "0", "--mode", "score", "--batch-size", "16", "--out", str(out)]) == 0
    computed = {json.loads(line)["id"]: json.loads(line)["correct"] for line in out.read_text().splitlines()}
    bench = {json.loads(line)["id"]: json.loads(line)["correct"]
             for line in (smoke / "stages" / "full.jsonl").read_text().splitlines()}
    assert computed == bench


@pytest.mark.slow
def test_a_finished_search_of_the_same_config_is_adopted_and_gives_the_same_rows(smoke, tiny_folder, tmp_path):
    """`--adopt`: a finished run of a stage's config is linked in its place, not searched again, and gives the rows
    the bench computed itself; an unfinished one is copied and resumed (the adopted folder is not written); a run made
    with another budget is not adopted."""
    import shutil

    committed = tmp_path / "committed"
    for name in ("search-test", "search-test-decoy", "search-test-sample"):
        shutil.copytree(smoke / "stages" / name, committed / name)
    lines = (committed / "search-test-decoy" / "records.jsonl").read_text().splitlines()
    (committed / "search-test-decoy" / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # one sample short
    config = json.loads((committed / "search-test-sample" / "config.json").read_text())
    config["mcts"]["sims"] += 1
    (committed / "search-test-sample" / "config.json").write_text(json.dumps(config))
    out = tmp_path / "adopting"
    assert main(_bench(tiny_folder, out, "--only", "reference", "oracle", "--adopt", str(committed), *TRANSFER)) == 0
    stages = out / "stages"
    assert (stages / "search-test").resolve() == (committed / "search-test").resolve()
    assert not (stages / "search-test-decoy").is_symlink() and not (stages / "search-test-sample").is_symlink()
    copied = read_records(stages / "search-test-decoy")  # the unfinished run was copied and resumed, not redone
    assert [r["wall_time"] for r in copied[:-1]] == [json.loads(line)["wall_time"] for line in lines[:-1]]
    assert len(copied) == len(lines) and len(read_records(committed / "search-test-decoy")) == len(lines) - 1
    report = (out / "report.md").read_text()
    assert f"search-test ← `{committed / 'search-test'}` (linked)" in report
    decoy = committed / "search-test-decoy"
    assert f"search-test-decoy ← `{decoy}` ({len(lines) - 1} of {len(lines)} samples" in report
    mine = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    theirs = {r["method"]: r for r in json.loads((smoke / "results.json").read_text())}
    oracle = [m for m, r in mine.items() if r["oracle"]]
    assert len(oracle) >= 4
    for method in oracle:
        assert {k: mine[method][k] for k in ("accuracy", "mean_layers", "vs_control")} == \
            {k: theirs[method][k] for k in ("accuracy", "mean_layers", "vs_control")}, method
    assert main(_bench(tiny_folder, tmp_path / "other", "--adopt", str(tmp_path / "nowhere"), "--dry-run")) == 2


def test_a_static_search_cut_short_is_resumed_not_taken_as_finished(tiny_folder, tmp_path):
    """A static search's records do not say when it ended: a bench killed inside it must search on when resumed
    (its ``finished.json`` is written at the end), not take the chains so far as the search."""
    out = tmp_path / "b"
    assert main(_bench(tiny_folder, out, "--only", "static-best")) == 0
    run = out / "stages" / "static-search"
    whole = read_records(run)
    assert json.loads((run / "finished.json").read_text())["chains"] == len(whole) > 2
    lines = (run / "records.jsonl").read_text().splitlines()
    (run / "records.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if killed after two chains
    (run / "finished.json").unlink()
    for p in (out / "stages").glob("static-best.*"):
        p.unlink()
    assert main(_bench(tiny_folder, out, "--only", "static-best")) == 0
    assert [r["chain"] for r in read_records(run)] == [r["chain"] for r in whole]


@pytest.mark.slow
def test_dry_run_names_the_runs_it_would_adopt_without_loading_weights(smoke, tiny_folder, tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setattr(cola.core.loading, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    assert main(_bench(tiny_folder, tmp_path / "b", "--dry-run", "--adopt", str(smoke / "stages"), *TRANSFER)) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    recorded = len(read_records(smoke / "stages" / "search-test"))
    assert f"adopts {smoke / 'stages' / 'search-test'} ({recorded} of {recorded} recorded)" in lines["search-test"]
    assert "~      0 s" in lines["search-test"] and "adopts" not in lines["full"]


@pytest.mark.parametrize("depth", [2, 3, 4, 5, 6, 7, 12, 18, 24, 28, 30, 36, 80])
def test_the_cascade_budget_is_one_its_cheap_chain_can_meet(depth, monkeypatch):
    """The quick bench on SmolLM2 once stopped at the cascade: from its least pruned chain (29 of 30 layers) no
    setting computes at most 0.85 x depth. The cascade starts from the most pruned chain, within a budget it meets."""
    from cola.bench.plan import Bench

    monkeypatch.setattr(Bench, "depth", property(lambda self: depth))
    cascade = next(s for s in Bench("smollm2-135m", "synthetic_mc", "unused", "smoke").stages() if s.name == "cascade")
    (chain,) = cascade.settings["chains"]
    dropped = int(chain.removeprefix("prune:"))
    assert dropped == max(1, depth // 4) < depth
    budget = float(cascade.settings["calibrate"].removeprefix("budget="))
    assert (depth - dropped) / depth <= budget and (budget == 0.85 or budget - (depth - dropped) / depth < 1e-3)


def test_a_one_layer_model_is_refused_before_any_stage(monkeypatch):
    from cola.bench.plan import Bench
    from cola.errors import UsageError

    monkeypatch.setattr(Bench, "depth", property(lambda self: 1))
    with pytest.raises(UsageError, match="1 layer"):
        Bench("smollm2-135m", "synthetic_mc", "unused", "smoke").stages()


@pytest.mark.slow
def test_a_bench_folder_without_its_fitted_weights_fits_them_again_only_for_a_stage_still_to_make(
        smoke, tiny_folder, tmp_path, monkeypatch, capsys):
    """A bench folder in git keeps its fits' configs, not their weights: run again whole, it loads no model; with an
    evaluation of each fit to make again, the same command fits them again (on the recorded thread count), takes the
    weights since each fit is the recorded one, and the evaluations equal the recorded ones."""
    import shutil

    out = tmp_path / "clone"
    shutil.copytree(smoke, out, symlinks=True)
    weights = {p: p.read_bytes() for p in (out / "stages").rglob("*.safetensors")}
    assert {p.name for p in weights} == {"predictor.safetensors", "routers.safetensors", "program.safetensors"}
    for p in weights:
        p.unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished bench loaded its model again")

    with monkeypatch.context() as patch:
        patch.setattr(cola.core.loading, "load_model", refuse)
        assert main(_bench(tiny_folder, out, *TRANSFER)) == 0
    assert not any(p.is_file() for p in weights)

    evals = [out / "stages" / f"{name}.jsonl" for name in ("router", "layer-router", "eval-program")]
    rows = {p: [(r.get("chain"), r["answer"]) for r in map(json.loads, p.read_text().splitlines())] for p in evals}
    for p in evals:
        p.unlink()
        p.with_suffix(".json").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "stages").rglob("*")
              if p.is_file() and p.name != "times.jsonl" and not p.name.endswith(".lock")}
    assert main(_bench(tiny_folder, out, "--dry-run", *TRANSFER)) == 0
    plan = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert not plan["router-fit"].endswith("done") and plan["program-fit-decoy"].endswith("done")
    assert main(_bench(tiny_folder, out, *TRANSFER)) == 0
    remade = {p: w for p, w in weights.items() if p.parent.name in ("router-fit", "layers-fit", "program-fit")}
    assert len(remade) == 3 and {p: p.read_bytes() for p in remade} == remade  # bitwise the recorded fits
    assert not any(p.is_file() for p in weights if p not in remade)  # no stage still to make reads the others
    assert {p: [(r.get("chain"), r["answer"]) for r in map(json.loads, p.read_text().splitlines())]
            for p in evals} == rows
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # configs, records and other evaluations untouched
    assert not list((out / "stages").glob("*.refit"))


@pytest.mark.slow
def test_a_fit_made_again_that_differs_from_the_recorded_one_is_not_taken(smoke, tiny_folder, tmp_path, capsys):
    import shutil

    out = tmp_path / "clone"
    shutil.copytree(smoke, out, symlinks=True)
    fit = out / "stages" / "router-fit"
    (fit / "predictor.safetensors").unlink()
    config = json.loads((fit / "config.json").read_text())
    config["library_accuracy"] = [0.0] * len(config["library_accuracy"])  # as a fit on another machine
    (fit / "config.json").write_text(json.dumps(config))
    (out / "stages" / "router.json").unlink()  # a stage that reads the fit, to make again
    assert main(_bench(tiny_folder, out, "--only", "router", *TRANSFER)) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"router-fit's weights are not in {fit}" in err and "(library_accuracy differ;" in err
    assert "the stages made from the recorded fit (arc_easy/router)" in err and f"delete {fit} and" in err
    assert sorted(p.name for p in fit.iterdir()) == ["config.json"] and not list(fit.parent.glob("*.refit"))


@pytest.mark.slow
def test_a_stage_left_unfinished_under_other_settings_says_to_delete_it(smoke, tiny_folder, tmp_path, capsys):
    import shutil

    out = tmp_path / "b"
    shutil.copytree(smoke / "stages" / "search-test", out / "stages" / "search-test")
    run = out / "stages" / "search-test"
    config = json.loads((run / "config.json").read_text())
    config["mcts"]["sims"] += 1  # as an older version of the stage
    (run / "config.json").write_text(json.dumps(config))
    (run / "records.jsonl").write_text((run / "records.jsonl").read_text().splitlines()[0] + "\n")  # unfinished
    assert main(_bench(tiny_folder, out, "--only", "search-test", *TRANSFER)) == 2
    err = capsys.readouterr().err
    assert f"stage search-test is set otherwise now; delete {out / 'stages' / 'search-test'}*" in err
    assert "use another --out" not in err and len(err.strip().splitlines()) == 1


def test_the_study_votes_as_the_committed_study_and_older_benches_keep_their_plan(monkeypatch):
    """The study preset's vote chooses among the committed study's settings (full + 8 library chains, k in {3, 5, 9},
    3 rules, on dev); the presets' new settings leave the quick plan as the committed quick benches wrote it, so that
    they resume."""
    from cola.bench.plan import Bench
    from cola.bench.presets import PRESETS

    monkeypatch.setattr(Bench, "depth", property(lambda self: 30))
    stages = {s.name: s for s in Bench("smollm2-135m", "synthetic_mc", "unused", "study").stages()}
    vote = stages["vote"].settings
    assert (vote["top"], vote["ks"], vote["rules"]) == (8, [3, 5, 9], ["majority", "confident", "weighted"])
    assert stages["cascade-consistency"].settings["calibrate"] == "consistency=0.95"
    committed = Path(__file__).parents[1] / "results" / "bench" / "smollm2-135m-arc_easy-quick" / "plan.json"
    assert json.loads(committed.read_text())["sizes"] == PRESETS["quick"].to_dict()


def test_the_study_transfers_on_the_committed_studys_500_items(monkeypatch):
    """The committed study read ARC-Challenge and CommonsenseQA on 500 items each (ARC-Easy on 1000): the study preset's
    transfer stages take 500, their estimated size scaled with them; a preset without its own size transfers on its
    test size."""
    from cola.bench.plan import Bench

    monkeypatch.setattr(Bench, "depth", property(lambda self: 30))
    for preset, n in (("study", 500), ("quick", 300)):
        stages = {s.name: s for s in Bench("smollm2-135m", "arc_easy", "unused", preset,
                                           transfer=("arc_challenge",)).stages()}
        moved = {name: s for name, s in stages.items() if s.family == "transfer"}
        assert moved and all(s.settings["n"] == n for s in moved.values())
        for name, s in moved.items():
            here = stages[name.removeprefix("arc_challenge/")]
            assert s.size == here.size * n // here.settings["n"]
        assert moved["arc_challenge/eval-program"].settings == {**stages["eval-program"].settings,
                                                                "split": "arc_challenge/test", "n": n}


def test_the_figure_labels_overlap_neither_each_other_nor_any_marker_or_interval():
    """A crowded panel as the study's: runs of points a few pixels apart on a diagonal (where a label beside one point
    would sit on the next one's marker), a grid of 24 more, and tall intervals beside two points (where the first
    offsets would cross them); every label finds a place clear of the other labels, every marker and every bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import Bbox

    from cola.bench.page import place_labels

    fig, ax = plt.subplots(figsize=(7.8, 5.5), dpi=100)
    ax.set_xlim(0, 780)
    ax.set_ylim(0, 550)  # about one data unit per pixel
    diagonal = [(100 + 14 * i + 200 * run, 100 + 9 * i + 150 * run) for run in range(2) for i in range(4)]
    grid = [(450 + 40 * (i % 6), 300 + 30 * (i // 6)) for i in range(24)]
    points = [(x, y, str(i + 1)) for i, (x, y) in enumerate(diagonal + grid)]
    bars = [(60, 40, 160), (112, 20, 180)]  # each bar's x: 8 and 12 pixels right of the two points below
    points += [(52, 100, "33"), (100, 40, "34")]
    ax.plot([x for x, _, _ in points], [y for _, y, _ in points], "o")
    fig.canvas.draw()
    boxes = place_labels(fig, ax, points, bars)
    half = 6.0 * fig.dpi / 72 / 2
    markers = [Bbox.from_extents(px - half, py - half, px + half, py + half)
               for px, py in (ax.transData.transform((x, y)) for x, y, _ in points)]
    for x, low, high in bars:
        (px, p_low), (_, p_high) = ax.transData.transform([(x, low), (x, high)])
        markers.append(Bbox.from_extents(px - 1, p_low, px + 1, p_high))
    assert len(boxes) == len(points)
    for i, box in enumerate(boxes):
        assert not any(box.overlaps(other) for other in boxes[i + 1:])
        assert not any(box.overlaps(marker) for marker in markers)
    plt.close(fig)


def test_the_printed_verdict_table_gives_whole_method_names(capsys):
    from cola.cli.bench import _print_table

    long = "Dr.LLM's per-layer routers, matched samples (kept by both searches)"  # differs from its twin at the end
    table = [{"method": m, "oracle": o, "accuracy": 0.5, "ci": (0.4, 0.6), "mean_layers": 16.0, "verdict": "v"}
             for m, o in (("full depth", False), (long, False), ("per-sample search, best of 201 chains", True))]
    _print_table(table)
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith(long + " ") and lines[3].startswith("ORACLE per-sample search, best of 201 chains ")
    assert len({line.index("0.500") for line in lines[1:]}) == 1  # the columns line up


def test_each_stages_evaluation_has_a_progress_bar_of_its_own_named_by_the_stage(tiny_folder, tmp_path, capsys):
    """The bars were keyed by the evaluation's part alone ("full", "policy"), so a later stage's evaluation moved
    the first stage's bar past its total, under the bench task's name."""
    out = tmp_path / "b"
    argv = [a for a in _bench(tiny_folder, out, "--only", "drop-last1", "bi1") if a != "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    for stage in ("full", "drop-last1", "bi1"):
        assert f"synthetic_mc [{stage}: " in err, err[-2000:]
