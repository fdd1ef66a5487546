"""Dr.LLM's search preset: its path space (layers in order, each 0-2 times; skip blocks of at most 2 layers, repeat one
layer once), its per-layer labels, its early stops, and `cola search --preset drllm` with every constant overridable."""

from __future__ import annotations

import json
import random

import pytest

from cola import Chain
from cola.cli import main
from cola.errors import UsageError
from cola.search import Evaluation, MCTSConfig, SearchSpace, mcts
from cola.search.presets import search_settings
from cola.search.space import drllm_labels


def test_the_drllm_space_edits_paths_of_layers_in_order_run_at_most_twice():
    space = SearchSpace(6, "drllm", max_k=2, min_len=1)
    children = dict(space.children(Chain.full(6)))
    assert len(children) == 6 + 5 + 6  # skip one of 6 layers, skip one of 5 pairs, repeat one of 6
    assert children["skip 2 2"] == Chain.parse("0-1,4-5") and children["repeat 3"] == Chain.parse("0-3,3-5")
    path = Chain.parse("0-1,1,2,4-5")  # layer 1 twice, layer 3 skipped
    for action, child in space.children(path):
        counts = drllm_labels(child, 6)
        assert list(child) == sorted(child) and max(counts) <= 2, action
    names = [a for a, _ in space.children(path)]
    assert "repeat 1" not in names and "repeat 3" not in names and "skip 3 1" not in names and "skip 2 2" not in names
    assert "skip 1 1" in names  # a repeated layer can be skipped whole
    with pytest.raises(UsageError, match="not a Dr.LLM path"):
        space.children(Chain.parse("0-2,1,3-5"))
    assert drllm_labels(path, 6) == [1, 2, 1, 0, 1, 1]


def _search(correct, root_correct: bool, config: MCTSConfig) -> list[Chain]:
    space = SearchSpace(6, "drllm", max_k=2, min_len=1)

    def evaluate(chain: Chain) -> Evaluation:
        right = root_correct if chain == Chain.full(6) else correct(chain)
        return Evaluation(chain, "A" if right else "B", right, float(right))

    return [e.chain for e in mcts(Chain.full(6), evaluate, space, config, random.Random(0)).evaluations]


def test_the_early_stops_end_a_search_at_the_first_chain_that_meets_them():
    _, drllm = search_settings("drllm", sims=40)
    fixed = lambda chain: len(chain) == 7  # noqa: E731  (right only with one repeat)
    chains = _search(fixed, False, drllm)
    assert len(chains[-1]) == 7 and all(len(c) != 7 for c in chains[1:-1])  # stops at the first fix
    assert len(_search(fixed, False, MCTSConfig(sims=40, stop_on_fix=False))) == 41
    shorter = lambda chain: len(chain) <= 4  # noqa: E731
    chains = _search(shorter, True, drllm)
    assert len(chains[-1]) <= 4 and all(len(c) > 4 for c in chains[1:-1])  # a right chain 2 shorter than depth
    one_shorter = lambda chain: len(chain) == 5  # noqa: E731  (never 2 shorter: runs the whole budget)
    assert len(_search(one_shorter, True, drllm)) == 41


def test_cola_search_preset_drllm_records_its_constants_and_takes_overrides(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--model", str(tiny_folder), "--device", "cpu", "--task", "synthetic", "--n", "2",
                 "--preset", "drllm", "--sims", "8", "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["space"] == {"actions": "drllm", "max_k": 2, "max_r": 1, "min_len": 1, "max_len": None}
    assert config["mcts"] == {"sims": 8, "lam": 3.0, "c": 1.8, "epsilon": 0.1, "widening": 0.5, "stop_on_fix": True,
                              "stop_shorter_by": 2}
    assert "8 simulations each, actions drllm" in capsys.readouterr().out
    for line in (out / "records.jsonl").read_text().splitlines():
        for e in json.loads(line)["evaluations"]:
            chain = Chain.parse(e["chain"])
            assert list(chain) == sorted(chain) and max(drllm_labels(chain, 6)) <= 2
    assert search_settings("study")[1] == MCTSConfig()  # the default protocol is unchanged
    assert "stop_on_fix" not in MCTSConfig().to_config()  # and so are its runs' configs
