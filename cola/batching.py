"""Many chains decoded together: rows that each run their own chain over their own prompt, one token a step.

A search evaluates one chain at a time per sample; searching several samples at once gives several chains to decode
at once. Decoding one token is bound by reading the weights (CPU) or by kernel launches (GPU), not by arithmetic, so
rows that run the same layer should run it together. The rows' chains differ, so a step is scheduled by layer: among
the rows' next chain positions, the lowest layer index runs next, for every row whose next layer it is. Chains near
the model's order (the search's are a few edits away) then share every layer call but the extra passes of their
repeated blocks, which run for their own row alone.

Each row keeps its own cache, one slot per chain position, as :mod:`cola.executor`. A layer run for several rows sees
their keys and values through :class:`RowsCache`: each row's new entry goes to that row's slot, and the attention
reads the rows' slots stacked, left-padded to the longest and masked. A row that runs a layer alone takes the
executor's own path, so one row decodes exactly as :func:`cola.generation.generate`. Rows run together get the same
results up to floating-point rounding (a batched matrix product is not bitwise equal to one row's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .chain import Chain
from .executor import (
    MASK_FUNCTIONS, SlotCache, chain_config, chain_layer_types, lm_head, prefill, rotary_embeddings,
)
from .generation import Generation, eos_ids, stop_reason
from .models import ColaModel
from .reuse import PrefixCache


@dataclass
class Row:
    """One sequence being decoded through its own chain: its cache (one slot per chain position) and its length."""

    chain: Chain
    cache: DynamicCache
    length: int  # tokens in the cache; the next token's position


class RowsCache:
    """The cache of a layer run for several rows: row ``i`` writes chain position ``slots[i]`` of its own cache;
    the layer reads every row's keys and values, left-padded to the longest."""

    def __init__(self, rows: list[Row], slots: list[int]) -> None:
        self.rows = rows
        self.slots = slots

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = [], []
        for i, (row, slot) in enumerate(zip(self.rows, self.slots)):
            k, v = row.cache.update(key_states[i : i + 1], value_states[i : i + 1], slot)
            keys.append(k)
            values.append(v)
        width = max(k.shape[2] for k in keys)
        return _left_pad(keys, width), _left_pad(values, width)


def _left_pad(tensors: list[torch.Tensor], width: int) -> torch.Tensor:
    """Stack (1, heads, length, dim) tensors along the batch, left-padded with zeros to ``width``."""
    return torch.cat([torch.nn.functional.pad(t, (0, 0, width - t.shape[2], 0)) for t in tensors])


def padding_mask(lengths: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive attention mask (rows, 1, 1, longest) of one query per row over its left-padded keys."""
    width = max(lengths)
    first = torch.tensor([width - n for n in lengths], device=device)[:, None]
    keep = torch.arange(width, device=device)[None, :] >= first
    mask = torch.zeros(len(lengths), 1, 1, width, dtype=dtype, device=device)
    return mask.masked_fill(~keep[:, None, None, :], torch.finfo(dtype).min)


@torch.inference_mode()
def decode_step(cm: ColaModel, rows: list[Row], token_ids: torch.Tensor) -> torch.Tensor:
    """Run one new token per row (``token_ids``: (rows,)) through each row's chain; returns the next-token logits
    (rows, vocab) and advances every row's cache by one token."""
    hidden = cm.decoder.embed_tokens(token_ids[:, None])
    step = _Step(cm, rows, hidden)
    pointers = [0] * len(rows)
    while True:
        waiting = [(row.chain[p], b) for b, (row, p) in enumerate(zip(rows, pointers)) if p < len(row.chain)]
        if not waiting:
            break
        layer = min(index for index, _ in waiting)
        group = [b for index, b in waiting if index == layer]
        if len(group) > 1 and cm.layer_types[layer] == "full_attention":
            hidden[group] = step.run_together(layer, hidden[group], group, [pointers[b] for b in group])
        else:  # one row, or sliding windows (which differ per row): the executor's own path, row by row
            for b in group:
                hidden[b : b + 1] = step.run_one(layer, hidden[b : b + 1], b, pointers[b])
        for b in group:
            pointers[b] += 1
    for row in rows:
        row.length += 1
    return lm_head(cm, hidden)[:, -1]


class _Step:
    """What one decoding step computes once and reuses across layer calls: each row's position, masks and rotary
    angles (as the executor computes them for one forward step), and each group's stacked angles and padding mask."""

    def __init__(self, cm: ColaModel, rows: list[Row], hidden: torch.Tensor) -> None:
        self.cm, self.rows, self.hidden = cm, rows, hidden
        self.positions = [torch.tensor([[row.length]], device=hidden.device) for row in rows]
        self.masks: dict[tuple[int, str], torch.Tensor | None] = {}
        self.rotaries: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.groups: dict[tuple[int, ...], tuple] = {}

    def rotary(self, b: int, layer_type: str):
        if (b, layer_type) not in self.rotaries:
            hidden, position = self.hidden[b : b + 1], self.positions[b]
            self.rotaries[b, layer_type] = rotary_embeddings(self.cm, hidden, position, layer_type)
        return self.rotaries[b, layer_type]

    def mask(self, b: int, layer_type: str):
        if (b, layer_type) not in self.masks:  # built before any layer of this step writes the row's cache
            config = chain_config(self.cm, chain_layer_types(self.cm, self.rows[b].chain))
            self.masks[b, layer_type] = MASK_FUNCTIONS[layer_type](
                config=config, inputs_embeds=self.hidden[b : b + 1], attention_mask=None, cache=self.rows[b].cache,
                position_ids=self.positions[b])
        return self.masks[b, layer_type]

    def run_one(self, layer: int, hidden: torch.Tensor, b: int, slot: int) -> torch.Tensor:
        """One row through one layer, exactly as :func:`cola.executor.run_layers` runs it."""
        layer_type = self.cm.layer_types[layer]
        return self.cm.layers[layer](
            hidden, attention_mask=self.mask(b, layer_type), position_embeddings=self.rotary(b, layer_type),
            position_ids=self.positions[b], cache=SlotCache(self.rows[b].cache, slot), use_cache=True)

    def run_together(self, layer: int, hidden: torch.Tensor, group: list[int], slots: list[int]) -> torch.Tensor:
        """Several rows (full attention) through one layer in one call, each reading and writing its own slot."""
        key = tuple(group)
        if key not in self.groups:
            angles = [self.rotary(b, "full_attention") for b in group]
            self.groups[key] = (
                (torch.cat([c for c, _ in angles]), torch.cat([s for _, s in angles])),
                padding_mask([self.rows[b].length + 1 for b in group], hidden.dtype, hidden.device),
                torch.cat([self.positions[b] for b in group]),
            )
        angles, mask, positions = self.groups[key]
        rows = [self.rows[b] for b in group]
        return self.cm.layers[layer](hidden, attention_mask=mask, position_embeddings=angles, position_ids=positions,
                                     cache=RowsCache(rows, slots), use_cache=True)


@dataclass
class _Request:
    key: object
    row: Row
    tokens: list[int]
    is_done: Callable[[str], bool] | None


class RowDecoder:
    """Greedy decoding with continuous batching: a request (chain, unpadded prompt) joins at any step, is
    prefilled alone (reusing its prefix cache), then decodes together with every other unfinished request, and
    leaves as soon as it stops (EOS, a stop string, ``is_done(text)``, or ``max_new_tokens``)."""

    def __init__(self, cm: ColaModel, max_new_tokens: int, stop_strings: Sequence[str] = ()) -> None:
        self.cm, self.max_new_tokens, self.stop_strings = cm, max_new_tokens, stop_strings
        self.eos = eos_ids(cm)
        self.active: list[_Request] = []
        self.finished: list[tuple[object, Generation]] = []

    def add(self, key: object, chain: Chain, input_ids: torch.Tensor, prefix: PrefixCache | None = None,
            is_done: Callable[[str], bool] | None = None) -> None:
        """Prefill ``input_ids`` (1, length) through ``chain``; ``key`` names the request when it finishes."""
        logits, cache = prefill(self.cm, chain, input_ids, None, prefix)
        self._take(_Request(key, Row(chain, cache, input_ids.shape[1]), [], is_done), int(logits[0, -1].argmax()))

    def step(self) -> list[tuple[object, Generation]]:
        """One decoding step of every unfinished request; returns the requests finished since the last step."""
        going, self.active = self.active, []
        if going:
            tokens = torch.tensor([r.tokens[-1] for r in going], device=self.cm.device)
            next_ids = decode_step(self.cm, [r.row for r in going], tokens).argmax(-1).tolist()
            for request, token in zip(going, next_ids):
                self._take(request, token)
        done, self.finished = self.finished, []
        return done

    def _take(self, request: _Request, token: int) -> None:
        request.tokens.append(token)
        is_done = request.is_done
        reason = stop_reason(self.cm, request.tokens, self.eos, self.stop_strings,
                             None if is_done is None else lambda _, text: is_done(text), 0)
        if reason is None and len(request.tokens) < self.max_new_tokens:
            self.active.append(request)
        else:
            text = self.cm.tokenizer.decode(request.tokens, skip_special_tokens=True)
            self.finished.append((request.key, Generation(request.tokens, text, reason or "length")))


@torch.inference_mode()
def generate_chains(
    cm: ColaModel,
    requests: Sequence[tuple[Chain, torch.Tensor, PrefixCache | None]],
    max_new_tokens: int = 32,
    stop_strings: Sequence[str] = (),
    is_done: Callable[[int, str], bool] | None = None,
) -> list[Generation]:
    """Greedy decoding of many (chain, prompt, prefix cache) requests at once, each prompt (1, length) unpadded and
    run through its own chain. Each prompt is prefilled alone (reusing its prefix cache);
    the decoding steps of all unfinished rows run together. Stops as :func:`generate`; with one request the result
    is exactly :func:`generate`'s, with several the same up to the rounding of batched matrix products."""
    decoder = RowDecoder(cm, max_new_tokens, stop_strings)
    for b, (chain, input_ids, prefix) in enumerate(requests):
        decoder.add(b, chain, input_ids, prefix, None if is_done is None else lambda text, b=b: is_done(b, text))
    results: dict[int, Generation] = {}
    while len(results) < len(requests):
        results.update(decoder.step())
    return [results[b] for b in range(len(requests))]
