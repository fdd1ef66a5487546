"""Nothing silently wrong: repeated ids, empty inputs, closed-choice options, the oracle's headline, provenance in a
run's config, report tables that pandas reads. Each case failed before it was fixed."""

import argparse
import json
import shutil
import warnings

import pandas as pd
import pytest

import cola.core.loading
from cola import cli
from cola.cli import main
from cola.storage import ConfigMismatch, RunStore
from cola.tasks import DataError, load_samples

MC_ROW = {"question": "q", "choices": [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}], "answerKey": "A"}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command gets as far as loading a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(cola.core.loading, "load_model", refuse)


def test_repeated_ids_in_a_user_file_are_one_error_naming_them(tmp_path):
    path = _write(tmp_path / "mc.jsonl", [{**MC_ROW, "id": "q1"}, {**MC_ROW, "id": "q2"}, {**MC_ROW, "id": "q1"}])
    with pytest.raises(DataError, match=r"'q1' at .*mc.jsonl:1, .*mc.jsonl:3"):
        load_samples("mc_jsonl", data_file=path, n=0)
    with pytest.raises(DataError, match="occur more than once"):  # not a bad row to skip: results would mix
        load_samples("mc_jsonl", data_file=path, n=0, skip_bad_rows=True)


@pytest.mark.parametrize("command", ["eval", "search"])
def test_cli_refuses_repeated_ids_before_loading_the_model(tmp_path, capsys, no_model, command):
    path = _write(tmp_path / "mc.jsonl", [{**MC_ROW, "id": "same"}, {**MC_ROW, "id": "same", "answerKey": "B"}])
    assert main([command, "--task", "mc_jsonl", "--data-file", str(path), "--mode", "score", "--n", "0"]) == 2
    assert "'same' at" in capsys.readouterr().err


def test_rows_without_ids_get_their_line_numbers(tmp_path):
    same_start = "A long question whose first forty characters are the same in both rows: "
    rows = [{"question": same_start + "one?", "answer": "1"}, {"question": same_start + "two?", "answer": "2"}]
    samples = load_samples("qa_jsonl", data_file=_write(tmp_path / "qa.jsonl", rows), n=0)
    assert sorted(s.id for s in samples) == ["line-1", "line-2"]


def test_hub_rows_keep_their_id_or_their_row_index(monkeypatch):
    """GSM8K and MATH on the hub have no id field: their row index names them (not the question's first 40
    characters, which collide in MATH); ARC's hub rows keep their own ids."""
    import datasets

    start = "Find the number of ordered pairs of integers (a, b) such that "
    math_rows = [{"problem": start + "x.", "solution": "\\boxed{1}", "level": "Level 1", "type": "Algebra"},
                 {"problem": start + "y.", "solution": "\\boxed{2}", "level": "Level 2", "type": "Algebra"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: math_rows)
    assert sorted(s.id for s in load_samples("math", n=0)) == ["test-0", "test-1"]
    arc_rows = [{**MC_ROW, "id": "Mercury_1"}, {**MC_ROW, "id": "Mercury_2"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: arc_rows)
    assert sorted(s.id for s in load_samples("arc_easy", n=0)) == ["Mercury_1", "Mercury_2"]


@pytest.mark.parametrize("command", ["eval", "search"])
def test_no_samples_is_one_error_before_loading_the_model(tmp_path, capsys, no_model, command):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main([command, "--task", "mc_jsonl", "--data-file", str(empty), "--mode", "score"]) == 2
    assert "no samples in" in capsys.readouterr().err
    bad_only = _write(tmp_path / "bad.jsonl", [{"question": "q"}])
    assert main([command, "--task", "mc_jsonl", "--data-file", str(bad_only), "--skip-bad-rows"]) == 2
    assert "every row was skipped" in capsys.readouterr().err


def test_a_level_filter_that_keeps_nothing(tmp_path):
    path = _write(tmp_path / "math.jsonl", [{"problem": "1+1?", "answer": "2", "level": 1}])
    with pytest.raises(DataError, match="no samples of level 3"):
        load_samples("math", data_file=path, level=3)


@pytest.mark.parametrize("args, choice", [
    (["eval", "--task", "synthetic", "--dtype", "float7"], "float32"),
    (["eval", "--task", "synthetic", "--mode", "guess"], "score"),
    (["eval", "--task", "synthetic_mc", "--mode", "score", "--score-style", "fancy"], "lmeval"),
    (["search", "--task", "synthetic", "--actions", "swap"], "repeat"),
    (["search", "--task", "synthetic", "--reward", "vibes"], "margin"),
    (["search", "--task", "synthetic", "--control", "placebo"], "decoy"),
    (["search", "--task", "synthetic", "--sims", "0"], "at least 1"),
    (["search", "--task", "synthetic", "--batch", "-2"], "at least 1"),
    (["search", "--task", "synthetic", "--prefix-gib", "0"], "above 0"),
    (["eval", "--task", "synthetic", "--policy", "vote", "--ks", "1,three"], "comma-separated int values"),
    (["eval", "--task", "synthetic", "--policy", "self-consistency", "--temperatures", "0.7;1"],
     "comma-separated float values"),
    (["router", "fit", "--runs", "r", "--out", "o", "--features", "2,4.5"], "comma-separated int values"),
])
def test_closed_choices_are_checked_by_the_parser(capsys, no_model, args, choice):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert choice in capsys.readouterr().err


def _commands(parser, prefix=()):
    """Every command line of the parser's tree: (), ("eval",), ("router",), ("router", "fit"), ..."""
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, prefix + (name,))


@pytest.mark.parametrize("command", list(_commands(cli.build_parser())), ids=" ".join)
def test_every_help_page_prints(capsys, command):
    # a bare '%' in a help text (say "95% confidence") made argparse raise on `cola --help`
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: cola" in capsys.readouterr().out


def test_load_model_refuses_an_unknown_dtype():
    from cola import load_model

    with pytest.raises(ValueError, match="unknown dtype 'float7'"):
        load_model("smollm2-135m", dtype="float7")


def test_search_prints_the_oracle_as_an_oracle_and_records_provenance(tiny_folder, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_folder, model)
    out = tmp_path / "run"
    args = ["search", "--model", str(model), "--task", "synthetic", "--n", "2", "--sims", "5", "--quiet", "--device",
            "cpu"]
    assert main(args + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "oracle accuracy (best of up to 6 chains, chosen with the gold answer):" in printed
    assert "CoLa accuracy" not in printed and "--control decoy" in printed
    config = json.loads((out / "config.json").read_text())
    import torch
    import transformers

    assert config["environment"]["torch"] == torch.__version__
    assert config["environment"]["transformers"] == transformers.__version__
    assert config["environment"]["device"] == "cpu" and config["environment"]["python"]
    # bf16's last bits depend on the processor's kernels: it is recorded
    assert config["environment"]["processor"] == cola.core.loading.processor()
    assert config["dtype"] == "float32" and config["weights"].startswith("sha256:")
    assert main(args + ["--out", str(tmp_path / "decoy"), "--control", "decoy"]) == 0
    decoy = capsys.readouterr().out
    assert "--control decoy" not in decoy and "decoy golds" in decoy
    # the same folder with one weight changed: another hash, so the run refuses to resume on it
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    tensors[sorted(tensors)[0]][0, 0] += 1.0
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    assert main(args + ["--out", str(out)]) == 2
    assert f"another config (weights: {config['weights']!r} -> 'sha256:" in capsys.readouterr().err


def test_resume_in_another_environment_warns_and_other_dtype_or_weights_refuse(tmp_path):
    config = {"task": "t", "dtype": "float32", "weights": "sha256:aa",
              "environment": {"torch": "2.13.0", "transformers": "5.0", "device": "cpu"}}
    RunStore(tmp_path, config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RunStore(tmp_path, config)  # the same: no warning
    moved = {**config, "environment": {**config["environment"], "torch": "2.14.0", "device": "cuda:0"}}
    with pytest.warns(UserWarning, match=r"another environment \(device: cpu -> cuda:0, torch: 2.13.0 -> 2.14.0\)"):
        RunStore(tmp_path, moved)
    with pytest.raises(ConfigMismatch, match="dtype: 'float32' -> 'bfloat16'"):
        RunStore(tmp_path, {**config, "dtype": "bfloat16"})
    # a processor is recorded now: a run made before that resumes silently, one made on another processor warns
    on_xeon = {**config, "environment": {**config["environment"], "processor": "Xeon (amx_bf16 avx512_bf16)"}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RunStore(tmp_path, on_xeon)
    RunStore(tmp_path / "xeon", on_xeon)
    on_epyc = {**config, "environment": {**config["environment"], "processor": "EPYC (avx512_bf16)"}}
    with pytest.warns(UserWarning, match=r"another environment \(processor: Xeon \(amx_bf16 avx512_bf16\) -> EPYC"):
        RunStore(tmp_path / "xeon", on_epyc)
    with pytest.raises(ConfigMismatch, match="weights: 'sha256:aa' -> 'sha256:bb'"):
        RunStore(tmp_path, {**config, "weights": "sha256:bb"})


def test_runs_from_before_provenance_resume_with_a_warning(tmp_path):
    RunStore(tmp_path, {"task": "t"})
    with pytest.warns(UserWarning, match="before CoLa recorded weights and environment"):
        RunStore(tmp_path, {"task": "t", "weights": "sha256:aa", "environment": {"torch": "x"}})


def test_report_without_a_decoy_run_writes_csvs_with_headers(tmp_path):
    from helpers import RUNS

    out = tmp_path / "report"
    assert main(["report", str(RUNS["cola"]), "--out", str(out)]) == 0
    control = pd.read_csv(out / "chance_control.csv")
    assert control.empty and {"real_share", "decoy_share", "gap"} <= set(control.columns)
    for csv in out.glob("*.csv"):
        assert len(pd.read_csv(csv).columns) > 1, csv.name
    decoy_only = tmp_path / "decoy-only"
    assert main(["report", str(RUNS["decoy"]), "--out", str(decoy_only)]) == 0
    accuracy = pd.read_csv(decoy_only / "accuracy.csv")
    assert accuracy.empty and "share" in accuracy.columns
    assert not (decoy_only / "findings.csv").exists()
    assert "No run without a control" in (decoy_only / "report.md").read_text()
    for csv in decoy_only.glob("*.csv"):
        pd.read_csv(csv)


def test_weights_hash_is_of_the_files_and_cached(tmp_path, monkeypatch):
    from cola.core.models import ColaModel
    from cola.core.hashes import weights_hash

    monkeypatch.setenv("COLA_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "w.gguf"
    weights.write_bytes(b"some weights")
    cm = ColaModel(model=None, tokenizer=None, name="x", weights=weights)
    import hashlib

    file_hash = hashlib.sha256(b"some weights").hexdigest()
    expected = "sha256:" + hashlib.sha256(f"w.gguf:{file_hash}\n".encode()).hexdigest()
    assert weights_hash(cm) == expected
    memo = json.loads((tmp_path / "cache" / "weight-hashes.json").read_text())
    assert list(memo.values()) == [file_hash]


def test_number_lists_parse_to_their_kind():
    assert cli.common.number_list(int)("1,3,9") == [1, 3, 9]
    assert cli.common.number_list(float)("0.5,1") == [0.5, 1.0]
    with pytest.raises(argparse.ArgumentTypeError, match="not '1,,3'"):
        cli.common.number_list(int)("1,,3")
