"""PoLar (Li, Li & Zhou, ICML 2026): its offline MCTS as `cola search --preset polar`."""

from __future__ import annotations

import json
import math
import random

from cola import Chain
from cola.cli import main
from cola.search import Evaluation, SearchSpace, mcts
from cola.search.presets import search_settings
from cola.search.space import polar_bounds


def _chains(pairs) -> list[str]:
    return [str(chain) for _, chain in pairs]


def test_polar_candidates_follow_its_code_order_with_block_edits_at_the_root_only():
    space = SearchSpace(4, "polar", min_len=2, max_len=6)
    # per position: drop 1..4, then double 1..4 (at the root), each within the bounds, the first action naming a chain
    assert _chains(space.children(Chain.full(4), at_root=True)) == [
        "1-3", "2-3", "0,0-3", "0-1,0-3",  # position 0: drop 1, 2 (3 is too short); double 1, 2 (3 is too long)
        "0,2-3", "0,3", "0-1,1-3", "0-2,1-3", "0-1,3", "0-1", "0-2,2-3", "0-3,2-3", "0-2", "0-3,3"]
    path = Chain.parse("0-1,1-3")  # layer 1 twice already: it is not doubled again, and dropping either copy is one
    assert _chains(space.children(path)) == ["1,1-3", "0,0-1,1-3", "0-3", "0-1,1,3", "0-1,1-2,2-3", "0-1,1-2",
                                              "0-1,1-3,3"]
    assert all(max(c.layers.count(x) for x in c.layers) <= 2 for _, c in space.children(path))
    assert space.bounds == (2, 6)


def test_polar_length_bounds_are_its_own_for_its_depths_and_scaled_from_28_layers_otherwise():
    assert [polar_bounds(d) for d in (24, 28, 36, 48)] == [(16, 28), (16, 32), (24, 44), (36, 54)]
    assert polar_bounds(30) == (17, 34) and polar_bounds(18) == (10, 21)
    assert SearchSpace(30, "polar").bounds == (17, 34)


def _search(depth: int, sims: int, right, seed: int = 0, **space) -> list[Evaluation]:
    settings, config = search_settings("polar", sims=sims, **space)

    def evaluate(chain: Chain) -> Evaluation:
        return Evaluation(chain, "A" if right(chain) else "B", right(chain), float(right(chain)))

    return mcts(Chain.full(depth), evaluate, SearchSpace(depth, **settings), config, random.Random(seed)).evaluations


def test_the_polar_tree_runs_every_simulation_evaluates_each_chain_once_and_exhausts_a_small_space():
    evaluations = _search(30, 100, lambda chain: len(chain) < 30)
    chains = [e.chain for e in evaluations]
    assert len(chains) == 101 and len(set(chains)) == 101  # one new chain a simulation while the space is large
    assert all(17 <= len(c) <= 34 and max(c.layers.count(x) for x in c.layers) <= 2 for c in chains)
    # three layers, lengths 2..4: the search reaches every chain its edits reach from the root, each once
    evaluations = _search(3, 60, lambda chain: False, min_len=2, max_len=4)
    reached, frontier = {Chain.full(3)}, [(Chain.full(3), True)]
    space = SearchSpace(3, "polar", min_len=2, max_len=4)
    while frontier:
        chain, root = frontier.pop()
        for _, child in space.children(chain, at_root=root):
            if child not in reached:
                reached.add(child)
                frontier.append((child, False))
    assert len(evaluations) < 60 and len({e.chain for e in evaluations}) == len(evaluations)
    assert {e.chain for e in evaluations} <= reached  # a node expanded past is not evaluated itself


def test_the_polar_tree_prefers_the_shorter_right_chains_its_ucb_rewards():
    right = lambda chain: 25 <= len(chain) <= 28  # noqa: E731
    evaluations = _search(30, 100, right)
    found = [e for e in evaluations if e.correct]
    assert len(found) >= 30  # the tree keeps expanding under the rewarded nodes
    settings, config = search_settings("polar")
    assert (config.sims, config.lam, config.c, config.epsilon) == (100, 5.0, math.sqrt(2), 0.1)
    assert not config.stop_on_fix and not config.stop_shorter_by


def test_cola_search_preset_polar_records_its_space_and_bounds(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--model", str(tiny_folder), "--device", "cpu", "--task", "synthetic", "--n", "2",
                 "--preset", "polar", "--sims", "12", "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["space"] == {"actions": "polar", "max_k": 4, "max_r": 1, "min_len": None, "max_len": None}
    assert config["length_bounds"] == list(polar_bounds(6)) and config["mcts"]["sims"] == 12
    assert "12 simulations each, actions polar" in capsys.readouterr().out
    for line in (out / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["simulations"] == 12 and len(record["evaluations"]) <= 13
        for e in record["evaluations"]:
            chain = Chain.parse(e["chain"])
            assert max(chain.layers.count(x) for x in chain.layers) <= 2
