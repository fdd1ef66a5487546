"""PoLar's offline MCTS (Li, Li & Zhou, ICML 2026; ``mcts_discovery/run_mcts.py`` of tianyi-lab/PoLar at c86d76e),
written anew as a coroutine with :func:`cola.search.mcts.search_steps`'s interface, for ``cola search --preset polar``.

Per simulation:

- **Selection.** From the root, while the node has children not yet fully explored: with probability ``epsilon``
  one of them at random, else the one of highest stored UCB (the first on a tie; a child not yet backed up has
  UCB -inf).
- **Expansion.** A node not fully explored gets every candidate of its path (:meth:`SearchSpace.children` of the
  ``polar`` space; block edits at the root only) that no node of the tree holds yet, as children; one of its children,
  drawn at random from them sorted by path, is the node evaluated. A node with no candidate left is fully explored.
- **Evaluation.** The node's chain, unless it was evaluated before; the reward is the 0/1 verdict.
- **Backup.** Up to the root, each node's visits and total grow by the reward, and its UCB is stored as
  ``total/visits - lam * len(path)/depth + c * sqrt(ln(root visits + 1) / visits)`` (PoLar: lambda 5, c sqrt 2). A
  node whose children are all fully explored becomes fully explored.

Exactly ``sims`` simulations run, with no early stop; a simulation that evaluates nothing backs up the last reward
evaluated, as the released code does. Every chain evaluated is kept with its verdict: the right ones are PoLar's
supervision (``final_valid_transitions``), the others its ``final_invalid_transitions``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..core.chain import Chain
from .space import SearchSpace

if TYPE_CHECKING:
    from .mcts import Evaluation, MCTSConfig


@dataclass(eq=False)
class _Node:
    chain: Chain
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)
    visits: int = 0
    total: float = 0.0
    ucb: float = -math.inf
    explored: bool = False  # fully explored: no candidate left below it
    evaluation: Evaluation | None = None


def polar_steps(root: Chain, space: SearchSpace, config: MCTSConfig,
                rng: random.Random) -> Generator[Chain, Evaluation, tuple[list[Evaluation], int]]:
    """PoLar's search from ``root`` as a coroutine: yields each chain to evaluate, is sent its
    :class:`~cola.search.mcts.Evaluation`, returns every evaluation (root first) and the simulations run
    (``config.sims``), which :func:`~cola.search.mcts.search_steps` returns as its result."""
    tree = _Node(root)
    tree.evaluation = yield root
    order, reward = [tree.evaluation], tree.evaluation.reward
    held = {root}  # PoLar's visited_paths: a chain becomes a node once in the whole tree
    for _ in range(config.sims):
        node = tree
        while node.children:
            open_children = [child for child in node.children if not child.explored]
            if not open_children:
                break
            if rng.random() < config.epsilon:
                node = rng.choice(open_children)
            else:
                node = max(open_children, key=lambda child: child.ucb)
        if not node.explored:
            for _, chain in space.children(node.chain, at_root=node is tree):
                if chain not in held:
                    held.add(chain)
                    node.children.append(_Node(chain, node))
            if node.children:
                node = rng.choice(sorted(node.children, key=lambda child: child.chain.layers))
            else:
                node.explored = True
        if node.evaluation is None:
            node.evaluation = yield node.chain
            order.append(node.evaluation)
            reward = node.evaluation.reward
        _backup(node, tree, reward, space.depth, config)
    return order, config.sims


def _backup(node: _Node | None, root: _Node, reward: float, depth: int, config: MCTSConfig) -> None:
    while node is not None:
        node.visits += 1
        node.total += reward
        node.ucb = (node.total / node.visits - config.lam * len(node.chain) / depth
                    + config.c * math.sqrt(math.log(root.visits + 1) / node.visits))
        if node.children and all(child.explored for child in node.children):
            node.explored = True
        node = node.parent
