"""Nothing lost, nothing silently wrong: an evaluation killed mid-way resumes to what an uninterrupted one gives; one
writer per --out; a changed config is refused; a bad --out fails before the model loads; Ctrl-C is one line and exit
130; any bytes in any file kind are one clear error; a corrupt model cache is rebuilt; NaN weights are one error."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import Cola, mc_rows, run_cola, tiny_model, without_wall

import cola.core.loading
from cola import Chain
from cola.cli import main
from cola.errors import ColaError, NonFiniteError
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.policies.spec import PolicySpec
from cola.storage import eval_lock, read_config, read_eval, read_records
from cola.tasks import get_task, load_samples


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "mc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in mc_rows(12)))
    return path


def _eval(model, data, out, *extra) -> list[str]:
    return ["eval", "--model", str(model), "--device", "cpu", "--task", "mc_jsonl", "--data-file", str(data),
            "--mode", "score", "--no-chat", "--n", "0", "--batch-size", "4", "--out", str(out), *extra]


CASCADE = ("--policy", "cascade", "--chain", "0-3", "--threshold", "0.5", "--sweep")


@pytest.mark.parametrize("extra, lines, processes", [
    ((), 2, 2),  # a chain, killed after its first batch
    (CASCADE, 2, 1),  # in the sweep's first batch (untimed): the timed stages all ran in the second process
    (CASCADE, 6, 2),  # in the policy's first batch, after the sweep's three
], ids=["chain", "cascade-sweep", "cascade-policy"])
@pytest.mark.slow  # `cola` in child processes (the first in a test process starts their server: seconds)
def test_an_evaluation_killed_after_a_batch_resumes_to_the_uninterrupted_result(tiny_folder, data, tmp_path, extra,
                                                                                  lines, processes, capsys):
    out = tmp_path / "killed.jsonl"
    child = run_cola(_eval(tiny_folder, data, out, *extra), kill_after=lines)
    assert child.returncode == -signal.SIGKILL, child.stderr
    journal = tmp_path / "killed.partial.jsonl"
    assert journal.read_text().count("\n") == lines and not out.exists() and not out.with_suffix(".json").exists()
    assert main(_eval(tiny_folder, data, out, *extra)) == 0  # the same command resumes
    assert main(_eval(tiny_folder, data, tmp_path / "whole.jsonl", *extra)) == 0
    (summary, rows), (whole, whole_rows) = read_eval(out), read_eval(tmp_path / "whole.jsonl")
    assert rows == whole_rows and len(rows) == 12
    assert without_wall(summary) == without_wall(whole)
    assert summary["wall_processes"] == processes and whole["wall_processes"] == 1
    assert not journal.exists() and ("resumed; wall times are sums" in capsys.readouterr().err) == (processes > 1)
    # the same command once more: finished, handed back as it is
    assert main(_eval(tiny_folder, data, out, *extra)) == 0
    assert read_eval(out) == (summary, rows) and "finished already" in capsys.readouterr().err


@pytest.mark.slow  # `cola` in child processes (the first in a test process starts their server: seconds)
def test_a_calibrated_policy_killed_in_its_dev_table_resumes_to_the_uninterrupted_result(tiny_folder, data_dir,
                                                                                         tmp_path):
    def command(out):
        return ["eval", "--model", str(tiny_folder), "--device", "cpu", "--task", "arc_easy", "--data-dir",
                str(data_dir), "--n", "8", "--mode", "score", "--batch-size", "4", "--policy", "cascade", "--chain",
                "0-3", "--calibrate", "accuracy", "--dev-n", "8", "--out", str(out)]

    out = tmp_path / "killed.jsonl"
    child = run_cola(command(out), kill_after=2)
    assert child.returncode == -signal.SIGKILL, child.stderr
    journal = [json.loads(line) for line in (tmp_path / "killed.partial.jsonl").read_text().splitlines()]
    assert journal[1]["stage"] == "calibrate" and len(journal) == 2
    assert main(command(out)) == 0 and main(command(tmp_path / "whole.jsonl")) == 0
    (summary, rows), (whole, whole_rows) = read_eval(out), read_eval(tmp_path / "whole.jsonl")
    assert rows == whole_rows and without_wall(summary) == without_wall(whole)
    assert summary["calibration"]["n"] == 8 and summary["policy"] == whole["policy"]


@pytest.mark.slow  # `cola` in child processes (the first in a test process starts their server: seconds)
def test_a_changed_config_is_refused_on_resume_and_on_a_finished_output(tiny_folder, data, tmp_path, capsys):
    out = tmp_path / "e.jsonl"
    child = run_cola(_eval(tiny_folder, data, out), kill_after=2)
    assert child.returncode == -signal.SIGKILL
    assert main(_eval(tiny_folder, data, out, "--chain", "0-3")) == 2
    err = capsys.readouterr().err
    assert "holds results of another config (chain: '0-5' -> '0-3')" in err and err.count("\n") == 1
    assert main(_eval(tiny_folder, data, out)) == 0
    assert main(_eval(tiny_folder, data, out, "--batch-size", "2")) == 2
    assert "batch: 4 -> 2" in capsys.readouterr().err
    (tmp_path / "old.json").write_text(json.dumps({"acc": {}}))  # an output written before configs were recorded
    (tmp_path / "old.jsonl").write_text("")
    assert main(_eval(tiny_folder, data, tmp_path / "old.jsonl")) == 2
    assert "before CoLa recorded its config" in capsys.readouterr().err


def test_a_second_writer_on_one_out_is_refused_while_the_first_runs(tiny_folder, data, tmp_path, capsys):
    out = tmp_path / "e.jsonl"
    with eval_lock(out):  # the first writer holds it
        start = time.perf_counter()
        assert main(_eval(tiny_folder, data, out)) == 2
        assert time.perf_counter() - start < 1.0  # refused before the model loads
    assert f"is being written by process {os.getpid()} on " in capsys.readouterr().err
    assert main(_eval(tiny_folder, data, out)) == 0  # released: it runs


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")
    monkeypatch.setattr(cola.core.loading, "load_model", refuse)


@pytest.mark.parametrize("command", [
    ["eval", "--task", "synthetic_mc", "--mode", "score", "--out", "{file}/x.jsonl"],
    ["eval", "--task", "synthetic_mc", "--mode", "score", "--out", "{dir}"],
    ["eval", "--task", "synthetic_mc", "--mode", "score", "--policy", "vote", "--chain", "full", "--out",
     "{file}/x.jsonl"],
    ["search", "--task", "synthetic_mc", "--mode", "score", "--out", "{file}"],
    ["search", "--task", "synthetic_mc", "--mode", "score", "--out", "{file}/run"],
    ["prune", "--task", "synthetic_mc", "--mode", "score", "--out", "{dir}"],
    ["prune", "--task", "synthetic_mc", "--mode", "score", "--out", "{file}/bi.json"],
    ["export", "--chain", "full", "--out", "{file}"],
    ["router", "fit", "--runs", "{dir}", "--out", "{file}"],
    ["report", "{dir}", "--out", "{file}/report"],
])
def test_a_bad_out_fails_before_the_model_loads(tmp_path, capsys, no_model, command):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    args = [a.format(file=tmp_path / "a-file", dir=tmp_path / "a-dir") for a in command]
    start = time.perf_counter()
    assert main(args) == 2
    assert time.perf_counter() - start < 2.0  # a load takes longer than this; here nothing heavy ran
    err = capsys.readouterr().err
    assert err.startswith("cola: error: --out ") and err.count("\n") == 1 and "Traceback" not in err


def _interrupted(cmd: list[str], ready: Path, lines: int, how: int = signal.SIGINT) -> Cola:
    """Run ``cmd`` as a child, send it ``how`` (SIGINT: Ctrl-C, the default handler) once ``ready`` holds ``lines``
    lines; the ended child."""
    child = Cola(cmd, pause=0.3)
    deadline = time.time() + 120
    while time.time() < deadline and not (ready.exists() and ready.read_text().count("\n") >= lines):
        time.sleep(0.01)
    child.send_signal(how)
    child.wait(60)
    return child


@pytest.mark.slow  # `cola` in child processes (the first in a test process starts their server: seconds)
def test_ctrl_c_stops_a_search_with_one_line_and_it_resumes(tiny_folder, tmp_path):
    run = tmp_path / "run"
    cmd = ["search", "--model", str(tiny_folder), "--device", "cpu", "--task", "synthetic_mc", "--mode", "score",
           "--n", "6", "--sims", "40", "--out", str(run), "--quiet"]
    done = _interrupted(cmd, run / "records.jsonl", 1)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    kept = len(read_records(run))
    assert last == f"interrupted: {kept} of 6 samples recorded in {run}; run the same command again to resume"
    assert 1 <= kept < 6 and (run / "records.jsonl").read_text().endswith("\n")
    assert main(cmd) == 0
    ids = [r["id"] for r in read_records(run)]
    assert len(ids) == len(set(ids)) == 6


@pytest.mark.slow  # `cola` in child processes (the first in a test process starts their server: seconds)
def test_sigterm_stops_an_eval_with_one_line_and_it_resumes(tiny_folder, tmp_path):
    """SIGTERM (a scheduler's time limit, `timeout`, `docker stop`) stops a command as Ctrl-C does (the search's test
    above sends SIGINT: one handler serves every command)."""
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in mc_rows(300)))
    out = tmp_path / "e.jsonl"
    cmd = _eval(tiny_folder, data, out, "--batch-size", "1")
    done = _interrupted(cmd, tmp_path / "e.partial.jsonl", 2, signal.SIGTERM)
    assert done.returncode == 143 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("terminated: ") and "kept in " in last and last.endswith(
        "; run the same command again to resume")
    assert (tmp_path / "e.partial.jsonl").read_text().endswith("\n") and not out.exists()
    assert main(cmd) == 0
    ids = [r["id"] for r in read_eval(out)[1]]
    assert len(ids) == len(set(ids)) == 300


# --- any bytes, one clear error -------------------------------------------------------------------------------------

BAD = {
    "binary": b"\x00\x01\x02\xff\xfe\x00binary",
    "gzip": gzip.compress(b'{"id": "a"}\n'),
    "utf16": '{"id": "a"}\n'.encode("utf-16"),
    "list": b"[1, 2, 3]\n",
    "number": b"42\n",
    "string": b'"text"\n',
}
EXPECTED = {"binary": "not UTF-8 text|NUL bytes", "gzip": "gzip-compressed", "utf16": "UTF-16",
            "list": "holds a list", "number": "holds a number", "string": "holds a string"}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_any_bytes_in_any_file_kind_are_one_clear_error(tmp_path, kind):
    def planted(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(BAD[kind])
        return path

    data = planted(tmp_path / "data.jsonl")
    spec = planted(tmp_path / "spec.json")
    run = tmp_path / "run"
    planted(run / "records.jsonl")
    planted(tmp_path / "config-run" / "config.json")
    planted(tmp_path / "e.jsonl")
    (tmp_path / "e.json").write_text("{}")
    planted(tmp_path / "f.json")
    (tmp_path / "f.jsonl").write_text("")
    cases = [(lambda: load_samples("mc_jsonl", data_file=data, n=0), data),
             (lambda: PolicySpec.load(spec), spec),
             (lambda: read_records(run), run / "records.jsonl"),
             (lambda: read_config(tmp_path / "config-run"), tmp_path / "config-run" / "config.json"),
             (lambda: read_eval(tmp_path / "e.jsonl"), tmp_path / "e.jsonl"),
             (lambda: read_eval(tmp_path / "f.jsonl"), tmp_path / "f.json")]
    for call, path in cases:
        with pytest.raises(ColaError, match=EXPECTED[kind]) as err:
            call()
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_spec_of_the_wrong_shape_inside_names_the_key(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"kind": "cascade", "chains": "0-3", "thresholds": [0.5]}))
    with pytest.raises(ColaError, match=r"'chains' is \"0-3\"; expected a list of chains"):
        PolicySpec.load(path)
    path.write_text(json.dumps({"kind": "vote", "chains": ["0-3", "full"], "k": "2"}))
    with pytest.raises(ColaError, match=r"'k' is \"2\"; expected a whole number"):
        PolicySpec.load(path)


def test_a_gzipped_data_file_gives_the_samples_of_its_plain_twin(data_dir, tmp_path):
    plain = data_dir / "arc" / "easy_dev.jsonl"
    packed = tmp_path / "arc" / "easy_dev.jsonl.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert load_samples("mc_jsonl", data_file=packed, n=0) == load_samples("mc_jsonl", data_file=plain, n=0)
    # a --data-dir whose split file is shipped compressed
    assert load_samples("arc_easy", tmp_path, n=50, split="dev") == load_samples("arc_easy", data_dir, n=50,
                                                                                 split="dev")


# --- a verified model cache; non-finite logits -------------------------------------------------------------------


def test_a_corrupt_cached_conversion_is_detected_on_load_and_rebuilt(tmp_path, monkeypatch, recwarn):
    """The GGUF de-quantization (transformers, tens of seconds for a real file) is replaced by writing a tiny model;
    everything around it (the manifest, the verification, the rebuild, the provenance) is CoLa's own."""
    monkeypatch.setenv("COLA_CACHE", str(tmp_path / "cache"))
    conversions = []

    def dequantize(gguf: Path, folder: Path, remedy: str) -> None:
        conversions.append(gguf)
        cm = tiny_model("llama")
        cm.model.save_pretrained(folder)
        cm.tokenizer.save_pretrained(folder)

    monkeypatch.setattr(cola.core.loading, "_dequantize", dequantize)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    first = cola.core.loading.load_model(str(gguf), device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    logits = first.model(ids).logits.detach().clone()  # before the file is overwritten: its tensors map the file
    folder = cola.core.loading.convert_gguf(gguf)
    weights = folder / "model.safetensors"
    assert len(conversions) == 1 and first.loaded_weights.startswith("sha256:")
    from cola.evaluation.provenance import model_header

    header = model_header(first)
    assert header["loaded_weights"] == first.loaded_weights != header["weights"]  # what ran, beside its source
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)  # 4 KB overwritten in the middle
    weights.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="model.safetensors differs from what the conversion wrote.*rebuilding"):
        again = cola.core.loading.load_model(str(gguf), device="cpu")
    assert len(conversions) == 2 and again.loaded_weights == first.loaded_weights
    assert torch.equal(again.model(ids).logits, logits)
    weights.write_bytes(bytes(data))  # the converted folder loaded as a folder: no source to rebuild from, refused
    with pytest.raises(cola.core.loading.CorruptCache, match=r"model.safetensors differs from what the conversion wrote \(sha256 mismatch\): "
                                                        "refused"):
        cola.core.loading.load_model(str(folder), device="cpu")


def test_non_finite_logits_are_one_error_naming_the_chain_and_the_input(tmp_path, capsys):
    cm = tiny_model("llama")
    with torch.no_grad():
        cm.layers[3].mlp.down_proj.weight[0, 0] = float("nan")
    task = get_task("mc_jsonl")
    samples = [task.parse_row(r, r["id"]) for r in mc_rows(3)]
    for mode in ("score", "generate"):
        evaluator = Evaluator(cm, task, config=EvalConfig(mode=mode, chat=False, max_new_tokens=4))
        assert len(evaluator.evaluate(Chain.parse("0-2,4-5"), samples)) == 3  # layer 3 skipped: fine
        with pytest.raises(NonFiniteError, match=r"from chain 0-5 on sample 'q0' \(mc_jsonl\)"):
            evaluator.evaluate(Chain.parse("0-5"), samples)
    folder = tmp_path / "nan-model"
    cm.model.save_pretrained(folder)
    cm.tokenizer.save_pretrained(folder)
    assert main(["generate", "--model", str(folder), "--device", "cpu", "--prompt", "t5 t6"]) == 2
    err = capsys.readouterr().err
    assert "non-finite logits" in err and err.count("\n") == 1


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_waits_until_the_durable_write_is_whole(how):
    """Ctrl-C or SIGTERM arriving in the middle of a durable write lands once the write is done, never inside it."""
    from cola.cli import _stop
    from cola.storage import STOPS, no_interrupts

    number = getattr(signal, how)
    previous = {n: signal.getsignal(n) for n in STOPS}
    signal.signal(number, _stop)
    done = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with no_interrupts():
                os.kill(os.getpid(), number)
                time.sleep(0.05)
                done.append("the write")
            done.append("past the block")  # the signal lands first
        assert all(signal.getsignal(n) == signal.SIG_IGN for n in STOPS)  # one stop: a second one is ignored
    finally:
        for n, handler in previous.items():
            signal.signal(n, handler)
    assert done == ["the write"]


def test_a_second_stop_while_the_command_winds_down_changes_nothing(monkeypatch, capsys):
    """SIGTERM twice (`timeout` passing its SIGTERM on to a process that got one already, Ctrl-C pressed twice): the
    second one, arriving in a cleanup the first one set off (here a lock released in ``__del__``), is ignored; the
    stop is one line, with no 'Exception ignored' traceback, and the handlers are the caller's again after."""
    import cola.cli.report as report_cli

    class Cleanup:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the second signal, in the middle of the cleanup
            time.sleep(0.05)

    def tasks(args):
        held = Cleanup()  # noqa: F841 (released as the stop unwinds this frame)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)

    before = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM)}
    unraisable = []  # what Python would print as 'Exception ignored in ...' with its traceback
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(report_cli, "cmd_tasks", tasks)
    assert main(["tasks"]) == 143
    err = capsys.readouterr().err
    assert err.strip() == "terminated: nothing was written" and not unraisable, (err, unraisable)
    assert {n: signal.getsignal(n) for n in before} == before
