"""Rows packed end to end: several unpadded rows run one decoder layer in one call.

A search evaluates one chain at a time per sample; searching several samples at once gives several chains to run at
once. A layer call is bound by reading the layer's weights (CPU decoding) or by kernel launches (GPU), so rows that
run the same layer should run it together, whether a row is prefilling its prompt or decoding one token
(:func:`cola.core.executor.run_segments` schedules them). Rows run together are *packed*, not padded: their tokens are
laid end to end as one sequence, so the layer's matrix products see every row's tokens at once and no padding is
computed. Each row keeps its own cache, one slot per chain position; :class:`PackedCache` writes each row's new keys
and values to that row's slot, and :func:`packed_attention` (an attention implementation registered with
transformers) runs each row's queries against that row's own keys and values only. With ``ColaModel.batch_invariant``
(the default on a CPU) the linear layers keep the rows apart (:mod:`cola.core.invariant`) and the results equal running
each row alone bitwise; without it, up to floating-point rounding.

The attention of packed rows runs one of three ways (:data:`PACKED_MODES`, chosen by ``ColaModel.packed_attention``):

- ``per_row``: one SDPA call per row against its own cache (full-attention layers only): the default on a CPU, where
  the calls are cheap and a block mask would compute the other rows' scores for nothing;
- ``one_call``: one SDPA call over every row, its queries against all rows' keys laid end to end under a block-diagonal
  causal mask (:func:`block_mask`; sliding windows included, so sliding layers pack too): one kernel launch per layer
  call, the default on CUDA. SDPA has no soft-capping, so a model that soft-caps attention logits (Gemma 2) is not
  packed in this mode;
- ``flex``: the same mask as a ``flex_attention`` block mask, with soft-capping as its score modification: Gemma 2
  packs too; compiled on CUDA, run eagerly (slowly, for tests) on a CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from transformers import AttentionInterface

from .invariant import packed_rows

if TYPE_CHECKING:
    from .executor import Row, Segment
    from .models import ColaModel

PACKED = "cola_packed"
PACKED_MODES = ("per_row", "one_call", "flex")


def packed_mode(cm: ColaModel) -> str:
    """The way packed rows' attention runs for ``cm``: its ``packed_attention``, or for ``auto`` one call on CUDA
    and one per row elsewhere."""
    mode = cm.packed_attention
    if mode == "auto":
        return "one_call" if cm.device.type == "cuda" else "per_row"
    if mode not in PACKED_MODES:
        raise ValueError(f"packed attention must be auto or one of {PACKED_MODES}, not {mode!r}")
    return mode


def packs(cm: ColaModel, mode: str, layer_type: str) -> bool:
    """Whether rows of a layer of ``layer_type`` may run packed: full-attention layers always, sliding ones in the
    modes that mask a window; never under SDPA when the model soft-caps attention logits (SDPA cannot)."""
    if cm.family.read(cm.config, "attention_softcapping") is not None and mode != "flex":
        return False
    return layer_type == "full_attention" or (layer_type == "sliding_attention" and mode != "per_row")


class PackedCache:
    """The cache of one layer call over packed rows: segment ``i`` holds tokens ``spans[i]`` of the packed sequence
    and writes chain position ``slots[i]`` of its row's cache; :func:`packed_attention` reads ``keys_values``."""

    def __init__(self, rows: list[Row], slots: list[int], spans: list[tuple[int, int]], mode: str = "per_row") -> None:
        self.rows, self.slots, self.spans, self.mode = rows, slots, spans, mode
        self.keys_values: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.written: list[tuple[torch.Tensor, torch.Tensor]] = []

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        for row, slot, (a, b) in zip(self.rows, self.slots, self.spans):
            key, value = key_states[:, :, a:b], value_states[:, :, a:b]
            self.written.append((key, value))
            self.keys_values.append(row.cache.update(key, value, slot))
        return key_states, value_states


def block_mask(spans: list[tuple[int, int]], key_lengths: list[int], window: int | None,
               device: torch.device) -> torch.Tensor:
    """(queries, keys) bool: query ``j`` of row ``i`` (packed at ``spans[i]``) may read key ``t`` of the keys laid end
    to end (``key_lengths[i]`` of row ``i``, the row's last tokens, the queries' own last) when ``t`` is of row ``i``,
    not after the query, and within ``window`` positions of it when the layer slides."""
    q_lengths = torch.tensor([b - a for a, b in spans], device=device)
    k_lengths = torch.tensor(key_lengths, device=device)
    rows = torch.arange(len(spans), device=device)
    q_row, k_row = rows.repeat_interleave(q_lengths), rows.repeat_interleave(k_lengths)
    q_start = torch.cumsum(q_lengths, 0) - q_lengths
    k_start = torch.cumsum(k_lengths, 0) - k_lengths
    q_index = torch.arange(int(q_lengths.sum()), device=device) - q_start[q_row]  # within its row
    k_index = torch.arange(int(k_lengths.sum()), device=device) - k_start[k_row]
    q_at = (k_lengths - q_lengths)[q_row] + q_index  # the query's place among its row's keys
    distance = q_at[:, None] - k_index[None, :]
    allowed = (q_row[:, None] == k_row[None, :]) & (distance >= 0)
    return allowed & (distance < window) if window is not None else allowed


@lru_cache(maxsize=None)
def _flex_attention(device_type: str):
    """``flex_attention``, compiled on CUDA (one fused kernel), as it is on a CPU (eager: slow, for tests)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True) if device_type == "cuda" else flex_attention


def _one_call(query, keys, values, mask, scaling, softcap, mode: str):
    """All packed rows' attention in one kernel call: SDPA under a dense block mask, or flex attention under the
    same mask as a block mask (with ``softcap`` as its score modification)."""
    if mode == "one_call":
        if softcap is not None:  # as transformers' SDPA attention, rather than silently without it
            raise ValueError("one-call packed attention runs SDPA, which has no attention-logit soft-capping; "
                             "use packed_attention='flex'")
        return torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scaling,
                                                                enable_gqa=True)
    from torch.nn.attention.flex_attention import create_block_mask

    blocks = create_block_mask(lambda b, h, q, k: mask[q, k], None, None, mask.shape[0], mask.shape[1],
                               device=query.device)
    score_mod = None if softcap is None else (lambda score, b, h, q, k: softcap * torch.tanh(score / softcap))
    with warnings.catch_warnings():  # eager flex attention on a CPU warns that it is not compiled
        warnings.simplefilter("ignore")
        return _flex_attention(query.device.type)(query, keys, values, score_mod=score_mod, block_mask=blocks,
                                                  scale=scaling, enable_gqa=True)


def packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, *, packed, **kwargs):
    """Attention of packed rows: each row's queries against its own keys and values from ``packed``, as
    transformers' SDPA attention computes it (grouped heads, causal, the layer's sliding window): per row, or all
    rows in one call (:data:`PACKED_MODES`)."""
    softcap = kwargs.get("softcap")
    if packed.mode != "per_row":
        mask = block_mask(packed.spans, [k.shape[-2] for k, _ in packed.keys_values], kwargs.get("sliding_window"),
                          query.device)
        keys = torch.cat([k for k, _ in packed.keys_values], dim=-2)
        values = torch.cat([v for _, v in packed.keys_values], dim=-2)
        return _one_call(query, keys, values, mask, scaling, softcap, packed.mode).transpose(1, 2), None
    if softcap is not None:  # as transformers' SDPA attention, rather than silently without it
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


def run_packed(cm: ColaModel, layer: int, group: list[Segment], configs: list, mode: str = "per_row") -> None:
    """Several unpadded rows through decoder layer ``layer`` in one call, packed end to end; ``configs`` are
    :func:`attention_configs` of the model, ``mode`` one of :data:`PACKED_MODES`."""
    bounds = [0]
    for seg in group:
        bounds.append(bounds[-1] + seg.hidden.shape[1])
    spans = list(zip(bounds[:-1], bounds[1:]))
    layer_type = cm.layer_types[layer]
    angles = [seg.rotary(cm, layer_type) for seg in group]
    cache = PackedCache([seg.row for seg in group], [seg.position for seg in group], spans, mode)
    with _packed_attention(configs), packed_rows(spans):
        hidden = cm.layers[layer](
            torch.cat([seg.hidden for seg in group], dim=1), attention_mask=None,
            position_embeddings=(torch.cat([c for c, _ in angles], dim=1), torch.cat([s for _, s in angles], dim=1)),
            position_ids=torch.cat([seg.position_ids for seg in group], dim=1), cache=cache, use_cache=True,
            packed=cache)
    for seg, (a, b), (key, value) in zip(group, spans, cache.written):
        seg.hidden = hidden[:, a:b]
        if seg.record is not None:  # a prefix cache keeps these: copies, not views into the packed call's tensors
            seg.record(seg.position, seg.hidden.clone(), key.clone(), value.clone())
