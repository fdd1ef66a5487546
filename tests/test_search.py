"""MCTS on planted rewards, the ablations' action sets, and runs: resume after SIGKILL, determinism, config checks."""

import json
import random
import time

import pytest
from helpers import Cola

from cola import Chain
from cola.cli import main
from cola.search import Evaluation, MCTSConfig, SearchSpace, mcts
from cola.storage import ConfigMismatch, RunStore


def planted(chain: Chain) -> Evaluation:
    """Correct iff layers 2 and 5 are both left out; reward 1 then, else 0."""
    ok = 2 not in chain.layers and 5 not in chain.layers
    return Evaluation(chain, "yes" if ok else "no", ok, float(ok))


def test_mcts_finds_the_planted_optimum():
    space = SearchSpace(depth=8, max_k=2, max_r=2)  # chains of 4 to 16 layers
    result = mcts(Chain.full(8), planted, space, MCTSConfig(sims=200), random.Random(0))
    best = result.best()
    # the optimum: correct and as short as the bounds allow; needs at least two edits from the root
    assert best.correct and len(best.chain) == 4
    assert not {2, 5} & set(best.chain.layers)
    chains = [e.chain for e in result.evaluations]
    assert len(chains) == len(set(chains)) == 201  # root + 200 distinct evaluations
    assert all(4 <= len(c) <= 16 for c in chains)


def test_mcts_is_seeded():
    space = SearchSpace(depth=8, max_k=2, max_r=2)
    runs = [mcts(Chain.full(8), planted, space, MCTSConfig(sims=60), random.Random(5)) for _ in range(2)]
    assert [e.chain for e in runs[0].evaluations] == [e.chain for e in runs[1].evaluations]
    other = mcts(Chain.full(8), planted, space, MCTSConfig(sims=60), random.Random(6))
    assert [e.chain for e in other.evaluations] != [e.chain for e in runs[0].evaluations]


def test_skip_only_and_repeat_only_never_make_the_other_edit():
    depth = 10
    for actions in ("skip", "repeat"):
        space = SearchSpace(depth=depth, actions=actions)
        result = mcts(Chain.full(depth), planted, space, MCTSConfig(sims=150), random.Random(1))
        for e in result.evaluations[1:]:
            layers = e.chain.layers
            if actions == "skip":  # a subsequence of the model's order: shorter, nothing repeated or re-ordered
                assert list(layers) == sorted(set(layers)) and len(layers) < depth
            else:  # every layer still there, in order, some blocks run again: longer, never shorter
                assert set(layers) == set(range(depth)) and len(layers) > depth


def test_space_children_are_one_edit_away():
    space = SearchSpace(depth=6, max_k=2, max_r=2)
    children = dict((c, a) for a, c in space.children(Chain.full(6)))
    assert Chain.full(6).skip(1, 2) in children and Chain.full(6).repeat(4, 2, 2) in children
    assert Chain.full(6) not in children
    assert all(3 <= len(c) <= 12 for c in children)


def _search_cmd(model, out, n=4, sims=12):
    return ["search", "--model", str(model), "--task", "synthetic", "--n", str(n), "--sims", str(sims), "--seed", "3",
            "--out", str(out), "--quiet", "--device", "cpu"]


def _lines_without_wall_time(folder):
    lines = []
    for line in (folder / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("wall_time")
        lines.append(json.dumps(record, sort_keys=True))
    return lines


def _search(cmd) -> None:
    """A search command run in this process (the process boundary is not what these tests test)."""
    assert main(cmd) == 0


@pytest.mark.slow  # `cola` in child processes (the first in a test process starts their server: seconds)
def test_sigkill_resume_equals_uninterrupted_run_and_runs_are_deterministic(tiny_folder, tmp_path):
    first, second, killed = tmp_path / "a", tmp_path / "b", tmp_path / "killed"
    _search(_search_cmd(tiny_folder, first))
    _search(_search_cmd(tiny_folder, second))
    assert _lines_without_wall_time(first) == _lines_without_wall_time(second)  # same seed: identical records

    child = Cola(_search_cmd(tiny_folder, killed))
    records = killed / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (records.exists() and records.read_text().count("\n") >= 1):
        time.sleep(0.05)
    child.kill()
    child.wait()
    done_before = records.read_text().count("\n")
    assert 1 <= done_before < 4, "the kill must land mid-run"
    with open(records, "a") as f:  # a write torn by the kill
        f.write('{"id": "synthetic-3-3", "gold"')
    _search(_search_cmd(tiny_folder, killed))
    assert _lines_without_wall_time(killed) == _lines_without_wall_time(first)


def test_a_different_config_is_refused(tmp_path):
    RunStore(tmp_path, {"task": "synthetic", "sims": 200})
    RunStore(tmp_path, {"task": "synthetic", "sims": 200})  # same config: resumes
    with pytest.raises(ConfigMismatch, match="sims: 200 -> 100"):
        RunStore(tmp_path, {"task": "synthetic", "sims": 100})


def test_batched_run_equals_one_at_a_time_and_resumes_with_another_batch(tiny_folder, tmp_path):
    alone, together = tmp_path / "alone", tmp_path / "together"
    _search(_search_cmd(tiny_folder, alone, n=4, sims=8))
    _search(_search_cmd(tiny_folder, together, n=4, sims=8) + ["--batch", "3"])
    assert json.loads((together / "config.json").read_text())["batch"] == 3
    assert sorted(_lines_without_wall_time(together)) == sorted(_lines_without_wall_time(alone))
    lines = (together / "records.jsonl").read_text().splitlines()
    (together / "records.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if stopped after two samples
    _search(_search_cmd(tiny_folder, together, n=4, sims=8) + ["--batch", "1"])
    assert sorted(_lines_without_wall_time(together)) == sorted(_lines_without_wall_time(alone))
