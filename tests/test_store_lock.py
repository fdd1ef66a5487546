"""One writer per run folder, records counted once, and the last bad inputs that ended in a traceback or ran
silently: each is now one line (``cola: error: ...``, exit 2) that says what to do."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import Cola

from cola.cli import main
from cola.errors import RunLockedError
from cola.storage import LOCK, FolderLock, RunStore, read_records

FIXTURES = Path(__file__).parent / "fixtures" / "runs"


def _search_cmd(model, out, n=6, sims=12):
    return ["search", "--model", str(model), "--task", "synthetic", "--n", str(n), "--sims", str(sims), "--seed", "3",
            "--out", str(out), "--quiet", "--device", "cpu"]


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err and err.startswith("cola: error: ") and err.count("\n") == 1, err


@pytest.mark.slow  # `cola` in child processes (the first in a test process starts their server: seconds)
def test_a_second_writer_is_refused_while_the_first_runs(tiny_folder, tmp_path):
    out = tmp_path / "run"
    procs = [Cola(_search_cmd(tiny_folder, out)) for _ in range(2)]  # started together
    results = [(p.wait(), p.stdout, p.stderr) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    winner = next(p for p, (code, _, _) in zip(procs, results) if code == 0)
    assert f"{out} is being written by process {winner.pid} on " in refused
    _no_traceback(refused)
    lines = (out / "records.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids)) == 6  # every sample recorded once


def test_the_lock_is_one_per_folder_and_released_with_its_holder(tmp_path):
    store = RunStore(tmp_path / "a", {"task": "t"})
    with pytest.raises(RunLockedError, match=f"is being written by process {os.getpid()} on "):
        RunStore(tmp_path / "a", {"task": "t"})
    with RunStore(tmp_path / "b", {"task": "t"}):  # another folder is another lock
        pass
    store.close()
    with FolderLock(tmp_path / "a") as lock:  # released: the folder may be written again
        RunStore(tmp_path / "a", {"task": "t"}, lock).close()
    assert (tmp_path / "a" / LOCK).exists()  # the lock file stays; only the OS lock on it counts


@pytest.mark.slow  # `cola` in child processes (the first in a test process starts their server: seconds)
def test_a_sigkilled_holder_leaves_no_stale_lock(tiny_folder, tmp_path):
    out = tmp_path / "run"
    proc = Cola(_search_cmd(tiny_folder, out, n=4, sims=12))
    records, deadline = out / "records.jsonl", time.time() + 120
    while time.time() < deadline and not (records.exists() and records.read_text().count("\n") >= 1):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert f"process {proc.pid} " in (out / LOCK).read_text()  # it held the lock when it died
    assert main(_search_cmd(tiny_folder, out, n=4, sims=12)) == 0  # the resume takes the lock at once
    ids = [r["id"] for r in read_records(out)]
    assert len(ids) == len(set(ids)) == 4


def test_duplicated_records_of_an_old_folder_count_once(tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(FIXTURES / "cola", run)
    lines = (run / "records.jsonl").read_text().splitlines()
    (run / "records.jsonl").write_text("\n".join(lines + lines[:3]) + "\n")  # three samples written twice
    with pytest.warns(UserWarning, match=r"3 record\(s\) repeat a sample id .* counted once"):
        records = read_records(run)
    assert [r["id"] for r in records] == [json.loads(line)["id"] for line in lines]
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert "cola: warning: " in capsys.readouterr().err  # the command says so too
    table = (tmp_path / "report" / "accuracy.csv").read_text()
    assert f",{len(lines)}," in table and f",{len(lines) + 3}," not in table


@pytest.mark.parametrize("command", [["layers"], ["generate", "--prompt", "t5"], ["eval", "--task", "synthetic_mc",
                                                                                  "--mode", "score", "--n", "2"]])
def test_a_device_that_does_not_exist_is_one_line_listing_those_that_do(tiny_folder, capsys, command):
    assert main([*command, "--model", str(tiny_folder), "--device", "tpu9"]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert "device 'tpu9' is not on this machine; use one of: cpu" in err


def test_an_out_that_is_a_file_is_one_line(tiny_folder, tmp_path, capsys):
    file = tmp_path / "taken"
    file.write_text("x")
    assert main(["search", "--model", str(tiny_folder), "--task", "synthetic", "--n", "1", "--sims", "2", "--out",
                 str(file), "--quiet"]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"--out {file}: that is a file, not a folder" in err
    assert main(["export", "--model", str(tiny_folder), "--chain", "0-2", "--out", str(file)]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"--out {file}: that is a file, not a folder" in err


def test_a_prompt_past_the_models_context_is_refused_or_truncated_on_request(tiny_folder, capsys):
    prompt = " ".join(f"t{5 + i % 80}" for i in range(250))  # 250 tokens; the tiny model has 256 positions
    common = ["generate", "--model", str(tiny_folder), "--prompt", prompt, "--max-new-tokens", "8", "--json"]
    assert main(common) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert "prompt 0 needs 250 tokens + 8 positions, more than the 256" in err and "--truncate" in err
    assert main([*common, "--truncate"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)["tokens"]) >= 1
    assert "its first 2 tokens are dropped (--truncate)" in err


def test_a_scoring_context_past_the_models_context_is_refused_before_any_work(tiny_folder, tmp_path, capsys):
    row = {"id": "long", "question": " ".join(["t7"] * 300), "answerKey": "A",
           "choices": [{"label": "A", "text": "t8"}, {"label": "B", "text": "t9 t9"}]}
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps(row) + "\n")
    common = ["eval", "--model", str(tiny_folder), "--task", "mc_jsonl", "--data-file", str(data), "--mode", "score",
              "--n", "0"]
    assert main(common) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert "sample 'long' (with its longest option) needs" in err and "more than the 256" in err
    assert main([*common, "--truncate"]) == 0
    assert "tokens are dropped (--truncate)" in capsys.readouterr().err


def test_corrupt_json_files_name_themselves(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "cola", run)
    (run / "config.json").write_text('{"task":\n oops')
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"{run / 'config.json'}: not valid JSON" in err and "line 2 column 2" in err
    shutil.copy(FIXTURES / "cola" / "config.json", run / "config.json")
    with open(run / "records.jsonl", "a") as f:
        f.write("{not json}\n")
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"{run / 'records.jsonl'}:9: not valid JSON" in err
    rows, summary = tmp_path / "e.jsonl", tmp_path / "e.json"
    rows.write_text("{}\n")
    summary.write_text("[")
    assert main(["report", "--evals", str(rows), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"{summary}: not valid JSON" in err


def test_a_search_refuses_a_sample_past_the_context_before_any_work(tiny_folder, tmp_path, capsys):
    rows = [{"id": f"q{i}", "question": " ".join(["t7"] * (10 if i else 300)), "answerKey": "A",
             "choices": [{"label": "A", "text": "t8"}, {"label": "B", "text": "t9"}]} for i in range(3)]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert main(["search", "--model", str(tiny_folder), "--task", "mc_jsonl", "--data-file", str(data), "--mode",
                 "score", "--n", "0", "--sims", "3", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert "sample 'q0' (with its longest option) needs" in err
    assert not (out / "records.jsonl").exists() and not (out / "config.json").exists()


def test_a_missing_device_fails_before_a_run_folder_is_made(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--model", str(tiny_folder), "--task", "synthetic", "--n", "1", "--sims", "2", "--out",
                 str(out), "--device", "tpu9"]) == 2
    _no_traceback(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("command", [["fit", "--runs", "R"], ["fit-layers", "--runs", "R", "--dev-runs", "D"],
                                     ["layer-control", "random", "--routers", "R"], ["fit-program", "--runs", "R"],
                                     ["program-control", "random", "--router", "R"]])
def test_a_router_folder_has_one_writer(command, tmp_path, capsys):
    """Two fits into one folder once mixed their files (one's config, the other's weights): each router command takes
    the folder's lock before it reads anything, so a second writer stops at once, in one line."""
    out = tmp_path / "router"
    with FolderLock(out):
        assert main(["router", *command, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} is being written by process {os.getpid()} on " in err
    _no_traceback(err)
