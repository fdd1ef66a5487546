"""The chain of layers: an immutable tuple of layer indices, its text notation and the paper's edits.

A chain says which decoder layers run, in which order: ``(0, 1, 2, 2, 3)`` runs layer 2 twice.
The notation is a comma list of inclusive ranges and single indices, ``0-13,13,14-29``, or ``full``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ChainError

_TOKEN = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True, order=True)
class Chain:
    """An immutable sequence of decoder-layer indices, run in order."""

    layers: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        if not self.layers:
            raise ChainError("empty chain: a chain needs at least one layer")
        if min(self.layers) < 0:
            raise ChainError(f"negative layer index {min(self.layers)} in chain")

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def _trusted(cls, layers: tuple[int, ...]) -> Chain:
        """A chain from a tuple of ints already known to be valid (edits of a valid chain): no re-checking, as the
        search builds hundreds of children per node."""
        chain = object.__new__(cls)
        object.__setattr__(chain, "layers", layers)
        return chain

    @classmethod
    def full(cls, depth: int) -> Chain:
        """The model's own order: ``0 .. depth-1``."""
        if depth < 1:
            raise ChainError(f"depth must be >= 1, got {depth}")
        return cls(tuple(range(depth)))

    @classmethod
    def parse(cls, text: str, depth: int | None = None, max_len: int | None = None) -> Chain:
        """Parse ``0-13,13,14-29`` (inclusive ranges) or ``full`` (needs ``depth``); validated when ``depth`` is
        given."""
        text = text.strip()
        if text == "full":
            if depth is None:
                raise ChainError("'full' needs the model depth")
            return cls.full(depth)
        if not text:
            raise ChainError("empty chain: a chain needs at least one layer")
        layers: list[int] = []
        for token in text.replace(" ", "").split(","):
            m = _TOKEN.match(token)
            if m is None:
                raise ChainError(f"malformed chain token {token!r} in {text!r}: expected 'i' or 'i-j'")
            start = int(m.group(1))
            stop = int(m.group(2)) if m.group(2) is not None else start
            if stop < start:
                raise ChainError(f"descending range {token!r} in {text!r}: write the layers one by one")
            layers.extend(range(start, stop + 1))
        chain = cls(tuple(layers))
        return chain if depth is None else chain.validate(depth, max_len)

    # -- notation -----------------------------------------------------------------------------------------------
    def __str__(self) -> str:
        parts: list[str] = []
        start = prev = self.layers[0]
        for i in self.layers[1:]:
            if i == prev + 1:
                prev = i
                continue
            parts.append(f"{start}-{prev}" if prev > start else str(start))
            start = prev = i
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        return ",".join(parts)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def is_full(self, depth: int) -> bool:
        """True when this is the model's own order."""
        return self.layers == tuple(range(depth))

    # -- validation ---------------------------------------------------------------------------------------------
    def validate(self, depth: int, max_len: int | None = None) -> Chain:
        """Check that every index exists in a model of ``depth`` layers and the length is at most ``max_len``
        (default ``2 * depth``). Returns self, so calls chain."""
        bad = [i for i in self.layers if i >= depth]
        if bad:
            raise ChainError(f"layer index {bad[0]} out of range for a model with {depth} layers (0-{depth - 1})")
        limit = 2 * depth if max_len is None else max_len
        if len(self.layers) > limit:
            raise ChainError(f"chain of {len(self.layers)} layers is longer than the maximum {limit}")
        return self

    # -- the paper's edits --------------------------------------------------------------------------------------
    def skip(self, position: int, k: int) -> Chain:
        """Remove the block of ``k`` chain positions starting at ``position``."""
        self._check_block(position, k)
        if k >= len(self.layers):
            raise ChainError("skipping every layer leaves an empty chain")
        return Chain._trusted(self.layers[:position] + self.layers[position + k :])

    def repeat(self, position: int, k: int, r: int = 1) -> Chain:
        """Run the block of ``k`` chain positions starting at ``position`` ``r`` more times, right after itself."""
        self._check_block(position, k)
        if r < 1:
            raise ChainError(f"repeat count must be >= 1, got {r}")
        block = self.layers[position : position + k]
        return Chain._trusted(self.layers[: position + k] + block * r + self.layers[position + k :])

    def _check_block(self, position: int, k: int) -> None:
        if k < 1:
            raise ChainError(f"block size must be >= 1, got {k}")
        if position < 0 or position + k > len(self.layers):
            raise ChainError(f"block [{position}, {position + k}) does not fit in a chain of {len(self.layers)}")


def as_chain(chain: Chain | str | tuple[int, ...] | list[int] | None, depth: int, max_len: int | None = None) -> Chain:
    """Coerce a chain-like value (None means ``full``) to a validated :class:`Chain`."""
    if chain is None:
        return Chain.full(depth)
    if isinstance(chain, str):
        return Chain.parse(chain, depth, max_len)
    if not isinstance(chain, Chain):
        chain = Chain(tuple(chain))
    return chain.validate(depth, max_len)
