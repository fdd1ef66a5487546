"""One chain for a whole task: the MCTS finds a planted best chain, a resumed run replays the search without
evaluating a recorded chain again, and `cola search --static` runs end to end."""

import json

from cola import Chain
from cola.cli import main
from cola.search import MCTSConfig, SearchSpace
from cola.search.static import best_static, static_search
from cola.storage import RunStore, read_records

N = 10


def planted(chain: Chain) -> list[bool]:
    """Samples 0-5 are right with any chain that leaves out layer 2; samples 6-9 only where layer 5 also repeats."""
    without_2 = 2 not in chain.layers
    repeats_5 = chain.layers.count(5) >= 2
    return [without_2] * 6 + [without_2 and repeats_5] * 4


def test_static_search_finds_the_planted_chain(tmp_path):
    space = SearchSpace(depth=8, max_k=2, max_r=2)
    records = static_search(planted, N, space, MCTSConfig(sims=150), seed=0, store=RunStore(tmp_path, {"t": 1}),
                            progress=False)
    assert records[0]["chain"] == "0-7" and records[0]["k"] == 0
    best = best_static(records)
    assert best["k"] == N and best["accuracy"] == 1.0
    chain = Chain.parse(best["chain"])
    assert 2 not in chain.layers and chain.layers.count(5) >= 2
    shortest = min(len(Chain.parse(r["chain"])) for r in records if r["k"] == N)
    assert best["length"] == shortest
    assert all(r["correct"] == planted(Chain.parse(r["chain"])) for r in read_records(tmp_path))


def test_a_resumed_static_search_replays_without_evaluating_again(tmp_path):
    space, config = SearchSpace(depth=8, max_k=2, max_r=2), MCTSConfig(sims=60)
    whole = static_search(planted, N, space, config, 3, RunStore(tmp_path / "a", {"t": 1}), progress=False)
    static_search(planted, N, space, config, 3, RunStore(tmp_path / "b", {"t": 1}), progress=False)
    lines = (tmp_path / "b" / "records.jsonl").read_text().splitlines()
    (tmp_path / "b" / "records.jsonl").write_text("\n".join(lines[:20]) + "\n")  # as if killed after 20 chains
    calls = []

    def counting(chain):
        calls.append(str(chain))
        return planted(chain)

    again = static_search(counting, N, space, config, 3, RunStore(tmp_path / "b", {"t": 1}), progress=False)
    assert [r["chain"] for r in again] == [r["chain"] for r in whole]
    assert len(calls) == len({r["chain"] for r in whole}) - 20 and not set(calls) & {json.loads(x)["chain"] for x in lines[:20]}
    assert sorted(read_records(tmp_path / "b"), key=lambda r: r["chain"]) == \
        sorted(read_records(tmp_path / "a"), key=lambda r: r["chain"])


def test_cli_static_search(tiny_folder, tmp_path, capsys):
    out = tmp_path / "static"
    args = ["search", "--static", "--model", str(tiny_folder), "--task", "synthetic_mc", "--mode", "score", "--n", "4",
            "--sims", "6", "--out", str(out), "--quiet", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    records = read_records(out)
    assert len({r["chain"] for r in records}) == len(records) >= 2 and records[0]["chain"] == "0-5"
    best = best_static(records)
    assert f"best static chain: accuracy {best['accuracy']:.4f}" in printed and "--split test" in printed
    assert json.loads((out / "config.json").read_text())["static"] is True
    assert main(args) == 0  # resumes: nothing new to evaluate
    assert read_records(out) == records
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 2
    assert "--static run" in capsys.readouterr().err
    assert main(args[:-2] + ["--control", "decoy", "--out", str(tmp_path / "x")]) == 2


def test_cli_static_default_folder(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--static", "--model", str(tiny_folder), "--task", "synthetic_mc", "--mode", "score",
                 "--n", "2", "--sims", "2", "--quiet", "--device", "cpu"]) == 0
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("-score-all-static-n2-s0")
    assert f"run: runs/{folders[0].name}" in capsys.readouterr().out
