"""Dr.LLM's per-layer routers: before each decoder layer, a small network reads the hidden states entering it and
decides to skip the layer, execute it, or execute it twice.

Each router is ``Linear(d -> 128), tanh-GELU, Linear(128 -> 3)``. It reads the prompt's hidden states entering its
layer cut into W = 8 contiguous windows, each mean-pooled (:func:`window_pool`); the per-window logits are averaged.
Decisions are made once per input, during the prompt's prefill, layer by layer, each reading the hidden state that the
layers already routed produced (:func:`route`); the resulting chain then scores or decodes as any chain does, each of
its positions with its own cache slot (a repeated layer is two independent applications). Routing runs through the
input's prefix cache, so the chain's prefill reuses the routing's layers.

Training (:func:`fit_routers`) follows Dr.LLM's recipe: the base model frozen; teacher forcing (the hidden states
follow the labelled path, computed once per sample and cached, :func:`path_features`); focal loss (gamma 2) with
effective-number class weights (beta 0.999) per layer; AdamW (lr 1e-3, weight decay 0.01), linear warm-up then
cosine decay, 25 epochs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..core.chain import Chain
from ..core.executor import embed, prompt_segment, run_segments
from ..core.models import ColaModel
from ..core.prefix_cache import PrefixCache
from .recipes import Recipe

DECISIONS = ("skip", "execute", "repeat")  # class c runs the layer c times
WINDOWS = 8
WIDTH = 128


def window_pool(hidden: torch.Tensor, windows: int = WINDOWS) -> torch.Tensor:
    """(tokens, d) hidden states -> (windows, d): the mean of each of ``windows`` contiguous, near-equal windows
    (float32). A prompt shorter than ``windows`` tokens repeats tokens so that every window holds one."""
    tokens = hidden.shape[0]
    bounds = [(i * tokens) // windows for i in range(windows + 1)]
    hidden = hidden.float()
    return torch.stack([hidden[min(a, tokens - 1) : max(b, min(a, tokens - 1) + 1)].mean(0)
                        for a, b in zip(bounds[:-1], bounds[1:])])


class LayerRouters(torch.nn.Module):
    """One router per decoder layer (module doc)."""

    def __init__(self, depth: int, hidden_size: int, width: int = WIDTH) -> None:
        super().__init__()
        self.depth, self.hidden_size = depth, hidden_size
        self.routers = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(hidden_size, width), torch.nn.GELU(approximate="tanh"),
                                torch.nn.Linear(width, len(DECISIONS)))
            for _ in range(depth))

    def logits(self, layer: int, pooled: torch.Tensor) -> torch.Tensor:
        """(inputs, windows, d) pooled windows -> (inputs, 3): the per-window logits of ``layer``'s router, averaged."""
        return self.routers[layer](pooled).mean(-2)

    def decide(self, layer: int, pooled: torch.Tensor, key: str = "") -> int:
        """How often ``layer`` runs for one input's (windows, d) pooled windows: 0, 1 or 2 (``key``, the input's
        name, is not read: a trained router decides from what it sees)."""
        with torch.inference_mode():
            return int(self.logits(layer, pooled[None].to(self.routers[0][0].weight.dtype))[0].argmax())


class RandomRouting:
    """A control that reads nothing: layer ``l`` is skipped, executed or repeated at random with probabilities
    ``rates[l]``, drawn from a generator seeded by (``seed``, the input's name, the layer), so an input's path does not
    depend on its batch or on the order of the inputs. Rates ``[0, 1, 0]`` at every layer execute everything (full
    depth)."""

    def __init__(self, rates: Sequence[Sequence[float]], seed: int = 0) -> None:
        self.rates, self.seed, self.depth = [list(map(float, r)) for r in rates], seed, len(rates)

    def decide(self, layer: int, pooled: torch.Tensor, key: str = "") -> int:
        """How often ``layer`` runs for the input named ``key``: 0, 1 or 2."""
        return random.Random(f"{self.seed}:{key}:{layer}").choices(range(len(DECISIONS)), self.rates[layer])[0]


Routing = LayerRouters | RandomRouting


@torch.inference_mode()
def path_features(cm: ColaModel, ids: torch.Tensor, path: Chain, prefix: PrefixCache | None = None) -> torch.Tensor:
    """Teacher forcing: for each layer, the pooled windows (depth, windows, d) of the hidden states entering it when
    the layers before it run as ``path`` runs them (a Dr.LLM path: layers in order). Through a prefix cache this is
    one pass of the path."""
    prefix = prefix or PrefixCache()
    return torch.stack([window_pool(_hidden_after(cm, [ids], [[x for x in path if x < layer]], [prefix])[0])
                        for layer in range(cm.depth)])


def _hidden_after(cm: ColaModel, prompts: Sequence[torch.Tensor], paths: Sequence[Sequence[int]],
                  prefixes: Sequence[PrefixCache]) -> list[torch.Tensor]:
    """Each prompt's hidden states (tokens, d) after running its path (its embeddings when the path is empty), the
    prompts' missing layers run together in packed calls, each through its own prefix cache."""
    segments = {i: prompt_segment(cm, Chain(tuple(path)), ids, prefix)
                for i, (ids, path, prefix) in enumerate(zip(prompts, paths, prefixes)) if path}
    run_segments(cm, list(segments.values()))
    return [segments[i].hidden[0] if i in segments else embed(cm, ids)[0] for i, ids in enumerate(prompts)]


@torch.inference_mode()
def route_prompts(routers: Routing, cm: ColaModel, prompts: Sequence[torch.Tensor], keys: Sequence[str],
                  prefixes: Sequence[PrefixCache] | None = None) -> list[Chain]:
    """The chain the routers choose for each prompt (1, tokens) named by ``keys``, layer by layer during its prefill:
    each decision reads the hidden states that the layers routed before it produced. The prompts advance together,
    one layer at a time, their new layers run in packed calls whose products per prompt do not depend on the others
    (:mod:`cola.core.invariant`), so a prompt is routed as it is alone. A path that would run no layer at all runs the
    last one. Through each prompt's ``prefixes`` cache, the chain's own prefill then reuses the routing's layers."""
    prefixes = prefixes or [PrefixCache() for _ in prompts]
    paths: list[list[int]] = [[] for _ in prompts]
    for layer in range(cm.depth):
        for path, hidden, key in zip(paths, _hidden_after(cm, prompts, paths, prefixes), keys):
            runs = routers.decide(layer, window_pool(hidden), key)
            if runs == 0 and not path and layer == cm.depth - 1:
                runs = 1
            path += [layer] * runs
    return [Chain(tuple(path)) for path in paths]


def route(routers: Routing, cm: ColaModel, ids: torch.Tensor, prefix: PrefixCache | None = None,
          key: str = "") -> Chain:
    """The chain the routers choose for one prompt ``ids`` (1, tokens) named ``key`` (:func:`route_prompts`)."""
    return route_prompts(routers, cm, [ids], [key], [prefix or PrefixCache()])[0]


def route_inputs(routers: Routing, evaluator, samples: Sequence, prefixes: Sequence[PrefixCache]) -> list[Chain]:
    """The chain ``routers`` route each of ``samples`` to (an :class:`~cola.evaluation.evaluator.Evaluator`'s prompts),
    routed together, each through its own prefix cache, so the chain that answers reuses the routing's layers."""
    return route_prompts(routers, evaluator.cm, [evaluator.prompt_ids(s) for s in samples], [s.id for s in samples],
                         prefixes)


def decision_shares(chains: Sequence[Chain], depth: int) -> list[list[float]]:
    """Per layer, the share of ``chains`` that skip, execute and repeat it (the rates of a random control)."""
    from ..search.space import drllm_labels

    counts = torch.zeros(depth, len(DECISIONS))
    for chain in chains:
        counts[torch.arange(depth), torch.tensor(drllm_labels(chain, depth))] += 1
    return (counts / max(len(chains), 1)).tolist()


def class_weights(labels: torch.Tensor, beta: float = 0.999) -> torch.Tensor:
    """Effective-number class weights of ``labels`` (values 0..2): (1 - beta) / (1 - beta ** n_c), normalised to sum
    to the number of classes present; an absent class weighs 0."""
    counts = torch.bincount(labels.flatten(), minlength=len(DECISIONS)).double()
    weights = torch.where(counts > 0, (1 - beta) / (1 - beta ** counts.clamp(min=1)), torch.zeros_like(counts))
    return (weights * (counts > 0).sum() / weights.sum()).float()


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean over the rows of -w[y] (1 - p_y)^gamma log p_y (Lin et al.'s focal loss with class weights)."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, labels[:, None])[:, 0]
    return (-weights[labels] * (1 - logp.exp()) ** gamma * logp).mean()


def fit_routers(features: torch.Tensor, labels: torch.Tensor, recipe: Recipe = Recipe(),
                progress=None) -> LayerRouters:
    """Routers trained on ``features`` (samples, depth, windows, d; from :func:`path_features`) and ``labels``
    (samples, depth; 0..2): every layer's router on its own column, with the recipe's loss, optimiser and schedule.
    ``progress(epoch)`` after each epoch."""
    samples, depth, _, hidden = features.shape
    torch.manual_seed(recipe.seed)
    routers = LayerRouters(depth, hidden)
    weights = [class_weights(labels[:, layer], recipe.beta) for layer in range(depth)]
    optimiser = torch.optim.AdamW(routers.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * math.ceil(samples / recipe.batch)
    warm = max(1, int(recipe.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: (step + 1) / warm if step < warm else
        0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm))))
    generator = torch.Generator().manual_seed(recipe.seed)
    for epoch in range(recipe.epochs):
        for batch in torch.randperm(samples, generator=generator).split(recipe.batch):
            loss = sum(focal_loss(routers.logits(layer, features[batch, layer]), labels[batch, layer],
                                  weights[layer], recipe.gamma) for layer in range(depth)) / depth
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        if progress is not None:
            progress(epoch)
    return routers.eval()


def decision_scores(predicted: torch.Tensor, labels: torch.Tensor) -> dict:
    """Dr.LLM's dev figures of decisions ``predicted`` (samples, depth) against ``labels``: per-layer accuracy (every
    layer's decision against its label, pooled) and macro-F1 over the three decisions."""
    from sklearn.metrics import f1_score

    return {"per_layer_accuracy": float((predicted == labels).float().mean()),
            "macro_f1": float(f1_score(labels.flatten().numpy(), predicted.flatten().numpy(), average="macro",
                                       labels=list(range(len(DECISIONS))), zero_division=0))}


@torch.inference_mode()
def router_scores(routers: LayerRouters, features: torch.Tensor, labels: torch.Tensor) -> dict:
    """:func:`decision_scores` of the routers' decisions on teacher-forced ``features``."""
    predicted = torch.stack([routers.logits(layer, features[:, layer]).argmax(-1) for layer in range(routers.depth)],
                            dim=1)
    return decision_scores(predicted, labels)


def supervision(folder) -> tuple[list[dict], dict]:
    """Dr.LLM's training data from a ``cola search --preset drllm`` run: a sample is kept only when some path
    answers it right; its kept path is the shortest right one (ties: the fewest distinct layers, then the smallest
    path), its labels how often each layer runs in it (:func:`~cola.search.space.drllm_labels`). Samples the full
    model gets wrong and a path fixes (*improved*) come first, as Dr.LLM's code prefers them. Returns the rows (id,
    path, labels, improved) and the counts kept, dropped and improved. A run of another search space is refused."""
    from ..errors import RouterError
    from ..search.space import drllm_labels
    from ..storage import read_config, read_records

    config = read_config(folder)
    if config.get("space", {}).get("actions") != "drllm":
        raise RouterError(f"{folder}: its paths come from the {config.get('space', {}).get('actions')!r} search "
                          "space, not Dr.LLM's; search with `cola search --preset drllm` for per-layer labels")
    depth, rows, dropped = config["depth"], [], 0
    for record in read_records(folder):
        right = [Chain.parse(e["chain"]) for e in record["evaluations"] if e["correct"]]
        if not right:
            dropped += 1
            continue
        path = min(right, key=lambda c: (len(c), len(set(c)), c.layers))
        rows.append({"id": record["id"], "path": str(path), "labels": drllm_labels(path, depth),
                     "improved": not record["full"]["correct"]})
    rows.sort(key=lambda r: not r["improved"])
    return rows, {"kept": len(rows), "dropped": dropped, "improved": sum(r["improved"] for r in rows)}


ROUTERS = "routers.safetensors"
CONFIG = "config.json"


def save_routers(routers: Routing, folder, config: dict):
    """Write ``config.json`` (``config`` with the routers' shape, and a random control's rates and seed) and, for
    trained routers, ``routers.safetensors`` into ``folder``, each whole or not at all."""
    import json
    from pathlib import Path

    from ..storage import save_tensors_atomic, write_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(routers, RandomRouting):
        config = {**config, "routing": "random", "rates": routers.rates, "seed": routers.seed}
    else:
        config = {**config, "routing": "trained", "hidden_size": routers.hidden_size}
        save_tensors_atomic(folder / ROUTERS, routers.state_dict())
    write_atomic(folder / CONFIG, json.dumps({**config, "depth": routers.depth}, indent=2) + "\n")
    return folder


def load_routers(folder, cm: ColaModel | None = None) -> tuple[Routing, dict]:
    """Read a routers folder (trained routers or a random control); with ``cm``, check that they were made for this
    model (name, weights, depth). A missing or unreadable file, or routers of another model, is one
    :class:`~cola.errors.RouterError`."""
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..errors import DataError, RouterError
    from ..storage import read_json

    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise RouterError(f"{folder} is not a per-layer routers folder (it needs {CONFIG})")
    try:
        config = read_json(folder / CONFIG, expect=dict)
        if config.get("routing") == "random":
            routers: Routing = RandomRouting(config["rates"], int(config["seed"]))
            if routers.depth != config["depth"] or any(len(r) != len(DECISIONS) or min(r) < 0 or sum(r) <= 0
                                                       for r in routers.rates):
                raise ValueError("rates must be three non-negative numbers per layer")
        else:
            if not (folder / ROUTERS).is_file():
                raise RouterError(f"{folder} is not a per-layer routers folder (it needs {CONFIG} and {ROUTERS})")
            routers = LayerRouters(int(config["depth"]), int(config["hidden_size"]))
            routers.load_state_dict(load_file(str(folder / ROUTERS)))
            routers.eval()
    except RouterError:
        raise
    except (SafetensorError, OSError, KeyError, RuntimeError, ValueError, TypeError, DataError) as err:
        raise RouterError(f"{folder}: unreadable routers ({type(err).__name__}: {err}); make them again") from None
    if cm is not None:
        from ..core.hashes import weights_hash

        expected = {"model": cm.name, "depth": cm.depth, "weights": weights_hash(cm)}
        differ = [f"{k} {config.get(k)!r} (this model: {v!r})" for k, v in expected.items() if config.get(k) != v]
        if differ:
            raise RouterError(f"{folder} was made for another model: {'; '.join(differ)}")
    return routers, config


def random_control(folder, out, execute: bool = False, seed: int = 0):
    """Write the random control of the trained routers in ``folder`` to ``out``: every layer skipped, executed or
    repeated at the rates the trained routers chose on their dev inputs (``routed_shares``), read from nothing; with
    ``execute``, a router that executes every layer (full depth). Returns its config."""
    from ..errors import RouterError

    routers, config = load_routers(folder)
    if config.get("routing") != "trained":
        raise RouterError(f"{folder} is a random control already; make controls of trained routers")
    rates = [[0.0, 1.0, 0.0]] * routers.depth if execute else config["routed_shares"]
    about = {k: config[k] for k in ("model", "weights", "task", "mode", "chat", "score_style", "dtype") if k in config}
    control = {**about, "control_of": str(folder), "control": "execute" if execute else "random"}
    save_routers(RandomRouting(rates, seed), out, control)
    return load_routers(out)[1]


def _supervised(folders, cm: ColaModel | None, data: str | None, progress: bool, what: str,
                only: set[str] | None = None):
    """The kept samples of drllm ``folders`` (one model and prompt format; tasks may differ, as ARC-Easy's and
    ARC-Challenge's for Dr.LLM's ARC routers; with ``only``, those of these ids): teacher-forced features (samples,
    depth, windows, d), labels (samples, depth), their ids, the model and what the runs were (``task``: the tasks
    joined by ``+``), the counts, and the first run's evaluator with every sample that run searched."""
    from tqdm import tqdm

    from ..core.loading import load_model
    from ..errors import RouterError
    from ..evaluation.evaluator import EvalConfig, Evaluator
    from ..search.run import run_samples
    from ..storage import read_config
    from ..tasks import get_task

    configs = [read_config(f) for f in folders]
    keys = ("model", "weights", "mode", "chat", "score_style", "dtype", "depth")
    if any(tuple(c.get(k) for k in keys) != tuple(configs[0].get(k) for k in keys) for c in configs):
        raise RouterError(f"the {what} runs differ in model or prompt format; fit on runs of one model, asked one way")
    first = configs[0]
    if cm is None:
        cm = load_model(first["model"], dtype=first["dtype"])
    evaluators = {task: Evaluator(cm, get_task(task, first.get("lm_eval_include")),
                                  config=EvalConfig(mode=first["mode"], chat=first["chat"],
                                                    score_style=first["score_style"]))
                  for task in dict.fromkeys(c["task"] for c in configs)}
    features, labels, ids, counts = [], [], [], {"kept": 0, "dropped": 0, "improved": 0}
    searched = []
    for folder, config in zip(folders, configs):
        evaluator = evaluators[config["task"]]
        rows, found = supervision(folder)
        counts = {k: counts[k] + found[k] for k in counts}
        if only is not None:
            rows = [r for r in rows if r["id"] in only]
            counts["used"] = counts.get("used", 0) + len(rows)
        by_id = {s.id: s for s in run_samples(config, data)}
        if config["task"] == first["task"]:
            searched += list(by_id.values())
        for row in tqdm(rows, desc=f"{what} features ({folder})", unit="sample", disable=not progress):
            features.append(path_features(cm, evaluator.prompt_ids(by_id[row["id"]]), Chain.parse(row["path"])))
            labels.append(row["labels"])
            ids.append(row["id"])
    if not features:
        raise RouterError(f"no {what} sample has a right path in {', '.join(map(str, folders))}")
    about = {**{k: first.get(k) for k in keys + ("split", "control")}, "task": "+".join(evaluators)}
    return (torch.stack(features), torch.tensor(labels), ids, cm, about, counts,
            (evaluators[first["task"]], searched))


def kept_ids(folders) -> set[str]:
    """The ids of the samples that drllm search runs ``folders`` keep for training (:func:`supervision`)."""
    return {row["id"] for folder in folders for row in supervision(folder)[0]}


def fit_from_runs(runs, dev_runs, recipe: Recipe = Recipe(), data: str | None = None, progress: bool = True,
                  same_samples_as: Sequence = ()) -> tuple[LayerRouters, dict]:
    """Per-layer routers trained on the kept samples of train-split drllm search ``runs`` (:func:`supervision`,
    teacher-forced :func:`path_features`, :func:`fit_routers`) and scored on those of dev-split ``dev_runs`` (macro-F1
    and per-layer accuracy against their labels, and the decisions the routers make on every dev input, routed
    free-running: ``routed_shares``, the rates of their random control). With ``same_samples_as`` (other drllm runs,
    such as the decoy control's), only the samples those runs keep too are used, so that real and decoy routers
    train on the same inputs. Nothing is chosen on test. Returns the routers and their config (model, weights hash,
    depth, recipe, data, kept and dropped counts, dev scores), ready for :func:`save_routers`."""
    from dataclasses import asdict

    from tqdm import tqdm

    from ..errors import RouterError
    from ..evaluation.provenance import fit_environment
    from ..storage import chunks

    only = kept_ids(same_samples_as) if same_samples_as else None
    x, y, ids, cm, about, counts, _ = _supervised(runs, None, data, progress, "train", only)
    if about.get("split") == "test":
        raise RouterError("the routers are trained on train-split runs; these searched the test split")
    dev_x, dev_y, dev_ids, _, dev_about, dev_counts, (evaluator, dev_samples) = _supervised(dev_runs, cm, data,
                                                                                            progress, "dev")
    if (dev_about["model"], dev_about["weights"]) != (about["model"], about["weights"]) or not set(
            dev_about["task"].split("+")) <= set(about["task"].split("+")):
        raise RouterError("the dev runs are of another model, or of a task the train runs are not")
    routers = fit_routers(x, y, recipe)
    routed = [chain for chunk in tqdm(chunks(dev_samples, 16), desc="routing dev", disable=not progress)
              for chain in route_inputs(routers, evaluator, chunk, [PrefixCache() for _ in chunk])]
    config = {**about, "recipe": asdict(recipe), "runs": [str(r) for r in runs], "dev_runs": [str(r) for r in dev_runs],
              "same_samples_as": [str(r) for r in same_samples_as],
              "routed_shares": decision_shares(routed, cm.depth),
              "dev_mean_layers": sum(map(len, routed)) / max(len(routed), 1),
              "train": counts, "dev": dev_counts, "train_ids": ids, "dev_ids": dev_ids,
              "train_scores": router_scores(routers, x, y), "dev_scores": router_scores(routers, dev_x, dev_y),
              "dev_scores_majority": decision_scores(y.mode(dim=0).values.expand_as(dev_y), dev_y),
              "label_shares": [torch.bincount(y[:, layer], minlength=3).tolist() for layer in range(y.shape[1])],
              "environment": fit_environment(cm)}
    return routers, config
