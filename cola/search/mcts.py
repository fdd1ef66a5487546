"""Monte Carlo Tree Search over chains of layers, as the study runs it, for one sample.

Selection follows UCB on the mean reward minus a length penalty:
    Q(child)/N(child) - lambda * len(child)/depth + c * sqrt(ln N(parent) / N(child)),
except that with probability ``epsilon`` (0.1) an unexplored child is taken at random instead. Children are added
lazily by progressive widening: a node visited N times holds up to ceil(N ** widening) explored children, and while
it holds fewer it expands a random unexplored one (a chain has hundreds of one-edit neighbours, more than the budget;
widening keeps the tree from being only the root's first layer, or only one deep line). A newly reached chain is scored by the task's grader (no rollout) and the
reward is backed up the path. Each distinct chain is evaluated once per sample; the budget counts evaluations.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field

from ..core.chain import Chain
from .space import SearchSpace


@dataclass
class Evaluation:
    """What one chain did on the sample."""

    chain: Chain
    answer: str | None
    correct: bool
    reward: float


@dataclass(frozen=True)
class MCTSConfig:
    """The study's protocol by default: 200 evaluations, lambda 5, c sqrt(2), epsilon 0.1; widening 0.5. Dr.LLM's
    early stops are off by default: ``stop_on_fix`` ends a search of a sample the full chain gets wrong at its first
    right chain; ``stop_shorter_by=d`` ends a search at the first right chain at least d layers shorter than depth."""

    sims: int = 200
    lam: float = 5.0
    c: float = math.sqrt(2)
    epsilon: float = 0.1
    widening: float = 0.5
    stop_on_fix: bool = False
    stop_shorter_by: int = 0

    def to_config(self) -> dict:
        """The settings as a run's config records them (the early stops only when set, so that runs made before
        they existed resume)."""
        out = asdict(self)
        for key, default in (("stop_on_fix", False), ("stop_shorter_by", 0)):
            if out[key] == default:
                del out[key]
        return out

    def stops(self, root: Evaluation, evaluation: Evaluation, depth: int) -> bool:
        """Whether ``evaluation`` ends the search (its early stops)."""
        if not evaluation.correct:
            return False
        if self.stop_on_fix and not root.correct:
            return True
        return bool(self.stop_shorter_by) and len(evaluation.chain) <= depth - self.stop_shorter_by


@dataclass
class Node:
    chain: Chain
    parent: Node | None = None
    visits: int = 0
    value: float = 0.0
    children: list[Node] = field(default_factory=list)
    untried: list[Chain] | None = None  # filled lazily from the search space, in a seeded random order


@dataclass
class SearchResult:
    """Every chain evaluated (in order, root first) and the counts of the search."""

    evaluations: list[Evaluation]
    simulations: int

    @property
    def root(self) -> Evaluation:
        return self.evaluations[0]

    def best(self) -> Evaluation:
        """Correct first, then shortest, then highest reward, then the smallest chain: deterministic."""
        return min(self.evaluations, key=lambda e: (not e.correct, len(e.chain), -e.reward, e.chain.layers))

    def shortest_correct(self) -> Evaluation | None:
        correct = [e for e in self.evaluations if e.correct]
        return min(correct, key=lambda e: (len(e.chain), e.chain.layers)) if correct else None


def mcts(
    root: Chain,
    evaluate: Callable[[Chain], Evaluation],
    space: SearchSpace,
    config: MCTSConfig,
    rng: random.Random,
    progress: Callable[[int], None] | None = None,
) -> SearchResult:
    """Search from ``root`` until ``config.sims`` chains besides the root have been evaluated (or the reachable
    space is exhausted). ``progress(n)`` is called after each evaluation but the root's."""
    steps = search_steps(root, space, config, rng)
    chain = next(steps)
    done = 0
    while True:
        evaluation = evaluate(chain)
        if progress and done:
            progress(done)
        done += 1
        try:
            chain = steps.send(evaluation)
        except StopIteration as stop:
            return stop.value


def search_steps(
    root: Chain, space: SearchSpace, config: MCTSConfig, rng: random.Random
) -> Generator[Chain, Evaluation, SearchResult]:
    """The search as a coroutine: it yields each chain to evaluate, is sent that chain's :class:`Evaluation`, and
    returns the :class:`SearchResult`. A driver can so interleave the searches of many samples and evaluate their
    chains together (:func:`cola.search.run.run_search` with ``batch > 1``); :func:`mcts` drives one alone. The
    ``polar`` space searches with PoLar's own tree (:func:`cola.search.polar.polar_steps`)."""
    if space.actions == "polar":
        from .polar import polar_steps

        return SearchResult(*(yield from polar_steps(root, space, config, rng)))
    seen: dict[Chain, Evaluation] = {root: (yield root)}
    order = [seen[root]]
    tree = Node(root)
    _backup(tree, seen[root].reward)
    simulations = 0
    max_simulations = 50 * max(config.sims, 1)  # guards against a space smaller than the budget
    stopped = False
    while len(order) - 1 < config.sims and simulations < max_simulations and not stopped:
        simulations += 1
        node = tree
        while True:
            if node.untried is None:
                options = [child for _, child in space.children(node.chain)]
                rng.shuffle(options)
                node.untried = options
            room = len(node.children) < math.ceil(max(node.visits, 1) ** config.widening)
            explore = bool(node.untried) and (room or rng.random() < config.epsilon)
            if explore:
                chain = node.untried.pop()
                child = Node(chain, parent=node)
                node.children.append(child)
                if chain not in seen:
                    seen[chain] = yield chain
                    order.append(seen[chain])
                    stopped = config.stops(order[0], seen[chain], space.depth)
                _backup(child, seen[chain].reward)
                break
            if not node.children:  # a leaf with no legal edit
                _backup(node, seen[node.chain].reward)
                break
            node = max(node.children, key=lambda ch: _ucb(ch, node.visits, space.depth, config))
    return SearchResult(order, simulations)


def _ucb(child: Node, parent_visits: int, depth: int, config: MCTSConfig) -> float:
    mean = child.value / child.visits
    explore = config.c * math.sqrt(math.log(max(parent_visits, 1)) / child.visits)
    return mean - config.lam * len(child.chain) / depth + explore


def _backup(node: Node | None, reward: float) -> None:
    while node is not None:
        node.visits += 1
        node.value += reward
        node = node.parent
