"""Dr.LLM's search preset: its path space (layers in order, each 0-2 times; skip blocks of at most 2 layers, repeat one
layer once), its per-layer labels, its early stops, and `cola search --preset drllm` with every constant overridable."""

from __future__ import annotations

import json
import random

import pytest
import torch

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


# --- the per-layer routers ----------------------------------------------------------------------------------------

from helpers import tiny_model  # noqa: E402

from cola.core.executor import forward  # noqa: E402
from cola.policies.layer_router import (  # noqa: E402
    LayerRouters,
    Recipe,
    class_weights,
    decision_scores,
    fit_routers,
    focal_loss,
    path_features,
    route,
    router_scores,
    window_pool,
)


def _planted(depth: int, hidden: int, runs: dict[int, int]) -> LayerRouters:
    """Routers with zero weights whose output bias picks ``runs[layer]`` (default 1: execute) at every layer."""
    routers = LayerRouters(depth, hidden)
    with torch.no_grad():
        for layer, router in enumerate(routers.routers):
            for module in router:
                if isinstance(module, torch.nn.Linear):
                    module.weight.zero_()
                    module.bias.zero_()
            router[2].bias[runs.get(layer, 1)] = 1.0
    return routers


def test_a_planted_router_runs_the_chain_it_plants_and_all_execute_is_full_depth():
    cm = tiny_model("llama")
    ids = torch.tensor([[1, 7, 9, 11, 13, 17, 19, 23, 29, 31, 37]])
    chain = route(_planted(6, 64, {3: 0, 5: 2}), cm, ids)
    assert chain == Chain.parse("0-2,4,5,5")
    assert torch.equal(forward(cm, chain, ids), forward(cm, Chain.parse("0-2,4,5,5"), ids))
    assert route(_planted(6, 64, {}), cm, ids) == Chain.full(6)
    assert route(_planted(6, 64, {i: 0 for i in range(6)}), cm, ids) == Chain.parse("5")  # never an empty path


def test_window_pooling_and_focal_loss_equal_hand_computations():
    hidden = torch.arange(20 * 3, dtype=torch.float32).reshape(20, 3)
    pooled = window_pool(hidden, 8)  # windows of 2 or 3 tokens: [0,2) [2,5) [5,7) [7,10) [10,12) [12,15) [15,17) [17,20)
    assert torch.equal(pooled[1], hidden[2:5].mean(0)) and torch.equal(pooled[7], hidden[17:20].mean(0))
    assert window_pool(hidden[:3], 8).shape == (8, 3)  # shorter than the windows: tokens repeat
    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2])
    weights = torch.tensor([0.5, 1.0, 2.0])
    p = torch.softmax(logits, -1)
    hand = -(0.5 * (1 - p[0, 0]) ** 2 * torch.log(p[0, 0]) + 2.0 * (1 - p[1, 2]) ** 2 * torch.log(p[1, 2])) / 2
    assert torch.allclose(focal_loss(logits, labels, weights, 2.0), hand)
    beta = 0.999
    w = torch.tensor([(1 - beta) / (1 - beta ** 3), (1 - beta) / (1 - beta ** 1), 0.0], dtype=torch.float64)
    assert torch.allclose(class_weights(torch.tensor([0, 0, 0, 1]), beta), (w * 2 / w.sum()).float())


def test_training_on_a_planted_problem_reaches_95_percent_per_layer_accuracy():
    """Labels a fixed function of the pooled features: each layer's label is the argmax of three fixed projections
    of what its windows share (each window that plus a little noise)."""
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(2000, 4, 16, generator=generator)
    features = shared[:, :, None, :] + 0.1 * torch.randn(2000, 4, 8, 16, generator=generator)
    projections = torch.randn(4, 16, 3, generator=generator)
    labels = torch.einsum("nld,ldc->nlc", shared, projections).argmax(-1)
    routers = fit_routers(features[:1600], labels[:1600], Recipe(epochs=25, batch=32))
    scores = router_scores(routers, features[1600:], labels[1600:])
    assert scores["per_layer_accuracy"] >= 0.95 and scores["macro_f1"] >= 0.95, scores
    majority_labels = labels[:1600].mode(dim=0).values
    majority = decision_scores(majority_labels.expand_as(labels[1600:]), labels[1600:])
    hand = (labels[1600:] == majority_labels).float().mean()
    assert majority["per_layer_accuracy"] == pytest.approx(float(hand)) and majority["macro_f1"] < 0.5


def test_teacher_forced_features_follow_the_labelled_path():
    cm = tiny_model("llama")
    ids = torch.tensor([[1, 7, 9, 11, 13, 17, 19, 23, 29, 31, 37]])
    path = Chain.parse("0-1,1,2,4-5")
    features = path_features(cm, ids, path)
    assert features.shape == (6, 8, 64)
    from cola.core.executor import embed, prompt_segment, run_segments

    assert torch.equal(features[0], window_pool(embed(cm, ids)[0]))
    segment = prompt_segment(cm, Chain.parse("0-1,1,2"), ids)  # entering layer 4 (layer 3 skipped): after 0,1,1,2
    run_segments(cm, [segment])
    assert torch.equal(features[4], window_pool(segment.hidden[0])) and torch.equal(features[3], features[4])


def test_routers_saved_and_loaded_decide_the_same_and_foreign_folders_are_one_error(tmp_path):
    from cola.errors import RouterError
    from cola.core.hashes import weights_hash
    from cola.policies.layer_router import load_routers, save_routers

    cm = tiny_model("llama")
    torch.manual_seed(1)
    routers = LayerRouters(6, 64)
    config = {"model": cm.name, "weights": weights_hash(cm)}
    save_routers(routers, tmp_path / "r", config)
    loaded, stored = load_routers(tmp_path / "r", cm)
    ids = torch.tensor([[1, 7, 9, 11, 13, 17, 19, 23, 29, 31, 37]])
    assert route(loaded, cm, ids) == route(routers, cm, ids) and stored["depth"] == 6
    other = tiny_model("llama", seed=1)
    with pytest.raises(RouterError, match="made for another model: weights"):
        load_routers(tmp_path / "r", other)
    (tmp_path / "r" / "routers.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(RouterError, match="unreadable routers"):
        load_routers(tmp_path / "r")
    with pytest.raises(RouterError, match="not a per-layer routers folder"):
        load_routers(tmp_path / "nothing")
    from cola.policies.layer_router import RandomRouting

    save_routers(RandomRouting([[0.0, 1.0, 0.0]] * 6), tmp_path / "c", config)
    assert route(load_routers(tmp_path / "c", cm)[0], cm, ids) == Chain.full(6)  # the execute control: full depth
    (tmp_path / "c" / "config.json").write_text(json.dumps({**config, "routing": "random", "depth": 6, "seed": 0,
                                                            "rates": [[0.5, 0.5]] * 6}))
    with pytest.raises(RouterError, match="three non-negative numbers per layer"):
        load_routers(tmp_path / "c")


def test_supervision_keeps_the_shortest_right_path_and_refuses_labels_of_another_space(tmp_path):
    from cola.errors import RouterError
    from cola.policies.layer_router import supervision

    def run(folder, actions, records):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"depth": 6, "space": {"actions": actions}}))
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return folder

    def record(sample_id, full_correct, paths):
        evaluations = [{"chain": c, "correct": ok} for c, ok in paths]
        return {"id": sample_id, "full": {"correct": full_correct}, "evaluations": evaluations}

    records = [record("a", True, [("0-5", True), ("0-2,4-5", True), ("0,1,1,2,4", True), ("0-1,4-5", True)]),
               record("b", False, [("0-5", False), ("0-5,5", True)]),
               record("c", False, [("0-5", False), ("1-5", False)])]
    rows, counts = supervision(run(tmp_path / "drllm", "drllm", records))
    assert counts == {"kept": 2, "dropped": 1, "improved": 1}
    assert [r["id"] for r in rows] == ["b", "a"]  # improved first
    assert rows[1]["path"] == "0-1,4-5" and rows[1]["labels"] == [1, 1, 0, 0, 1, 1]  # shortest right path
    assert rows[0]["labels"] == [1, 1, 1, 1, 1, 2]
    with pytest.raises(RouterError, match="not Dr.LLM's"):
        supervision(run(tmp_path / "study", "all", records))


def test_cola_router_fit_layers_trains_on_drllm_runs_and_scores_on_dev(tiny_folder, tmp_path, capsys):
    from helpers import mc_rows

    from cola.core.loading import load_model
    from cola.policies.layer_router import load_routers

    runs = {}
    for part, seed in (("train", 0), ("dev", 1)):
        data = tmp_path / f"{part}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in mc_rows(16, seed=seed)))
        runs[part] = tmp_path / f"run-{part}"
        assert main(["search", "--model", str(tiny_folder), "--device", "cpu", "--task", "mc_jsonl", "--data-file",
                     str(data), "--mode", "score", "--no-chat", "--n", "0", "--preset", "drllm", "--sims", "12",
                     "--out", str(runs[part]), "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "routers"
    assert main(["router", "fit-layers", "--runs", str(runs["train"]), "--dev-runs", str(runs["dev"]), "--out",
                 str(out), "--epochs", "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "train: " in printed and "dev: " in printed and "macro-F1" in printed
    assert "most common train label" in printed
    cm = load_model(str(tiny_folder), device="cpu")
    routers, config = load_routers(out, cm)
    assert config["train"]["kept"] + config["train"]["dropped"] == 16 and config["recipe"]["epochs"] == 3
    assert len(config["train_ids"]) == config["train"]["kept"] and 0 <= config["dev_scores"]["macro_f1"] <= 1
    assert config["environment"]["threads"] == torch.get_num_threads()
    path = route(routers, cm, torch.tensor([[1, 7, 9, 11, 13, 17, 19, 23, 29, 31, 37]]))
    assert list(path) == sorted(path) and max(drllm_labels(path, 6)) <= 2
    # labels from the study's search space are refused
    study = tmp_path / "run-study"
    assert main(["search", "--model", str(tiny_folder), "--device", "cpu", "--task", "mc_jsonl", "--data-file",
                 str(tmp_path / "train.jsonl"), "--mode", "score", "--no-chat", "--n", "4", "--sims", "4",
                 "--out", str(study), "--quiet"]) == 0
    assert main(["router", "fit-layers", "--runs", str(study), "--dev-runs", str(runs["dev"]), "--out",
                 str(tmp_path / "r2"), "--quiet"]) == 2
    assert "not Dr.LLM's" in capsys.readouterr().err
    # the controls and the routed evaluation, end to end: the execute control answers exactly as full depth does
    for kind in ("random", "execute"):
        assert main(["router", "layer-control", kind, "--routers", str(out), "--out", str(tmp_path / kind)]) == 0
    assert load_routers(tmp_path / "random", cm)[1]["rates"] == config["routed_shares"]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in mc_rows(8, seed=2)))
    common = ["eval", "--model", str(tiny_folder), "--device", "cpu", "--task", "mc_jsonl", "--data-file", str(test),
              "--mode", "score", "--no-chat", "--n", "0", "--batch-size", "3", "--policy", "layer-router"]
    summaries = {}
    for name in ("routers", "random", "execute"):
        folder = out if name == "routers" else tmp_path / name
        assert main(common + ["--router", str(folder), "--out", str(tmp_path / f"{name}.jsonl")]) == 0
        summaries[name] = json.loads((tmp_path / f"{name}.json").read_text())
        rows = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert all(r["asked"][0]["chain"] for r in rows) and summaries[name]["policy"]["router"] == str(folder)
    execute = summaries["execute"]
    assert execute["agreement"] == 1.0 and execute["mean_layers"] == execute["baselines"]["full"]["mean_layers"]
    assert "layers computed per input" in capsys.readouterr().out
    assert main(common + ["--router", str(out), "--sweep"]) == 2
    assert "no setting to calibrate or sweep" in capsys.readouterr().err


def test_routed_inputs_of_one_batch_take_their_own_paths_and_answer_as_alone(tiny_folder, tmp_path):
    """Random routing at mixed rates gives the inputs of a batch different paths; each answers as it does alone."""
    from helpers import mc_rows

    from cola.core.loading import load_model
    from cola.evaluation.evaluator import EvalConfig, Evaluator
    from cola.policies import policy
    from cola.policies.harness import run_policy
    from cola.policies.layer_router import RandomRouting
    from cola.tasks import get_task, load_samples

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in mc_rows(6, seed=3)))
    cm = load_model(str(tiny_folder), device="cpu")
    evaluator = Evaluator(cm, get_task("mc_jsonl"), config=EvalConfig(mode="score", chat=False))
    samples = load_samples(get_task("mc_jsonl"), None, str(data), 0)
    routing = RandomRouting([[0.3, 0.5, 0.2]] * cm.depth, seed=4)
    spec = policy("layer-router", router="random")
    batched = run_policy(spec, evaluator, samples, batch=6, router=routing)
    alone = [row for s in samples for row in run_policy(spec, evaluator, [s], batch=1, router=routing)]
    paths = [r["asked"][0]["chain"] for r in batched]
    assert len(set(paths)) >= 3 and paths == [r["asked"][0]["chain"] for r in alone]
    assert [r["asked"][0]["confidence"] for r in batched] == [r["asked"][0]["confidence"] for r in alone]
    assert [r["layers"] for r in batched] == [len(Chain.parse(p)) for p in paths]  # routing's layers are reused
    # each input's draw depends on the seed, its name and the layer only, and the draws follow the rates
    draws = [RandomRouting([[0.3, 0.5, 0.2]] * 2, seed=5).decide(1, None, f"q{i}") for i in range(3000)]
    assert draws == [RandomRouting([[0.3, 0.5, 0.2]] * 2, seed=5).decide(1, None, f"q{i}") for i in range(3000)]
    assert [abs(draws.count(c) / 3000 - rate) < 0.03 for c, rate in enumerate((0.3, 0.5, 0.2))] == [True] * 3
    assert draws != [RandomRouting([[0.3, 0.5, 0.2]] * 2, seed=6).decide(1, None, f"q{i}") for i in range(3000)]
    # routers that read the hidden states: prompts routed together take the paths each takes alone
    torch.manual_seed(2)
    routers = LayerRouters(cm.depth, cm.model.config.hidden_size)
    with torch.no_grad():
        for router in routers.routers:
            router[2].bias.copy_(torch.tensor([0.0, 0.3, -0.3]))  # near a tie: decisions follow the inputs
    batched = run_policy(spec, evaluator, samples, batch=6, router=routers)
    alone = [row for s in samples for row in run_policy(spec, evaluator, [s], batch=1, router=routers)]
    assert [r["asked"][0]["chain"] for r in batched] == [r["asked"][0]["chain"] for r in alone]
    assert [r["asked"][0]["confidence"] for r in batched] == [r["asked"][0]["confidence"] for r in alone]
    assert len({r["asked"][0]["chain"] for r in batched}) >= 2, "the test needs inputs routed differently"


def test_routers_train_on_runs_of_two_tasks_asked_one_way_and_refuse_two_prompt_formats(tiny_folder, tmp_path,
                                                                                        capsys):
    """Dr.LLM trains its ARC routers on ARC-Easy and ARC-Challenge together: runs of several tasks asked in one prompt
    format train one set of routers; runs asked in two formats are one clear error."""
    from helpers import mc_rows

    def search(name: str, task: str, *extra: str) -> str:
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in mc_rows(8, seed=len(name))))
        source = ["--data-file", str(data)] if task == "mc_jsonl" else []
        out = str(tmp_path / f"run-{name}")
        assert main(["search", "--model", str(tiny_folder), "--device", "cpu", "--task", task, *source, "--mode",
                     "score", "--n", "8", "--preset", "drllm", "--sims", "8", "--out", out, "--quiet", *extra]) == 0
        return out

    file_run, synthetic_run = search("file", "mc_jsonl", "--no-chat"), search("synthetic", "synthetic_mc", "--no-chat")
    dev = search("dev", "mc_jsonl", "--no-chat")
    out = tmp_path / "routers"
    assert main(["router", "fit-layers", "--runs", file_run, synthetic_run, "--dev-runs", dev, "--out", str(out),
                 "--epochs", "2", "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "mc_jsonl+synthetic_mc"
    from cola.core.loading import load_model
    from cola.evaluation.evaluator import EvalConfig
    from cola.policies.spec import policy

    cm, spec = load_model(str(tiny_folder), device="cpu"), policy("layer-router", router=str(out))
    with pytest.warns(UserWarning, match="trained on prompts asked another way: mode 'score' .asked: 'generate'"):
        spec.load_router(cm, EvalConfig(mode="generate", chat=False))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.load_router(cm, EvalConfig(mode="score", chat=False))  # asked as trained: no warning
    assert config["train"]["kept"] + config["train"]["dropped"] == 16
    chat_run = search("chat", "synthetic_mc")  # chat template on: another prompt format
    capsys.readouterr()
    assert main(["router", "fit-layers", "--runs", file_run, chat_run, "--dev-runs", dev, "--out",
                 str(tmp_path / "r2"), "--quiet"]) == 2
    assert "differ in model or prompt format" in capsys.readouterr().err
