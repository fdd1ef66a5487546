"""Fitting PoLar's program predictor on the programs a search found right, as PoLar's released command does
(``run_polar.py``: 10 epochs, batch 128, lr 5e-4, cosine after 10 warm-up steps, up to 50 programs a sample, the full
program weighted 0.30 where a shorter one is right, each sample's weight normalised), and its controls.

Supervision (:func:`supervision`): per searched sample, its right programs (the chains the search found right,
shortest first), at most ``max_paths`` of them drawn with one seeded generator, each parsed
(:func:`~cola.policies.program.parse_program`; one no program writes is dropped and counted); a sample with none
left is dropped. Each kept program weighs ``1 / (its sample's parsed programs)``; the full program weighs
``full_weight`` times that where a shorter right program exists. Training holds out the last ``val_share`` of the
samples, in the runs' order, and keeps the epoch of lowest validation loss; the loss of an example is the mean BCE of
its boundary logits over layers 1..depth-1 plus the mean CE of its op logits at its segment starts, weighted by its
weight renormalised to mean 1 in its batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.chain import Chain
from ..errors import RouterError
from .program import (
    CHECKPOINT,
    IGNORE,
    OPS,
    ProgramPredictor,
    ProgramRouter,
    QuestionEncoder,
    pad,
    parse_program,
    program_chain,
    input_text,
    program_targets,
)
from .recipes import ProgramRecipe


def right_programs(record: dict) -> list[Chain]:
    """The chains a search record found right, each once, shortest first (then in the order evaluated)."""
    right = list(dict.fromkeys(Chain.parse(e["chain"]) for e in record["evaluations"] if e["correct"]))
    return sorted(right, key=len)


def supervision(records: Sequence[dict], depth: int, recipe: ProgramRecipe = ProgramRecipe()
                ) -> tuple[list[dict], dict]:
    """PoLar's examples from search records (module doc): one per kept program, with its sample id, targets and
    weight, in the records' order; and the counts (samples kept, dropped without a right program or a parsable one;
    programs kept and unparsable)."""
    rng = random.Random(recipe.seed)
    full = Chain.full(depth)
    examples: list[dict] = []
    counts = Counter()
    for record in records:
        right = right_programs(record)
        if not right:
            counts["dropped_no_right_program"] += 1
            continue
        shorter = full in right and any(len(c) < depth for c in right if c != full)  # before the draw, as PoLar
        if len(right) > recipe.max_paths:
            right = rng.sample(right, recipe.max_paths)
        kept = []
        for chain in right:
            program = parse_program(chain, depth, recipe.max_pack)
            if program is None:
                counts["unparsable_programs"] += 1
                continue
            boundaries, ops = program_targets(program, depth)
            weight = recipe.full_weight if chain == full and shorter else 1.0
            kept.append({"id": record["id"], "chain": str(chain), "boundaries": boundaries, "ops": ops,
                         "weight": weight})
        if not kept:
            counts["dropped_unparsable"] += 1
            continue
        for example in kept:
            example["weight"] /= len(kept)
        examples += kept
        counts["kept_samples"] += 1
        counts["kept_programs"] += len(kept)
    return examples, dict(counts)


def example_loss(boundary: torch.Tensor, ops: torch.Tensor, targets: torch.Tensor, op_targets: torch.Tensor
                 ) -> torch.Tensor:
    """Each example's loss: the mean BCE of its boundary logits over layers 1..depth-1 plus the mean CE of its op
    logits at its segment starts."""
    seg = F.binary_cross_entropy_with_logits(boundary[:, 1:], targets[:, 1:].float(), reduction="none").mean(1)
    ce = F.cross_entropy(ops.reshape(-1, len(OPS)), op_targets.reshape(-1), ignore_index=IGNORE,
                         reduction="none").reshape(op_targets.shape)
    starts = (op_targets != IGNORE).float()
    return seg + (ce * starts).sum(1) / starts.sum(1).clamp(min=1.0)


def batch_loss(predictor: ProgramPredictor, states: Sequence[torch.Tensor], batch: Sequence[dict]) -> torch.Tensor:
    """The weighted loss of a batch of examples (weights renormalised to mean 1 in the batch)."""
    boundary, ops = predictor(*pad([states[e["index"]] for e in batch]))
    targets = torch.tensor([e["boundaries"] for e in batch])
    op_targets = torch.tensor([e["ops"] for e in batch])
    weights = torch.tensor([e["weight"] for e in batch])
    weights = weights / (weights.mean() + 1e-8)
    return (weights * example_loss(boundary, ops, targets, op_targets)).mean()


def train(states: Sequence[torch.Tensor], train_examples: Sequence[dict], val_examples: Sequence[dict], depth: int,
          recipe: ProgramRecipe = ProgramRecipe(), progress: Callable[[int, float, float], None] | None = None,
          checkpoint: Checkpoint | None = None) -> tuple[ProgramPredictor, list[dict]]:
    """Train a predictor on ``train_examples`` (each with the ``index`` of its question's token ``states``) as the
    recipe says, keeping the epoch of lowest validation loss (the last epoch without validation examples). Returns
    the predictor (in eval mode) and each epoch's losses; ``progress(epoch, train, val)`` after each epoch.

    With a :class:`Checkpoint`, the state after each epoch is kept in it and a fit of the same inputs resumes from
    it (on as many threads as before: to the weights an uninterrupted fit ends with)."""
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        predictor = ProgramPredictor(depth, states[0].shape[1], recipe.d_model, recipe.heads, recipe.blocks)
        order = torch.Generator().manual_seed(recipe.seed)
        optimizer = torch.optim.AdamW(predictor.parameters(), lr=recipe.lr, eps=recipe.eps,
                                      weight_decay=recipe.weight_decay)
        steps_per_epoch = math.ceil(len(train_examples) / recipe.batch)
        total = max(1, recipe.epochs * steps_per_epoch)
        warmup = min(recipe.warmup, total - 1)

        def factor(step: int) -> float:
            if warmup > 0 and step < warmup:
                return step / warmup
            progress_ = min(max((step - warmup) / max(1, total - warmup), 0.0), 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * progress_))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        best, best_val, history = None, math.inf, []
        if checkpoint is not None and checkpoint.exists():
            best, best_val, history = checkpoint.restore(predictor, optimizer, schedule, order)
            if progress is not None:  # the kept epochs, shown again
                for h in history:
                    progress(h["epoch"], h["train_loss"], h["val_loss"])
        for epoch in range(len(history), recipe.epochs):
            predictor.train()
            losses = []
            for idx in torch.randperm(len(train_examples), generator=order).split(recipe.batch):
                optimizer.zero_grad()
                loss = batch_loss(predictor, states, [train_examples[i] for i in idx.tolist()])
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
            val = validation_loss(predictor, states, val_examples, recipe.batch)
            history.append({"epoch": epoch, "train_loss": sum(losses) / max(len(losses), 1), "val_loss": val})
            if not val_examples or val < best_val:
                best_val, best = val, {k: v.detach().clone() for k, v in predictor.state_dict().items()}
            if checkpoint is not None:
                checkpoint.save(predictor, optimizer, schedule, order, best, best_val, history)
            if progress is not None:
                progress(epoch, history[-1]["train_loss"], val)
        predictor.load_state_dict(best)
    predictor.eval()
    return predictor, history


def fingerprint(states: Sequence[torch.Tensor], train_examples: Sequence[dict], val_examples: Sequence[dict],
                depth: int, recipe: ProgramRecipe, source: dict) -> str:
    """A digest of what decides a fit: its examples, recipe and depth, its ``source`` (the runs' model weights and
    the question encoder) and the shapes of its question states; not the states' last bits, which the thread count
    that encoded them decides, so that the same command resumes on another thread count."""
    return hashlib.sha256(json.dumps([recipe.__dict__, depth, list(train_examples), list(val_examples), source,
                                      [list(s.shape) for s in states]], sort_keys=True).encode()).hexdigest()


class Checkpoint:
    """A fit's state after its last whole epoch, in one file written whole (:func:`~cola.storage.save_tensors_atomic`)
    in a folder: ``state.safetensors``, its tensors the predictor, its best epoch's weights, the optimizer's moments
    and the random generators, its header's ``state`` the JSON of the epochs' losses, the best validation loss, the
    optimizer's and the schedule's counters and the inputs' :func:`fingerprint`."""

    FILE = "state.safetensors"

    def __init__(self, folder: Path, digest: str) -> None:
        self.folder, self.digest = Path(folder), digest

    def _state(self) -> dict | None:
        from safetensors import safe_open

        if not (self.folder / self.FILE).is_file():
            return None
        with safe_open(self.folder / self.FILE, "pt") as f:
            return json.loads((f.metadata() or {}).get("state", "{}"))

    def epochs(self) -> int:
        """The whole epochs the folder holds (0 without a checkpoint)."""
        return len((self._state() or {}).get("history", ()))

    def exists(self) -> bool:
        """Whether the folder holds a checkpoint of these inputs (one of other inputs is set aside, with a line)."""
        state = self._state()
        if state is None:
            return False
        if state.get("fingerprint") == self.digest:
            return True
        warnings.warn(f"{self.folder} holds a fit of other inputs; fitting from the start", stacklevel=2)
        return False

    def save(self, predictor: ProgramPredictor, optimizer: torch.optim.Optimizer,
             schedule: torch.optim.lr_scheduler.LambdaLR, order: torch.Generator, best: dict, best_val: float,
             history: list[dict]) -> None:
        """Keep the state after the last epoch of ``history``."""
        from ..storage import save_tensors_atomic

        opt = optimizer.state_dict()
        tensors = {**{f"predictor.{k}": v for k, v in predictor.state_dict().items()},
                   **{f"best.{k}": v for k, v in best.items()},
                   **{f"optimizer.{i}.{k}": v for i, moments in opt["state"].items() for k, v in moments.items()},
                   "rng.order": order.get_state(), "rng.torch": torch.get_rng_state()}
        schedule_state = {k: v for k, v in schedule.state_dict().items() if k != "lr_lambdas"}
        state = {"fingerprint": self.digest, "history": history, "best_val": best_val,
                 "param_groups": opt["param_groups"], "schedule": schedule_state}
        self.folder.mkdir(parents=True, exist_ok=True)
        save_tensors_atomic(self.folder / self.FILE, {k: v.detach().contiguous() for k, v in tensors.items()},
                            {"state": json.dumps(state)})

    def restore(self, predictor: ProgramPredictor, optimizer: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LambdaLR, order: torch.Generator
                ) -> tuple[dict, float, list[dict]]:
        """Put the kept state back; the best epoch's weights, its validation loss and the epochs' losses."""
        from safetensors.torch import load_file

        state, tensors = self._state(), load_file(self.folder / self.FILE)
        predictor.load_state_dict({k.removeprefix("predictor."): v for k, v in tensors.items()
                                   if k.startswith("predictor.")})
        moments: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                moments.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": moments, "param_groups": state["param_groups"]})
        schedule.load_state_dict({**state["schedule"], "lr_lambdas": [None] * len(optimizer.param_groups)})
        order.set_state(tensors["rng.order"])
        torch.set_rng_state(tensors["rng.torch"])
        best = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
        return best, state["best_val"], state["history"]


def fit_kept(out: str | Path, epochs: int) -> str:
    """What a fit into ``out`` that was stopped kept, for the command's last line."""
    folder = Path(out) / CHECKPOINT
    done = Checkpoint(folder, "").epochs()
    if not done:
        return "no epoch was finished; nothing was written"
    return f"{done} of {epochs} epochs are kept in {folder}; run the same command again to resume"


@torch.no_grad()
def validation_loss(predictor: ProgramPredictor, states: Sequence[torch.Tensor], examples: Sequence[dict],
                    batch: int) -> float:
    """The mean over batches (in order) of the weighted batch loss, dropout off (nan without examples)."""
    if not examples:
        return math.nan
    predictor.eval()
    losses = [batch_loss(predictor, states, examples[i : i + batch]).item() for i in range(0, len(examples), batch)]
    return sum(losses) / len(losses)


def decoded_rates(programs: Sequence[Sequence[Sequence]], depth: int) -> dict:
    """The rates of ``programs`` (each input's decoded programs): per layer, how often a segment starts there and the
    ops it takes when one does (a layer where none starts takes the ops' rates over all starts), and the mean length
    of their chains: what a random control draws at, and what a static chain is matched to."""
    flat = [program for per_input in programs for program in per_input]
    starts, ops = [0] * depth, [[0] * len(OPS) for _ in range(depth)]
    for program in flat:
        for first, _, op in program:
            starts[first] += 1
            ops[first][op] += 1
    overall = [sum(row[op] for row in ops) for op in range(len(OPS))]
    lengths = [len(program_chain(p) or ()) for p in flat]
    return {"boundary": [0.0] + [starts[i] / len(flat) for i in range(1, depth)],
            "ops": [[c / sum(row) for c in row] if sum(row) else [c / sum(overall) for c in overall] for row in ops],
            "mean_length": sum(lengths) / len(lengths), "programs": len(flat)}


def fit_from_runs(runs: Sequence[str], encoder: str = "target", recipe: ProgramRecipe = ProgramRecipe(),
                  data: str | None = None, device: str | None = None, dtype: str | None = None,
                  progress: bool = True, out: str | Path | None = None) -> tuple[ProgramRouter, dict]:
    """A predictor fitted on the right programs of search ``runs`` (train split; one model), with its question
    ``encoder`` (``target`` or a hub id or folder): the router and what the fit saw (counts, losses, the rates of its
    top programs on the held-out samples). With ``out`` (the folder the router will be saved in), each epoch's state
    is kept in ``out/fit.partial`` and an interrupted fit resumes from its last whole epoch; saving the router
    removes it."""
    from tqdm import tqdm

    from ..core.hashes import weights_hash
    from ..core.loading import load_model
    from ..evaluation.evaluator import EvalConfig, Evaluator
    from ..evaluation.provenance import fit_environment
    from ..search.run import run_samples
    from ..tasks import get_task
    from ..storage import read_config, read_records

    configs = [read_config(run) for run in runs]
    first = configs[0]
    for run, config in zip(runs, configs):
        if config.get("split") == "test":
            raise RouterError(f"{run} searched the test split; fit on train runs (report on test)")
        if (config["model"], config["weights"], config["depth"]) != (first["model"], first["weights"],
                                                                     first["depth"]):
            raise RouterError(f"{run} searched another model than {runs[0]}; fit on runs of one model")
    depth = first["depth"]
    records, samples = [], []
    for run, config in zip(runs, configs):
        by_id = {s.id: s for s in run_samples(config, data)}
        for record in read_records(run):
            records.append(record)
            samples.append(by_id[record["id"]])
    examples, counts = supervision(records, depth, recipe)
    kept = list(dict.fromkeys(e["id"] for e in examples))
    if len(kept) < 2:
        raise RouterError(f"{len(kept)} sample(s) kept from {', '.join(map(str, runs))}: too few to fit a predictor")
    n_val = max(1, round(len(kept) * recipe.val_share)) if recipe.val_share > 0 else 0
    val_ids = set(kept[len(kept) - n_val:])
    cm = load_model(first["model"], device=device, dtype=dtype or first.get("dtype"))  # the dtype they searched in
    if weights_hash(cm) != first["weights"]:
        raise RouterError(f"{first['model']} here has other weights than the runs searched")
    question_encoder = QuestionEncoder(encoder, cm, recipe.max_tokens)
    evaluator = Evaluator(cm, get_task(first["task"], first.get("lm_eval_include")), EvalConfig(
        mode=first["mode"], chat=first["chat"], score_style=first["score_style"]))
    by_id = {s.id: s for s in samples}
    index = {sample_id: i for i, sample_id in enumerate(kept)}
    texts = {i: input_text(evaluator, by_id[i]) for i in kept}
    states = question_encoder.encode([texts[i] for i in kept], progress)
    for e in examples:
        e["index"] = index[e["id"]]
    train_examples = [e for e in examples if e["id"] not in val_ids]
    val_examples = [e for e in examples if e["id"] in val_ids]
    checkpoint = None if out is None else Checkpoint(Path(out) / CHECKPOINT, fingerprint(
        states, train_examples, val_examples, depth, recipe, {"weights": first["weights"], "encoder": encoder}))
    with tqdm(total=recipe.epochs, desc="training", disable=not progress) as bar:  # closed before a stop's line
        predictor, history = train(states, train_examples, val_examples, depth, recipe, lambda epoch, t, v: (
            bar.update(1), bar.set_postfix(train=f"{t:.3f}", val=f"{v:.3f}")), checkpoint)
    config = {"model": cm.name, "weights": first["weights"], "depth": depth, "dtype": str(cm.dtype).removeprefix(
        "torch."), "task": "+".join(dict.fromkeys(c["task"] for c in configs)), "runs": [str(r) for r in runs],
        "control": first.get("control"), "routing": "trained", "encoder": encoder, "max_tokens": recipe.max_tokens,
        "predictor": {"q_dim": question_encoder.dim, "d_model": recipe.d_model, "heads": recipe.heads,
                      "blocks": recipe.blocks},
        "decoding": {"threshold": recipe.threshold, "max_pack": recipe.max_pack, "beam": recipe.beam,
                     "top_ops": recipe.top_ops},
        "recipe": recipe.__dict__, "counts": {**counts, "train_samples": len(kept) - n_val, "val_samples": n_val,
                                              "train_examples": len(train_examples),
                                              "val_examples": len(val_examples)},
        "history": history, "val_loss": min((h["val_loss"] for h in history), default=math.nan),
        "train_ids": [i for i in kept if i not in val_ids], "val_ids": sorted(val_ids, key=index.get),
        "menu": menu(records, depth, recipe), "environment": fit_environment(cm)}
    router = ProgramRouter(config, predictor, question_encoder)
    held_out = router.decode_states([states[index[i]] for i in kept if i in val_ids], recipe.beam)
    config["val_rates"] = decoded_rates([p[:1] for p in held_out], depth)  # the top programs: pass@1's
    config["val_rates_beam"] = decoded_rates(held_out, depth)  # the whole beam: a best-of-k's
    return router, config


def menu(records: Sequence[dict], depth: int, recipe: ProgramRecipe = ProgramRecipe(), size: int = 5) -> list[str]:
    """The ``size`` programs right on the most training samples (each sample counted once; ties: the shorter, then
    the smaller): the fixed-menu control's programs, the same for every input."""
    right = Counter(str(c) for record in records for c in right_programs(record)
                    if parse_program(c, depth, recipe.max_pack) is not None)
    return sorted(right, key=lambda c: (-right[c], len(Chain.parse(c)), Chain.parse(c).layers))[:size]


def program_control(folder: str, kind: str, with_full: bool = False, seed: int = 0) -> ProgramRouter:
    """A control of the trained predictor in ``folder`` that reads nothing: ``random`` (programs drawn at the rates of
    its top programs on its held-out samples, seeded per input; ``with_full``: full depth first, then programs drawn
    at the rates of its whole beam there) or ``menu`` (the programs right on the most training samples, the same for
    every input)."""
    trained = ProgramRouter.load(folder)
    if trained.routing != "trained":
        raise RouterError(f"{folder} is a control already; make controls of a trained predictor")
    about = {k: trained.config[k] for k in ("model", "weights", "depth", "dtype", "task", "decoding", "control")
             if k in trained.config}
    config = {**about, "control_of": str(folder), "routing": kind, "seed": seed}
    if kind == "random":
        rates = trained.config["val_rates_beam" if with_full else "val_rates"]
        config.update(rates={k: rates[k] for k in ("boundary", "ops")}, with_full=with_full)
    elif kind == "menu":
        config["menu"] = trained.config["menu"]
    else:
        raise RouterError(f"unknown program control {kind!r}; use random or menu")
    return ProgramRouter(config)

