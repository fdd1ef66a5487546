"""The search space of the study: a node is a chain; an action skips a block of k positions or repeats a block of k
positions r more times (k, r in 1..4 by default), anywhere in the chain, within length bounds."""

from __future__ import annotations

from dataclasses import dataclass

from ..chain import Chain
from ..errors import UsageError

ACTION_SETS = ("all", "skip", "repeat")


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
        low = self.depth // 2 if self.min_len is None else self.min_len
        high = 2 * self.depth if self.max_len is None else self.max_len
        return low, high

    def children(self, chain: Chain) -> list[tuple[str, Chain]]:
        """Every distinct chain one action away, with the action's name (``skip p k`` / ``repeat p k r``), in a
        fixed order; the first action reaching a chain names it."""
        low, high = self.bounds
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
