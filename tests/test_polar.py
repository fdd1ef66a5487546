"""PoLar (Li, Li & Zhou, ICML 2026): its offline MCTS as `cola search --preset polar`."""

from __future__ import annotations

import json
import shutil
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


# --- the program predictor ------------------------------------------------------------------------------------------

import itertools  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import Cola, mc_rows, tiny_model  # noqa: E402

from cola.evaluation.evaluator import EvalConfig, Evaluator  # noqa: E402
from cola.policies.program import (  # noqa: E402
    CHECKPOINT,
    KEEP,
    REPEAT,
    SKIP,
    ProgramPredictor,
    ProgramRouter,
    decode,
    parse_program,
    program_chain,
    program_targets,
    route_inputs,
)
from cola.policies.program_eval import best_of_k, oracle_summary  # noqa: E402
from cola.policies.program_fit import Checkpoint, fingerprint, fit_kept, menu, supervision, train  # noqa: E402
from cola.policies.recipes import ProgramRecipe  # noqa: E402
from cola.tasks import get_task, load_samples  # noqa: E402


def _all_programs(depth: int, max_pack: int = 4):
    """Every program of ``depth`` layers (segments of 1..max_pack layers, each op)."""
    def grow(cursor):
        if cursor == depth:
            yield ()
            return
        for size in range(1, min(max_pack, depth - cursor) + 1):
            for op in (SKIP, KEEP, REPEAT):
                for tail in grow(cursor + size):
                    yield ((cursor, size, op), *tail)
    return list(grow(0))


def test_parsing_takes_the_program_of_fewest_segments_skips_most_repeats_and_larger_segments_first():
    assert parse_program(Chain.full(6), 6) == [(0, 4, KEEP), (4, 2, KEEP)]  # fewest segments; then 4+2, not 3+3
    assert parse_program(Chain.parse("0-3,0-3"), 4) == [(0, 4, REPEAT)]
    assert parse_program(Chain.parse("0,0,2-3"), 4) == [(0, 1, REPEAT), (1, 1, SKIP), (2, 2, KEEP)]
    assert parse_program(Chain.parse("0,1,2,1,2,3"), 4) == [(0, 1, KEEP), (1, 2, REPEAT), (3, 1, KEEP)]
    assert parse_program(Chain.parse("0,0,0,1"), 2) is None  # a layer three times
    assert parse_program(Chain.parse("0,2,1,3"), 4) is None  # a jump back that is not a doubled segment
    assert parse_program(Chain.parse("0,1,0,2"), 3) is None
    # against every program of 5 layers: the parse of each chain is the least of the programs that write it, by
    # (segments, skips, -repeats, sizes largest first)
    writers: dict = {}
    for program in _all_programs(5):
        chain = program_chain(program)
        if chain is not None:
            writers.setdefault(chain, []).append(program)
    ambiguous = 0
    for chain, programs in writers.items():
        def key(p):
            ops = [op for _, _, op in p]
            return len(p), ops.count(SKIP), -ops.count(REPEAT), [-size for _, size, _ in p]
        best = min(programs, key=key)
        assert tuple(parse_program(chain, 5)) == best, chain
        ambiguous += len(programs) > 1
    assert ambiguous > 100  # the tie rules decide for most chains


def test_targets_and_weights_by_hand():
    assert program_targets([(0, 2, KEEP), (2, 1, SKIP), (3, 3, REPEAT)], 6) == (
        [0, 0, 1, 1, 0, 0], [KEEP, -100, SKIP, REPEAT, -100, -100])

    def record(sample_id, *right):
        return {"id": sample_id, "evaluations": [{"chain": c, "correct": True} for c in right]
                + [{"chain": "0-3", "correct": False}]}

    records = [record("a", "0-5", "0-2,4-5"),  # full and a shorter program: the full one weighs 0.3
               record("b", "0-5"),  # full alone: weight 1
               record("c", "0-5", "0,0,0,1-2"),  # the shorter one does not parse: still, the full one weighs 0.3
               record("d", "0,2,1,3-5"),  # nothing parses: dropped
               {"id": "e", "evaluations": [{"chain": "0-5", "correct": False}]}]  # nothing right: dropped
    examples, counts = supervision(records, 6)
    weights = {(e["id"], e["chain"]): e["weight"] for e in examples}
    assert weights == {("a", "0-2,4-5"): 0.5, ("a", "0-5"): 0.15, ("b", "0-5"): 1.0, ("c", "0-5"): 0.3}
    assert counts == {"kept_samples": 3, "kept_programs": 4, "unparsable_programs": 2,
                      "dropped_unparsable": 1, "dropped_no_right_program": 1}
    many = {"id": "m", "evaluations": [{"chain": str(Chain.full(6).skip(i, 1).repeat(j, 1)), "correct": True}
                                       for i in range(6) for j in range(5)]}
    kept = [e for e in supervision([many], 6, ProgramRecipe(max_paths=7))[0]]
    assert len(kept) == 7 and abs(sum(e["weight"] for e in kept) - 1) < 1e-9  # drawn down to 7, weights sum to 1
    assert menu(records, 6, size=2) == ["0-5", "0-2,4-5"]  # right on the most samples first


def test_decoding_by_hand_cuts_long_gaps_and_keeps_the_beam_in_score_order():
    boundary = torch.tensor([0.0, -5.0, -5.0, -5.0, -5.0, -5.0, 5.0, -5.0])  # one start at 6: gap 0..5 cut at 4
    ops = torch.full((8, 3), -10.0)
    ops[0] = torch.tensor([0.0, 2.0, 1.0])  # keep, then repeat
    ops[4] = torch.tensor([3.0, 0.0, -1.0])  # skip, then keep
    ops[6] = torch.tensor([1.0, 1.0, 5.0])  # repeat, then skip (a tie with keep: the first listed)
    beams = decode(boundary, ops, beam=5)
    lp = [torch.log_softmax(ops[i], -1).tolist() for i in (0, 4, 6)]
    expected = []
    for (a, b, c) in itertools.product([KEEP, REPEAT], [SKIP, KEEP], [REPEAT, SKIP]):
        expected.append(([(0, 4, a), (4, 2, b), (6, 2, c)], lp[0][a] + lp[1][b] + lp[2][c]))
    expected.sort(key=lambda e: e[1], reverse=True)
    assert [p for p, _ in beams] == [p for p, _ in expected[:5]]
    assert [s for _, s in beams] == pytest.approx([s for _, s in expected[:5]])
    assert program_chain(beams[0][0]) == Chain.parse("0-3,6-7,6-7")


class _Planted(torch.nn.Module):
    """A predictor that writes the same logits for every input."""

    def __init__(self, boundary, ops):
        super().__init__()
        self.boundary, self.ops = boundary, ops

    def forward(self, states, padding):
        n = states.shape[0]
        return self.boundary.expand(n, -1), self.ops.expand(n, -1, -1)


class _Texts:
    def encode(self, texts):
        return [torch.zeros(3, 4) for _ in texts]


def _planted_router(depth=6):
    boundary = torch.tensor([0.0, -9, -9, 9, -9, -9])  # segments 0-2 and 3-5
    ops = torch.zeros(depth, 3)
    ops[0] = torch.tensor([-9.0, 2.0, 0.0])  # keep 0-2 (then double it)
    ops[3] = torch.tensor([-9.0, 0.0, 2.0])  # double 3-5 (then keep it)
    return ProgramRouter({"depth": depth, "routing": "trained"}, _Planted(boundary, ops), _Texts())


def _mc(tmp_path, n=6):
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in mc_rows(n, seed=5)))
    return load_samples("mc_jsonl", data_file=path, n=0)


def test_a_planted_predictor_routes_its_program_and_runs_it_as_the_chain_alone(tmp_path):
    cm = tiny_model("llama")
    evaluator = Evaluator(cm, get_task("mc_jsonl"), EvalConfig(mode="score"))
    samples = _mc(tmp_path)
    chains = route_inputs(_planted_router(), evaluator, samples)
    assert chains == [Chain.parse("0-2,3-5,3-5")] * len(samples)
    direct = evaluator.evaluate(Chain.parse("0-2,3-5,3-5"), samples)
    from cola.policies.spec import ProgramPolicy
    from cola.policies.harness import run_policy

    rows = run_policy(ProgramPolicy(router="planted"), evaluator, samples, batch=4, router=_planted_router())
    assert [r["answer"] for r in rows] == [o.answer for o in direct]
    assert all(r["layers"] == 9 for r in rows)


def test_pass1_best_of_k_online_and_as_released_are_ordered_and_counted_by_hand(tmp_path):
    cm = tiny_model("llama")
    evaluator = Evaluator(cm, get_task("mc_jsonl"), EvalConfig(mode="score"))
    samples = _mc(tmp_path)
    router = _planted_router()
    top = [str(program_chain(p)) for p in router.programs(["x"], ["x"], 4)[0]]
    assert top == ["0-5,3-5", "0-5", "0-2,0-5,3-5", "0-2,0-5"]  # keep+double, keep+keep (the tie: first), ...
    verdicts = {c: [o.correct for o in evaluator.evaluate(Chain.parse(c), samples)] for c in top}
    trusted = {samples[0].id: {top[1]: True, top[2]: False}, samples[1].id: {top[0]: True}}
    rows = best_of_k(router, evaluator, samples, 4, trusted, batch=4)
    for i, (row, sample) in enumerate(zip(rows, samples)):
        assert row["verdicts"] == [verdicts[c][i] for c in top] and row["pass1"] == verdicts[top[0]][i]
        assert row["best_of_k_online"] == any(verdicts[c][i] for c in top)
        known = trusted.get(sample.id, {})
        assert row["as_released"] == any(known.get(c, verdicts[c][i]) for c in top)
        assert row["layers_online"] == 9 + 12 + 6 + 9
        assert row["layers_as_released"] == row["layers_online"] - sum(len(Chain.parse(c)) for c in known)
    assert rows[0]["as_released"] and rows[1]["as_released"]  # trusted hits count, run or not
    summary = oracle_summary(rows, 4, ["run"])
    assert summary["label"].startswith("ORACLE")
    assert summary["as_released"]["k"] >= summary["best_of_k_online"]["k"] - 1  # a trusted miss can hide one hit
    assert summary["best_of_k_online"]["k"] >= summary["pass1"]["k"]


def _planted_problem(n: int, depth: int = 6, dim: int = 16, seed: int = 0):
    """Inputs whose token states carry one of four classes; each class has its own program to learn. Each token's
    state also carries its position, as an encoder's states do: PoLar's layer queries read the tokens through
    cross-attention alone (no residual), so a layer's state differs from another's only by where it attends."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, dim, generator=g) * 3
    positions = torch.randn(8, dim, generator=g) * 2
    programs = [[(0, 3, KEEP), (3, 3, KEEP)], [(0, 2, KEEP), (2, 2, SKIP), (4, 2, KEEP)],
                [(0, 3, REPEAT), (3, 3, KEEP)], [(0, 1, KEEP), (1, 1, SKIP), (2, 4, KEEP)]]
    states, examples, classes = [], [], []
    for i in range(n):
        c = int(torch.randint(4, (1,), generator=g))
        tokens = int(torch.randint(3, 9, (1,), generator=g))
        states.append(centres[c] + positions[:tokens] + 0.5 * torch.randn(tokens, dim, generator=g))
        boundaries, ops = program_targets(programs[c], depth)
        examples.append({"id": str(i), "index": i, "boundaries": boundaries, "ops": ops, "weight": 1.0})
        classes.append(c)
    return states, examples, classes, programs


def test_training_on_a_planted_problem_writes_the_exact_program_for_95_percent_of_held_out_inputs():
    states, examples, classes, programs = _planted_problem(300)
    recipe = ProgramRecipe(epochs=10, batch=16, lr=5e-3, warmup=5, d_model=32, heads=4, blocks=1, seed=0)
    predictor, history = train(states, examples[:200], examples[200:250], 6, recipe)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    router = ProgramRouter({"depth": 6, "routing": "trained"}, predictor, None)
    with torch.inference_mode():
        from cola.policies.program import pad

        boundary, ops = predictor(*pad(states[250:]))
    exact = [decode(b, o)[0][0] == programs[c] for b, o, c in zip(boundary, ops, classes[250:])]
    assert sum(exact) / len(exact) >= 0.95, sum(exact)
    assert router.depth == 6


class _Stop(Exception):
    pass


def test_an_interrupted_fit_resumes_from_its_last_epoch_to_the_uninterrupted_weights(tmp_path):
    """A fit killed after its second epoch (of four) resumes from the checkpoint that epoch left, and ends with the
    weights and losses of a fit that ran through; a checkpoint of other inputs is set aside, with a line."""
    states, examples, _, _ = _planted_problem(80)
    recipe = ProgramRecipe(epochs=4, batch=16, lr=5e-3, warmup=2, d_model=16, heads=2, blocks=1, seed=0)
    whole, whole_history = train(states, examples[:60], examples[60:], 6, recipe)

    def stop_after_two(epoch, train_loss, val_loss):
        if epoch == 1:
            raise _Stop

    folder = tmp_path / "fit.partial"

    def checkpoint(recipe):
        return Checkpoint(folder, fingerprint(states, examples[:60], examples[60:], 6, recipe, {"encoder": "x"}))

    with pytest.raises(_Stop):
        train(states, examples[:60], examples[60:], 6, recipe, stop_after_two, checkpoint(recipe))
    assert checkpoint(recipe).epochs() == 2 and "2 of 4 epochs are kept in" in fit_kept(tmp_path, 4)
    seen = []
    resumed, history = train(states, examples[:60], examples[60:], 6, recipe,
                             lambda epoch, t, v: seen.append(epoch), checkpoint(recipe))
    assert history == whole_history and seen == [0, 1, 2, 3]  # the kept epochs are shown again, then the rest
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), whole.state_dict().values()))
    # a checkpoint of other inputs (here: another recipe) is not resumed
    other = ProgramRecipe(**{**recipe.__dict__, "lr": 1e-3})
    with pytest.warns(UserWarning, match="holds a fit of other inputs; fitting from the start"):
        train(states, examples[:60], examples[60:], 6, other, None, checkpoint(other))
    ProgramRouter({"depth": 6, "routing": "trained"}, resumed, None).save(tmp_path)
    assert (tmp_path / "config.json").is_file() and not folder.exists()  # a saved router keeps no checkpoint


@pytest.mark.slow  # `cola` in a child process (the first in a test process starts their server: seconds)
def test_a_stopped_fit_program_says_what_it_kept_and_the_same_command_resumes(tiny_folder, tmp_path):
    run, folder = tmp_path / "run", tmp_path / "predictor"
    assert main(["search", "--model", str(tiny_folder), "--device", "cpu", "--task", "synthetic_mc", "--mode", "score",
                 "--n", "24", "--preset", "polar", "--sims", "12", "--out", str(run), "--quiet"]) == 0
    fit = ["router", "fit-program", "--runs", str(run), "--out", str(folder), "--epochs", "20", "--batch", "64",
           "--device", "cpu"]
    child = Cola(fit)
    state, deadline = folder / CHECKPOINT / Checkpoint.FILE, time.time() + 120
    while time.time() < deadline and not state.is_file() and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signal.SIGTERM)
    child.wait()
    kept = Checkpoint(folder / CHECKPOINT, "").epochs()
    assert child.returncode == 143 and 1 <= kept < 20, child.stderr[-2000:]
    assert child.stderr.strip().splitlines()[-1] == (f"terminated: {kept} of 20 epochs are kept in "
                                                     f"{folder / CHECKPOINT}; run the same command again to resume")
    assert main(fit + ["--quiet"]) == 0  # resumed
    config = json.loads((folder / "config.json").read_text())
    assert len(config["history"]) == 20 and not (folder / CHECKPOINT).exists()


def test_a_saved_predictor_loads_and_writes_the_same_programs(tmp_path):
    cm = tiny_model("llama")
    from cola.policies.program import untrained_program_router

    folder = untrained_program_router(cm, tmp_path / "p", seed=3)
    evaluator = Evaluator(cm, get_task("mc_jsonl"), EvalConfig(mode="score"))
    samples = _mc(tmp_path)
    loaded = ProgramRouter.load(folder, cm)
    again = ProgramRouter.load(folder, cm)
    assert route_inputs(loaded, evaluator, samples) == route_inputs(again, evaluator, samples)
    assert loaded.predictor.state_dict().keys() == ProgramPredictor(6, 64, 32, 4, 1).state_dict().keys()
    from cola.errors import RouterError

    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text('{"router": "library"}')
    with pytest.raises(RouterError, match="another kind of router"):
        ProgramRouter.load(tmp_path / "foreign", cm)
    (folder / "program.safetensors").write_bytes(b"garbage")
    with pytest.raises(RouterError, match="unreadable program router"):
        ProgramRouter.load(folder, cm)


def test_fit_program_controls_and_the_oracle_evaluation_from_the_command_line(tiny_folder, tmp_path, capsys):
    """A polar search, a predictor fitted on it, its three controls, and `cola eval --policy program` with PoLar's
    best-of-k: the oracle lines are labelled, as released (trusting a search of the same items, same model and
    prompts) equals best-of-k online in accuracy and runs fewer layers, and pass@1 is the policy's own number."""
    common = ["--model", str(tiny_folder), "--device", "cpu", "--task", "synthetic_mc", "--mode", "score"]
    run, test = tmp_path / "train-run", tmp_path / "test-run"
    assert main(["search", *common, "--n", "24", "--preset", "polar", "--sims", "12", "--out", str(run),
                 "--quiet"]) == 0
    assert main(["search", *common, "--n", "8", "--seed", "7", "--preset", "polar", "--sims", "12", "--out",
                 str(test), "--quiet"]) == 0
    folder = tmp_path / "predictor"
    assert main(["router", "fit-program", "--runs", str(run), "--out", str(folder), "--epochs", "2", "--batch", "16",
                 "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "samples kept" in out and "validation loss" in out and "unparsable" in out
    fitted = json.loads((folder / "config.json").read_text())  # the thread count decides a fit's last bits
    assert fitted["environment"]["threads"] == torch.get_num_threads() and fitted["environment"]["torch"]
    for kind, extra in (("random", []), ("random", ["--with-full"]), ("menu", [])):
        name = tmp_path / f"{kind}{'-full' if extra else ''}"
        assert main(["router", "program-control", kind, "--router", str(folder), "--out", str(name), *extra]) == 0
    evaluate = ["eval", *common, "--n", "8", "--seed", "7", "--policy", "program", "--top-k", "3"]
    assert main([*evaluate, "--router", str(folder), "--trust-runs", str(test), "--out",
                 str(tmp_path / "e.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "ORACLE best-of-3 online" in printed and "ORACLE as released" in printed and "pass@1" in printed
    summary = json.loads((tmp_path / "e.json").read_text())
    oracle = summary["oracle"]
    assert oracle["label"].startswith("ORACLE") and oracle["pass1"]["k"] == summary["k"]
    assert oracle["as_released"]["k"] == oracle["best_of_k_online"]["k"] >= oracle["pass1"]["k"]
    assert oracle["as_released"]["mean_layers"] <= oracle["best_of_k_online"]["mean_layers"]
    # full depth first: every item's root chain is in the test search, so it is taken from there, unrun
    assert main([*evaluate, "--router", str(tmp_path / "random-full"), "--trust-runs", str(test), "--out",
                 str(tmp_path / "rf.jsonl")]) == 0
    rf = json.loads((tmp_path / "rf.json").read_text())
    assert rf["k"] == rf["baselines"]["full"]["k"]  # at pass@1 the with-full control answers with full depth
    released, online = rf["oracle"]["as_released"], rf["oracle"]["best_of_k_online"]
    assert released["programs_trusted"] >= 8 and released["k"] == online["k"]
    assert released["mean_layers"] <= online["mean_layers"] - 6  # the full chain's 6 layers were not run
    assert main([*evaluate[:-2], "--router", str(folder), "--trust-runs", str(test)]) == 2  # --trust-runs needs --top-k
    assert "needs --top-k" in capsys.readouterr().err
    cut = tmp_path / "test-unfinished"  # a search still running trusts fewer hits: refused, before any evaluation
    shutil.copytree(test, cut)
    lines = (cut / "records.jsonl").read_text().splitlines(keepends=True)
    (cut / "records.jsonl").write_text("".join(lines[:4]))
    assert main([*evaluate, "--router", str(folder), "--trust-runs", str(cut), "--out", str(tmp_path / "u.jsonl")]) == 2
    assert "hold no record of 4 of the 8 evaluated samples" in capsys.readouterr().err
