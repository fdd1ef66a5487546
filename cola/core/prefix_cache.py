"""Work shared between the candidate chains of one search, done once.

Candidates in a search tree differ from chains already run by one edit, so they share a chain prefix with them, and
the prompt's hidden states and KV entries after a shared prefix are the same. :class:`PrefixCache` keeps, for one
prompt, a trie over chain prefixes: the node of prefix ``chain[:p+1]`` holds the prompt's hidden states after
position ``p`` and the keys and values that position's layer wrote to its cache slot. A new candidate computes only
the positions after the longest prefix the trie holds. Inputs that continue the prompt in its cache (score mode's
answer options, one padded batch after the shared context) are kept the same way, in the nodes of the prompt's
prefixes, so the options of a new candidate also run only after the longest prefix they ran on. Memory is bounded:
least recently used leaves are evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass(eq=False)
class PrefixNode:
    """Chain position ``depth - 1`` of a cached prefix: layer index, hidden states after it, its slot's K and V."""

    layer: int
    hidden: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    parent: PrefixNode | None
    children: dict[int, PrefixNode] = field(default_factory=dict)
    after: dict[bytes, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # continuations'

    @property
    def nbytes(self) -> int:
        return _nbytes((self.hidden, self.key, self.value)) + sum(_nbytes(x) for x in self.after.values())


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def continuation_key(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> bytes:
    """What identifies inputs that continue a cached prompt: their token ids, shape and padding mask."""
    parts = [str(tuple(input_ids.shape)).encode(), input_ids.cpu().numpy().tobytes()]
    if attention_mask is not None:
        parts.append(attention_mask.cpu().numpy().tobytes())
    return b"|".join(parts)


class PrefixCache:
    """Hidden states and KV entries of one prompt, keyed by chain prefix, within ``max_bytes``.

    ``layers_computed`` and ``layers_requested`` count chain positions run on the prompt versus asked for, so the
    share of prefill work saved can be reported.
    """

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.tokens: torch.Tensor | None = None  # the prompt, bound on first use
        self.max_bytes = max_bytes
        self.roots: dict[int, PrefixNode] = {}
        self.lru: OrderedDict[int, PrefixNode] = OrderedDict()  # id(node) -> node, oldest first
        self.nbytes = 0
        self.layers_computed = 0
        self.layers_requested = 0

    def matches(self, tokens: torch.Tensor) -> bool:
        """True when ``tokens`` is the prompt this cache holds (a new cache takes the first prompt it is used on)."""
        if self.tokens is None:
            self.tokens = tokens.clone()
        return self.tokens.shape == tokens.shape and bool(torch.equal(self.tokens, tokens))

    def _walk(self, layers: tuple[int, ...]) -> list[PrefixNode]:
        """The cached nodes of the longest cached prefix of ``layers``."""
        path: list[PrefixNode] = []
        children = self.roots
        for layer in layers:
            node = children.get(layer)
            if node is None:
                break
            path.append(node)
            children = node.children
        return path

    def lookup(self, layers: tuple[int, ...]) -> list[PrefixNode]:
        """The cached nodes of the longest cached prefix of ``layers`` (marked as recently used)."""
        path = self._walk(layers)
        for node in path:
            self.lru.move_to_end(id(node))
        self.layers_requested += len(layers)
        self.layers_computed += len(layers) - len(path)
        return path

    def resume(self, layers: tuple[int, ...], input_ids: torch.Tensor, cache) -> tuple[
        int, torch.Tensor | None, Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
    ]:
        """Start running prompt ``input_ids`` (1, length) through the chain ``layers``: fill ``cache``'s first slots
        from the longest cached prefix; returns how many positions that is, the hidden states after them (None when
        nothing is cached), and ``record(p, hidden, key, value)``, which caches each position computed next."""
        if input_ids.shape[0] != 1:
            raise ValueError("a prefix cache holds one unpadded prompt")
        if not self.matches(input_ids):
            raise ValueError("this prefix cache belongs to another prompt")
        path = self.lookup(layers)
        for p, node in enumerate(path):
            cache.update(node.key, node.value, p)
        parent = [path[-1] if path else None]

        def record(p: int, hidden: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
            if p == 0 or parent[0] is not None:  # a node needs its whole path cached
                parent[0] = self.add(parent[0], layers[p], hidden, key, value)

        return len(path), (path[-1].hidden if path else None), record

    def resume_after(self, layers: tuple[int, ...], input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     cache) -> tuple[int, torch.Tensor | None, Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor],
                                                                        None]]:
        """:meth:`resume` for inputs that continue this prompt (a batch, ``attention_mask`` its padding) in ``cache``,
        which holds the prompt's slots of the chain ``layers``: the continuation's keys and values of the longest prefix
        it ran on are appended to those slots; returns that prefix's length, the hidden states after it (None: none
        cached) and ``record``, which keeps each position computed next in the prompt's node of that prefix (while the
        node is cached: a continuation is kept only where the prompt is)."""
        tag = continuation_key(input_ids, attention_mask)
        nodes = self._walk(layers)
        start = 0
        while start < len(nodes) and tag in nodes[start].after:
            _, key, value = nodes[start].after[tag]
            cache.update(key, value, start)
            self.lru.move_to_end(id(nodes[start]))
            start += 1

        def record(p: int, hidden: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
            node = nodes[p] if p < len(nodes) else None
            if node is None or tag in node.after:
                return
            size = _nbytes((hidden, key, value))
            self._evict(self.max_bytes - size, keep=node)
            if id(node) in self.lru and self.nbytes + size <= self.max_bytes:
                node.after[tag] = (hidden, key, value)
                self.nbytes += size

        return start, (nodes[start - 1].after[tag][0] if start else None), record

    def add(self, parent: PrefixNode | None, layer: int, hidden, key, value) -> PrefixNode | None:
        """Cache the next position after ``parent``; returns the node, or None when it does not fit or ``parent``
        was evicted meanwhile. Chains packed in one call may compute the same prefix side by side (none was cached
        when they looked): the first to add a position keeps it, the others get its node."""
        if parent is not None and id(parent) not in self.lru:
            return None
        siblings = parent.children if parent is not None else self.roots
        if layer in siblings:
            self.lru.move_to_end(id(siblings[layer]))
            return siblings[layer]
        node = PrefixNode(layer, hidden, key, value, parent)
        self._evict(self.max_bytes - node.nbytes, keep=parent)
        if self.nbytes + node.nbytes > self.max_bytes:  # only the path being extended is left: stop caching it
            return None
        siblings[layer] = node
        self.lru[id(node)] = node
        self.nbytes += node.nbytes
        return node

    def _evict(self, budget: int, keep: PrefixNode | None) -> None:
        """Drop least recently used leaves (never ``keep``) until the cache holds at most ``budget`` bytes."""
        while self.nbytes > budget:
            victim = next((n for n in self.lru.values() if not n.children and n is not keep), None)
            if victim is None:
                return
            siblings = victim.parent.children if victim.parent is not None else self.roots
            del siblings[victim.layer]
            del self.lru[id(victim)]
            self.nbytes -= victim.nbytes

    @property
    def computed_fraction(self) -> float:
        """Share of requested prompt layer-applications actually computed."""
        return self.layers_computed / max(self.layers_requested, 1)


def layers_computed(chains: Sequence[Sequence[int]]) -> int:
    """Chain positions a :class:`PrefixCache` computes when ``chains`` are asked in this order on one prompt (and
    nothing is evicted): each chain's positions after the longest prefix an earlier chain ran."""
    seen: set[tuple[int, ...]] = set()
    total = 0
    for chain in chains:
        layers = tuple(chain)
        shared = 0
        while shared < len(layers) and layers[: shared + 1] in seen:
            shared += 1
        total += len(layers) - shared
        seen.update(layers[:p] for p in range(shared + 1, len(layers) + 1))
    return total
