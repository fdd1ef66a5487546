"""Static depth by block influence (ShortGPT): how much each layer changes the hidden states it is given.

BI(layer) = 1 - mean over tokens of cos(hidden in, hidden out), measured on calibration prompts (a train split) run
through the model's own chain. Layers of least influence are the first to drop: the chain that drops the ``m`` least
influential layers is one label-free chain for a whole task, to be evaluated on test like any other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

from ..core.chain import Chain
from ..core.executor import Row, Segment, embed, new_cache, run_segments
from ..core.models import ColaModel
from ..errors import UsageError
from ..storage import read_json, write_atomic


@torch.inference_mode()
def block_influence(cm: ColaModel, prompts: Iterable[torch.Tensor]) -> list[float]:
    """BI of every layer (in layer order) over the tokens of ``prompts``, each (1, length) token ids."""
    chain = Chain.full(cm.depth)
    sums = torch.zeros(cm.depth, dtype=torch.float64)
    tokens = 0
    for ids in prompts:
        outputs: dict[int, torch.Tensor] = {}
        seg = Segment(Row(chain, new_cache(cm, chain)), embed(cm, ids),
                      record=lambda p, hidden, key, value: outputs.__setitem__(p, hidden))
        before = seg.hidden
        run_segments(cm, [seg])
        for p in range(cm.depth):
            cosine = torch.nn.functional.cosine_similarity(before[0].double(), outputs[p][0].double(), dim=-1)
            sums[p] += cosine.sum()
            before = outputs[p]
        tokens += ids.shape[1]
    if not tokens:
        raise UsageError("block influence needs at least one calibration prompt")
    return (1 - sums / tokens).tolist()


def least_influential(influence: list[float]) -> list[int]:
    """The layers, least influential first (ties: the later layer first): the order in which pruning drops them."""
    return sorted(range(len(influence)), key=lambda i: (influence[i], -i))


def most_dropped(depth: int) -> int:
    """How many layers the static chains drop at most: a quarter of the depth, and at least one wherever the model
    has a layer to spare (a model of 2 or 3 layers keeps the other ones; a 1-layer model has none to drop)."""
    return min(depth - 1, max(1, depth // 4))


def pruned_chains(influence: list[float], most: int) -> dict[int, Chain]:
    """For m = 1 .. ``most``: the model's order without its m least influential layers (:func:`least_influential`)."""
    order = least_influential(influence)
    return {m: Chain(tuple(i for i in range(len(influence)) if i not in set(order[:m]))) for m in range(1, most + 1)}


def save_influence(path: str | Path, influence: list[float], chains: dict[int, Chain], **about: object) -> Path:
    """Write a ``cola prune --out`` file: ``about`` (model, task, split, mode, n, seed), the block influence of every
    layer and the chains without the m least influential layers, as JSON (read back by :func:`load_pruned`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**about, "block_influence": influence, "chains": {str(m): str(c) for m, c in chains.items()}}
    write_atomic(path, json.dumps(data, indent=2))
    return path


def load_pruned(path: str | Path) -> dict[int, str]:
    """The chains of a ``cola prune --out`` file (:func:`save_influence`): m -> the chain without the m least
    influential layers (notation), m ascending."""
    data = read_json(path)
    if "block_influence" not in data or "chains" not in data:
        raise UsageError(f"{path}: not a `cola prune --out` file (it has no block_influence and chains)")
    return {int(m): data["chains"][m] for m in sorted(data["chains"], key=int)}


def prune(model: str, selection, config, out: str | Path | None = None, device: str | None = None,
          dtype: str | None = None, allow_untested: bool = False, progress: bool = True
          ) -> tuple[ColaModel, list[float], dict[int, Chain]]:
    """``cola prune``: the block influence of every layer of ``model`` on the prompts of ``selection`` (a train split)
    asked as ``config`` says, and the chains without the m least influential layers for m up to
    :func:`most_dropped`; written to ``out`` when given. Returns the model, the influences and the chains."""
    from tqdm import tqdm

    from ..core.loading import load_model
    from ..evaluation.evaluator import Evaluator

    samples = selection.load()
    cm = load_model(model, device=device, dtype=dtype, allow_untested=allow_untested)
    evaluator = Evaluator(cm, selection.get_task(), config)
    evaluator.check(samples)
    influence = block_influence(cm, (evaluator.prompt_ids(s) for s in tqdm(
        samples, desc="calibration prompts", unit="prompt", disable=not progress)))
    chains = pruned_chains(influence, most_dropped(cm.depth))
    if out is not None:
        save_influence(out, influence, chains, model=cm.name, task=selection.task,
                       split=selection.data_file or selection.split_name, mode=config.mode, n=len(samples),
                       seed=selection.seed)
    return cm, influence, chains
