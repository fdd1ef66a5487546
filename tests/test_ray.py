"""One search over Ray workers (a local two-worker cluster on CPU, started once for this module): the records equal
a single process's; a worker killed mid-run, or the driver stopped (SIGTERM: one line) or killed and re-run, still
ends with every sample recorded exactly once; a sample that fails for a reason in its data is reported and the run
goes on."""

import json
import os
import signal
import threading
import time

import pytest
from helpers import Cola

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray cluster takes seconds to start and stop: not in the fast loop

from cola.search import MCTSConfig  # noqa: E402
from cola.search.distributed import WORKER_PREFIX, run_search_ray, start_local_cluster  # noqa: E402
from cola.search.run import SearchJob, run_search  # noqa: E402
from cola.storage import RunStore, read_records  # noqa: E402
from cola.tasks import load_samples  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    start_local_cluster(ray, 2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


N, SIMS = 6, 6


def _cmd(model, out, *extra, n=N, sims=SIMS):
    return ["search", "--model", str(model), "--task", "synthetic", "--n", str(n), "--sims", str(sims), "--seed", "3",
            "--out", str(out), "--quiet", "--device", "cpu", *extra]


def _lines(folder):
    lines = []
    for record in read_records(folder):
        record.pop("wall_time")
        lines.append(json.dumps(record, sort_keys=True))
    return sorted(lines)


def _job(model):
    return SearchJob(model=str(model), task="synthetic", device="cpu", mcts=MCTSConfig(sims=SIMS), seed=3)


@pytest.fixture(scope="module")
def samples():
    return load_samples("synthetic", n=N, seed=3)


@pytest.fixture(scope="module")
def reference(tiny_folder, samples, tmp_path_factory):
    """The same search in one process, without Ray, as `cola search` runs it."""
    out = tmp_path_factory.mktemp("single") / "run"
    job = _job(tiny_folder)
    evaluator = job.evaluator()
    run_search(job, evaluator, samples, RunStore(out, job.run_config(evaluator, samples)), progress=False)
    return _lines(out)


def test_a_killed_worker_loses_nothing(cluster, tiny_folder, samples, reference, tmp_path):
    """Two workers, one of them SIGKILLed mid-run: the records equal a single process's, in the samples' order."""
    out = tmp_path / "run"
    result = {}
    driver = threading.Thread(target=lambda: result.update(
        out=run_search_ray(_job(tiny_folder), samples, str(out), workers=2, progress=False)))
    driver.start()
    deadline = time.time() + 120
    workers: list[dict] = []
    while time.time() < deadline and len(workers) < 2:  # the victim's pid first: the run may end soon after a record
        workers = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(WORKER_PREFIX)]
        time.sleep(0.05)
    assert len(workers) == 2
    pid = ray.get(ray.get_actor(workers[0]["name"], namespace=workers[0]["namespace"]).pid.remote())
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0)  # not starved (Ray's nice 15)
    while time.time() < deadline and len(read_records(out)) < 1:
        time.sleep(0.05)
    done_before = len(read_records(out))
    os.kill(pid, signal.SIGKILL)
    driver.join(timeout=300)
    assert not driver.is_alive()
    assert done_before < N, "the kill must land mid-run"
    records, failures, depth = result["out"]
    assert failures == [] and depth == 6 and [r["id"] for r in records] == [s.id for s in samples]
    assert _lines(out) == reference  # every sample once, each as a single process searches it
    assert json.loads((out / "config.json").read_text())["workers"] == 2


def test_a_stopped_or_killed_driver_resumes(cluster, tiny_folder, reference, tmp_path):
    """SIGTERM stops the driver with one line (Ray's own SIGTERM handler would exit at once, saying nothing); then
    SIGKILL, mid-run again; the same search without Ray (another number of workers) resumes to the records of one
    process, writing nothing twice."""
    out = tmp_path / "run"
    cmd = _cmd(tiny_folder, out, "--ray-address", cluster, "--workers", "1")
    for how in (signal.SIGTERM, signal.SIGKILL):
        driver = Cola(cmd)  # joins the cluster by the address Ray put in this process's environment
        lines, deadline = len(read_records(out)) + 1, time.time() + 180  # one more than the last driver kept
        while time.time() < deadline and len(read_records(out)) < lines and driver.poll() is None:
            time.sleep(0.05)
        driver.send_signal(how)
        driver.wait()
        log = driver.stdout + driver.stderr
        assert lines <= len(read_records(out)) < N, "the signal must land mid-run: " + log[-2000:]
        if how == signal.SIGTERM:
            kept = len(read_records(out))
            assert driver.returncode == 143 and "Traceback" not in log, log[-2000:]
            assert driver.stderr.strip().splitlines()[-1] == (f"terminated: {kept} of {N} samples recorded in {out}; "
                                                              "run the same command again to resume")
    from cola.cli import main

    assert main(_cmd(tiny_folder, out)) == 0  # in this process, without Ray (Ray's workers would take seconds to start)
    assert _lines(out) == reference

    assert main(_cmd(tiny_folder, out, "--ray-address", cluster, sims=SIMS + 1)) == 2  # another config


def test_a_bad_sample_fails_alone_and_is_listed(cluster, tiny_folder, tmp_path, capsys):
    from cola.cli import main

    rows = [{"id": f"q{i}", "question": f"t{i} t5", "choices": [{"label": "A", "text": "t7"},
                                                                  {"label": "B", "text": "t8"}], "answerKey": "A"}
            for i in range(4)]
    rows[2]["choices"][1]["text"] = ""  # an option that encodes to no token: only scoring finds out
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    code = main(["search", "--model", str(tiny_folder), "--task", "mc_jsonl", "--data-file", str(data), "--mode",
                 "score", "--sims", "5", "--out", str(out), "--quiet", "--device", "cpu", "--ray-address", cluster,
                 "--workers", "1", "--batch", "2", "--n", "0"])
    err = capsys.readouterr().err
    assert code == 1
    assert "sample 'q2' failed: ValueError: an answer option encodes to no tokens" in err
    assert sorted(r["id"] for r in read_records(out)) == ["q0", "q1", "q3"]


def test_without_ray_the_error_says_how_to_install(monkeypatch, capsys, tmp_path):
    import builtins

    from cola.cli import main

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--task", "synthetic", "--n", "2", "--workers", "2"]) == 2
    assert "pip install -e .[ray]" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no run folder is left behind


def test_a_worker_that_cannot_load_the_model_is_one_clear_error(cluster, tmp_path, capsys):
    from cola.cli import main

    missing = tmp_path / "no-such-model"
    missing.mkdir()
    code = main(["search", "--model", str(missing), "--task", "synthetic", "--n", "2", "--sims", "2", "--quiet",
                 "--device", "cpu", "--ray-address", cluster, "--workers", "1", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "a Ray worker could not start" in capsys.readouterr().err
