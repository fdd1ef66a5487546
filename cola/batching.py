"""Many chains run together: rows that each run their own chain over their own prompt, prefilling or decoding.

A search evaluates one chain at a time per sample; searching several samples at once gives several chains to run at
once. A layer call is bound by reading the layer's weights (CPU decoding) or by kernel launches (GPU), so rows that
run the same layer should run it together, whether a row is prefilling its prompt or decoding one token. The rows'
chains differ, so a step is scheduled by layer: among the rows' next chain positions, the lowest layer index runs
next, for every row whose next layer it is. Chains near the model's order (the search's are a few edits away) then
share every layer call but the extra passes of their repeated blocks, which run for their own row alone.

Rows run together are *packed*, not padded: their tokens are laid end to end as one sequence, so the layer's matrix
products see every row's tokens at once and no padding is computed. Each row keeps its own cache, one slot per chain
position, as :mod:`cola.executor`; :class:`PackedCache` writes each row's new keys and values to that row's slot, and
:func:`packed_attention` (an attention implementation registered with transformers) runs each row's queries against
that row's own keys and values only. A row that runs a layer alone takes the executor's own path, so one row computes
exactly as :func:`cola.executor.prefill` and :func:`cola.generation.generate`. Rows run together get the same results
up to floating-point rounding (a product over packed rows is not bitwise equal to one row's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface, DynamicCache

from .chain import Chain
from .executor import MASK_FUNCTIONS, SlotCache, chain_config, chain_layer_types, lm_head, new_cache, rotary_embeddings
from .generation import Generation, eos_ids, stop_reason
from .models import ColaModel
from .reuse import PrefixCache

PACKED = "cola_packed"


@dataclass
class Row:
    """One sequence run through its own chain: its cache (one slot per chain position) and its length."""

    chain: Chain
    cache: DynamicCache
    length: int  # tokens in the cache; the next token's position


@dataclass(eq=False)
class Segment:
    """The tokens one row runs in this step: a prompt's prefill (from chain position ``start``, the slots before it
    filled from a prefix cache) or one decoded token. ``record(p, hidden, key, value)`` receives each position's
    output and the keys and values it wrote (a prefix cache filling in)."""

    row: Row
    hidden: torch.Tensor  # (1, tokens, dim)
    start: int = 0
    record: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None
    position: int = field(init=False)  # the next chain position to run
    position_ids: torch.Tensor = field(init=False)
    prefill: bool = field(init=False)

    def __post_init__(self) -> None:
        self.position = self.start
        self.prefill = self.row.length == 0
        tokens = self.hidden.shape[1]
        past = self.row.length
        self.position_ids = torch.arange(past, past + tokens, device=self.hidden.device).unsqueeze(0)
        self._masks: dict[str, torch.Tensor | None] = {}
        self._rotaries: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def done(self) -> bool:
        return self.position >= len(self.row.chain)

    def rotary(self, cm: ColaModel, layer_type: str):
        if layer_type not in self._rotaries:
            self._rotaries[layer_type] = rotary_embeddings(cm, self.hidden, self.position_ids, layer_type)
        return self._rotaries[layer_type]

    def mask(self, cm: ColaModel, layer_type: str):
        """The mask the executor builds for these tokens: a fresh prompt's (no cache), or a decoding step's, which
        the mask helpers size from the row's cache, so :func:`advance` builds it before any layer of the step runs."""
        if layer_type not in self._masks:
            config = chain_config(cm, chain_layer_types(cm, self.row.chain))
            self._masks[layer_type] = MASK_FUNCTIONS[layer_type](
                config=config, inputs_embeds=self.hidden, attention_mask=None,
                cache=None if self.prefill else self.row.cache, position_ids=self.position_ids)
        return self._masks[layer_type]


class PackedCache:
    """The cache of one layer call over packed rows: segment ``i`` holds tokens ``spans[i]`` of the packed sequence
    and writes chain position ``slots[i]`` of its row's cache; :func:`packed_attention` reads ``keys_values``."""

    def __init__(self, rows: list[Row], slots: list[int], spans: list[tuple[int, int]]) -> None:
        self.rows, self.slots, self.spans = rows, slots, spans
        self.keys_values: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.written: list[tuple[torch.Tensor, torch.Tensor]] = []

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        for row, slot, (a, b) in zip(self.rows, self.slots, self.spans):
            key, value = key_states[:, :, a:b], value_states[:, :, a:b]
            self.written.append((key, value))
            self.keys_values.append(row.cache.update(key, value, slot))
        return key_states, value_states


def packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, *, packed, **kwargs):
    """Attention of packed rows: each row's queries against its own keys and values from ``packed``, with SDPA as
    transformers' SDPA attention calls it (grouped heads, causal for a prompt, all keys for one decoded token)."""
    if kwargs.get("softcap") is not None:  # as transformers' SDPA attention, rather than silently without it
        raise ValueError("packed rows run SDPA attention, which has no attention-logit soft-capping")
    outputs = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, a:b], k, v, is_causal=b - a > 1, scale=scaling, enable_gqa=True).transpose(1, 2)
        for (a, b), (k, v) in zip(packed.spans, packed.keys_values)
    ]
    return torch.cat(outputs, dim=1), None


AttentionInterface.register(PACKED, packed_attention)


def _attention_configs(cm: ColaModel) -> list:
    """The configs the model's attention modules read their implementation from (usually one)."""
    return list({id(layer.self_attn.config): layer.self_attn.config for layer in cm.layers}.values())


@contextmanager
def _packed_attention(configs: list) -> Iterator[None]:
    """Route the attention of the modules reading ``configs`` through :func:`packed_attention` for one layer
    call."""
    saved = [config._attn_implementation_internal for config in configs]
    for config in configs:
        config._attn_implementation_internal = PACKED
    try:
        yield
    finally:
        for config, name in zip(configs, saved):
            config._attn_implementation_internal = name


@torch.inference_mode()
def advance(cm: ColaModel, segments: list[Segment]) -> torch.Tensor:
    """Run every segment through the rest of its row's chain; returns the last token's logits (segments, vocab) and
    advances every row's length by its segment's tokens."""
    for seg in segments:
        for layer_type in dict.fromkeys(chain_layer_types(cm, seg.row.chain)):
            seg.mask(cm, layer_type)
    configs, types = _attention_configs(cm), cm.layer_types
    while True:
        waiting = [(seg.row.chain[seg.position], seg) for seg in segments if not seg.done]
        if not waiting:
            break
        layer = min(index for index, _ in waiting)
        group = [seg for index, seg in waiting if index == layer]
        if len(group) > 1 and types[layer] == "full_attention":
            _run_packed(cm, layer, group, configs)
        else:  # one row, or sliding windows (which differ per row): the executor's own path, row by row
            for seg in group:
                _run_one(cm, layer, types[layer], seg)
        for seg in group:
            seg.position += 1
    for seg in segments:
        seg.row.length += seg.hidden.shape[1]
    return lm_head(cm, torch.cat([seg.hidden[:, -1:] for seg in segments]))[:, -1]


def _run_one(cm: ColaModel, layer: int, layer_type: str, seg: Segment) -> None:
    """One row through one layer, exactly as :func:`cola.executor.run_layers` runs it."""
    slot = SlotCache(seg.row.cache, seg.position)
    seg.hidden = cm.layers[layer](
        seg.hidden, attention_mask=seg.mask(cm, layer_type), position_embeddings=seg.rotary(cm, layer_type),
        position_ids=seg.position_ids, cache=slot, use_cache=True)
    if seg.record is not None:
        seg.record(seg.position, seg.hidden, *slot.written)


def _run_packed(cm: ColaModel, layer: int, group: list[Segment], configs: list) -> None:
    """Several rows (full attention) through one layer in one call, packed end to end."""
    bounds = [0]
    for seg in group:
        bounds.append(bounds[-1] + seg.hidden.shape[1])
    spans = list(zip(bounds[:-1], bounds[1:]))
    angles = [seg.rotary(cm, "full_attention") for seg in group]
    cache = PackedCache([seg.row for seg in group], [seg.position for seg in group], spans)
    with _packed_attention(configs):
        hidden = cm.layers[layer](
            torch.cat([seg.hidden for seg in group], dim=1), attention_mask=None,
            position_embeddings=(torch.cat([c for c, _ in angles], dim=1), torch.cat([s for _, s in angles], dim=1)),
            position_ids=torch.cat([seg.position_ids for seg in group], dim=1), cache=cache, use_cache=True,
            packed=cache)
    for seg, (a, b), (key, value) in zip(group, spans, cache.written):
        seg.hidden = hidden[:, a:b]
        if seg.record is not None:  # a prefix cache keeps these: copies, not views into the packed call's tensors
            seg.record(seg.position, seg.hidden.clone(), key.clone(), value.clone())


@torch.inference_mode()
def decode_step(cm: ColaModel, rows: list[Row], token_ids: torch.Tensor) -> torch.Tensor:
    """Run one new token per row (``token_ids``: (rows,)) through each row's chain; returns the next-token logits
    (rows, vocab) and advances every row's cache by one token."""
    hidden = cm.decoder.embed_tokens(token_ids[:, None])
    return advance(cm, [Segment(row, hidden[b : b + 1]) for b, row in enumerate(rows)])


@torch.inference_mode()
def prompt_segment(cm: ColaModel, chain: Chain, input_ids: torch.Tensor, prefix: PrefixCache | None) -> Segment:
    """A new row's prefill of ``input_ids`` (1, length) through ``chain``: with a prefix cache of this prompt, the
    longest cached chain prefix fills the first slots and only the rest is left to run (and cached in turn), as
    :func:`cola.executor.prefill` does."""
    row = Row(chain, new_cache(cm, chain), 0)
    if prefix is None:
        return Segment(row, cm.decoder.embed_tokens(input_ids))
    start, hidden, record = prefix.resume(chain.layers, input_ids, row.cache)
    if hidden is None:
        hidden = cm.decoder.embed_tokens(input_ids)
    return Segment(row, hidden, start=start, record=record)


@dataclass
class _Request:
    key: object
    segment: Segment | None  # the prompt, until its prefill has run
    row: Row
    tokens: list[int]
    is_done: Callable[[str], bool] | None


class RowDecoder:
    """Greedy decoding with continuous batching: a request (chain, unpadded prompt) joins at any step; at the next
    step its prompt is prefilled (reusing its prefix cache) in the same layer calls as the other requests' decoding
    tokens, and it leaves as soon as it stops (EOS, a stop string, ``is_done(text)``, or ``max_new_tokens``)."""

    def __init__(self, cm: ColaModel, max_new_tokens: int, stop_strings: Sequence[str] = ()) -> None:
        self.cm, self.max_new_tokens, self.stop_strings = cm, max_new_tokens, stop_strings
        self.eos = eos_ids(cm)
        self.active: list[_Request] = []
        self.finished: list[tuple[object, Generation]] = []

    def add(self, key: object, chain: Chain, input_ids: torch.Tensor, prefix: PrefixCache | None = None,
            is_done: Callable[[str], bool] | None = None) -> None:
        """Queue ``input_ids`` (1, length) through ``chain``; ``key`` names the request when it finishes."""
        segment = prompt_segment(self.cm, chain, input_ids, prefix)
        self.active.append(_Request(key, segment, segment.row, [], is_done))

    def step(self) -> list[tuple[object, Generation]]:
        """Prefill the new requests and decode one token of every other unfinished one; returns the requests
        finished since the last step."""
        going, self.active = self.active, []
        if going:
            decoding = [r for r in going if r.segment is None]
            if decoding:
                tokens = torch.tensor([r.tokens[-1] for r in decoding], device=self.cm.device)
                hidden = self.cm.decoder.embed_tokens(tokens[:, None])
                for b, request in enumerate(decoding):
                    request.segment = Segment(request.row, hidden[b : b + 1])
            next_ids = advance(self.cm, [r.segment for r in going]).argmax(-1).tolist()
            for request, token in zip(going, next_ids):
                request.segment = None
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
    run through its own chain; the prefills and then the decoding steps of all unfinished rows run together. Stops
    as :func:`generate`; with one request the result is exactly :func:`generate`'s, with several the same up to the
    rounding of packed matrix products."""
    decoder = RowDecoder(cm, max_new_tokens, stop_strings)
    for b, (chain, input_ids, prefix) in enumerate(requests):
        decoder.add(b, chain, input_ids, prefix, None if is_done is None else lambda text, b=b: is_done(b, text))
    results: dict[int, Generation] = {}
    while len(results) < len(requests):
        results.update(decoder.step())
    return [results[b] for b in range(len(requests))]
