"""The search space: a node is a chain. The study's (``all``, ``skip``, ``repeat``): an action skips a block of k
positions or repeats a block of k positions r more times (k, r in 1..4 by default), anywhere in the chain, within
length bounds. Dr.LLM's (``drllm``): the layers stay in order, each run 0, 1 or 2 times; an action skips a block of up
to ``max_k`` consecutive layers (2 in its preset) or repeats one layer that runs once."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.chain import Chain
from ..errors import UsageError

ACTION_SETS = ("all", "skip", "repeat", "drllm", "polar")

# PoLar's length bounds of the depths its code knows (mcts_discovery/run_mcts.py, MODEL_DEPTH_PRESETS)
POLAR_BOUNDS = {24: (16, 28), 28: (16, 32), 36: (24, 44), 48: (36, 54)}


def polar_bounds(depth: int) -> tuple[int, int]:
    """PoLar's length bounds for a model of ``depth`` layers: its own for the depths its code knows; for any other
    depth, those of its 28-layer models (Llama-3.2-3B, the family nearest the embedded Llama) scaled to the depth:
    ``round(depth * 16/28)`` to ``round(depth * 32/28)`` (30 layers: 17..34; 18 layers: 10..21)."""
    if depth in POLAR_BOUNDS:
        return POLAR_BOUNDS[depth]
    return max(1, round(depth * 16 / 28)), round(depth * 32 / 28)


@dataclass(frozen=True)
class SearchSpace:
    """Which edits are allowed and how long a chain may be (defaults: depth/2 to 2*depth)."""

    depth: int
    actions: str = "all"
    max_k: int = 4
    max_r: int = 4
    min_len: int | None = None
    max_len: int | None = None

    def __post_init__(self) -> None:
        if self.actions not in ACTION_SETS:
            raise UsageError(f"actions must be one of {ACTION_SETS}, not {self.actions!r}")

    @property
    def bounds(self) -> tuple[int, int]:
        low, high = polar_bounds(self.depth) if self.actions == "polar" else (self.depth // 2, 2 * self.depth)
        return (low if self.min_len is None else self.min_len), (high if self.max_len is None else self.max_len)

    def children(self, chain: Chain, at_root: bool = False) -> list[tuple[str, Chain]]:
        """Every distinct chain one action away, with the action's name (``skip p k`` / ``repeat p k r``; in the
        ``drllm`` space ``skip LAYER k`` / ``repeat LAYER``), in a fixed order; the first action reaching a chain names
        it. ``at_root``: the chain is the search's root (PoLar's space edits blocks there only)."""
        low, high = self.bounds
        if self.actions == "drllm":
            return self._layer_children(chain, low, high)
        if self.actions == "polar":
            return self._polar_children(chain, low, high, at_root)
        seen: dict[Chain, str] = {}
        n = len(chain)
        for k in range(1, self.max_k + 1):
            for p in range(0, n - k + 1):
                if self.actions in ("all", "skip") and low <= n - k:
                    seen.setdefault(chain.skip(p, k), f"skip {p} {k}")
                if self.actions in ("all", "repeat"):
                    for r in range(1, self.max_r + 1):
                        if n + k * r <= high:
                            seen.setdefault(chain.repeat(p, k, r), f"repeat {p} {k} {r}")
        seen.pop(chain, None)
        return [(action, child) for child, action in seen.items()]

    def _layer_children(self, chain: Chain, low: int, high: int) -> list[tuple[str, Chain]]:
        """Dr.LLM's edits of a path (each layer 0, 1 or 2 times, in order): skip layers l .. l+k-1 (k <= max_k, each
        run at least once now), or run a layer that runs once twice."""
        counts = [0] * self.depth
        for layer in chain:
            counts[layer] += 1
        if any(c > 2 for c in counts) or list(chain) != sorted(chain):
            raise UsageError(f"chain {chain} is not a Dr.LLM path (layers in order, each at most twice)")

        def path(new: list[int]) -> Chain:
            return Chain(tuple(layer for layer, c in enumerate(new) for _ in range(c)))

        out = []
        for k in range(1, self.max_k + 1):
            for layer in range(self.depth - k + 1):
                block = counts[layer : layer + k]
                if all(block) and low <= len(chain) - sum(block):
                    out.append((f"skip {layer} {k}", path(counts[:layer] + [0] * k + counts[layer + k :])))
        if len(chain) + 1 <= high:
            out += [(f"repeat {layer}", path(counts[:layer] + [2] + counts[layer + 1 :]))
                    for layer in range(self.depth) if counts[layer] == 1]
        return out


    def _polar_children(self, chain: Chain, low: int, high: int, at_root: bool) -> list[tuple[str, Chain]]:
        """PoLar's candidates in its code's order: for each position p, drop the block of k positions at p (k = 1;
        at the root 1 to max_k), then double it in place (k = 1 while no layer runs more than twice; at the root also
        2 to max_k); each within the length bounds."""
        seen: dict[Chain, str] = {}
        n, blocks = len(chain), range(1, (self.max_k if at_root else 1) + 1)
        for p in range(n):
            for k in blocks:
                if p + k <= n and max(low, 1) <= n - k <= high:
                    seen.setdefault(chain.skip(p, k), f"skip {p} {k}")
            for k in blocks:
                if p + k <= n and low <= n + k <= high:
                    child = chain.repeat(p, k)
                    if k > 1 or child.layers.count(chain[p]) <= 2:
                        seen.setdefault(child, f"repeat {p} {k} 1")
        seen.pop(chain, None)
        return [(action, child) for child, action in seen.items()]


def drllm_labels(chain: Chain, depth: int) -> list[int]:
    """Dr.LLM's per-layer labels of a path: how often each layer runs in it (0 skip, 1 execute, 2 repeat)."""
    counts = [0] * depth
    for layer in chain:
        counts[layer] += 1
    return counts
