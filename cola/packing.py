"""Rows packed end to end: several unpadded rows run one decoder layer in one call.

A search evaluates one chain at a time per sample; searching several samples at once gives several chains to run at
once. A layer call is bound by reading the layer's weights (CPU decoding) or by kernel launches (GPU), so rows that
run the same layer should run it together, whether a row is prefilling its prompt or decoding one token
(:func:`cola.executor.run_segments` schedules them). Rows run together are *packed*, not padded: their tokens are
laid end to end as one sequence, so the layer's matrix products see every row's tokens at once and no padding is
computed. Each row keeps its own cache, one slot per chain position; :class:`PackedCache` writes each row's new keys
and values to that row's slot, and :func:`packed_attention` (an attention implementation registered with
transformers) runs each row's queries against that row's own keys and values only. Results equal running each row
alone up to floating-point rounding (a product over packed rows is not bitwise equal to one row's).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from transformers import AttentionInterface

if TYPE_CHECKING:
    from .executor import Row, Segment
    from .models import ColaModel

PACKED = "cola_packed"


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


def attention_configs(cm: ColaModel) -> list:
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


def run_packed(cm: ColaModel, layer: int, group: list[Segment], configs: list) -> None:
    """Several unpadded rows (full attention) through decoder layer ``layer`` in one call, packed end to end;
    ``configs`` are :func:`attention_configs` of the model."""
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
