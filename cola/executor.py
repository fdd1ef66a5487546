"""The chain executor: run a model's decoder layers in the order a :class:`~cola.chain.Chain` gives.

Each *position* of the chain owns its KV-cache slot. A layer that appears twice is two independent applications of
that layer, writing two slots, exactly as if the layer list had been physically built in chain order. The HF
attention modules address the cache by their own ``layer_idx``; :class:`SlotCache` redirects that to the chain
position, so the weights are shared but the cache entries are not.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from functools import lru_cache

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from .chain import Chain
from .models import ColaModel
from .reuse import PrefixCache

MASK_FUNCTIONS = {
    "full_attention": create_causal_mask,
    "sliding_attention": create_sliding_window_causal_mask,
}


class SlotCache:
    """A view of a cache through which one decoder layer reads and writes the slot of one chain position."""

    def __init__(self, cache: DynamicCache, slot: int) -> None:
        self.cache = cache
        self.slot = slot
        self.written: tuple[torch.Tensor, torch.Tensor] | None = None  # what the layer gave its slot

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.written = (key_states, value_states)
        return self.cache.update(key_states, value_states, self.slot, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.cache, name)


def chain_config(cm: ColaModel, layer_types: tuple[str, ...]):
    """A copy of the model's config describing a stack whose layer list is the chain: its depth and per-position
    attention types. Memoised per model, since masks and caches are built from it at every step."""
    cfg = cm.chain_configs.get(layer_types)
    if cfg is None:
        if len(cm.chain_configs) >= 1024:  # hybrid models make one per type sequence: keep the memo bounded
            cm.chain_configs.clear()
        cfg = copy.deepcopy(cm.config)
        cfg.num_hidden_layers = len(layer_types)
        if getattr(cm.config, "layer_types", None) is not None:
            cfg.layer_types = list(layer_types)
        cm.chain_configs[layer_types] = cfg
    return cfg


def chain_layer_types(cm: ColaModel, chain: Chain) -> tuple[str, ...]:
    """The attention type of each chain position (a layer keeps its own type wherever it runs)."""
    types = cm.layer_types
    return tuple(types[i] for i in chain)


class AppendLayer(DynamicLayer):
    """A full-attention cache slot that appends in place. transformers' ``DynamicLayer`` concatenates to append, so
    each decoded token copies the slot's whole cache, at every chain position (a decoding step's largest cost after
    the weights when many rows run together). Here keys and values live in a buffer that doubles when an append
    finds it full, and ``keys``/``values`` are views of its filled part: the same values, so the same results."""

    def __init__(self) -> None:
        super().__init__()
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new = self.get_seq_length(), key_states.shape[-2]
        owned = self.buffers is not None and self.keys.data_ptr() == self.buffers[0].data_ptr()
        if not owned or length + new > self.buffers[0].shape[-2]:
            # a first write, or one after the keys were replaced (a repeated batch), takes an exact copy as
            # concatenation would (a prompt's slots are often never appended to); a full buffer doubles
            size = (*key_states.shape[:-2], (length + new) * (2 if owned else 1))
            self.buffers = (key_states.new_empty(*size, key_states.shape[-1]),
                            value_states.new_empty(*size, value_states.shape[-1]))
            if length:
                self.buffers[0][..., :length, :] = self.keys
                self.buffers[1][..., :length, :] = self.values
        keys, values = self.buffers
        keys[..., length : length + new, :] = key_states
        values[..., length : length + new, :] = value_states
        self.keys, self.values = keys[..., : length + new, :], values[..., : length + new, :]
        return self.keys, self.values


def new_cache(cm: ColaModel, chain: Chain) -> DynamicCache:
    """An empty KV cache with one slot per chain position (sliding slots where the layer is a sliding one; full ones
    append in place, :class:`AppendLayer`)."""
    cache = DynamicCache(config=chain_config(cm, chain_layer_types(cm, chain)))
    cache.layers = [AppendLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def positions_from_mask(attention_mask: torch.Tensor, query_length: int) -> torch.Tensor:
    """Position ids of the last ``query_length`` tokens, counting only real (unpadded) tokens, as HF generate does."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids = position_ids.masked_fill(attention_mask == 0, 0)
    return position_ids[:, -query_length:]


@lru_cache(maxsize=None)
def _rotary_takes_layer_type(rotary_cls: type) -> bool:
    """Whether a rotary embedding class computes per attention type (Gemma3); asked once per class, not per step."""
    return "layer_type" in inspect.signature(rotary_cls.forward).parameters


def rotary_embeddings(cm: ColaModel, hidden: torch.Tensor, position_ids: torch.Tensor, layer_type: str):
    """The rotary (cos, sin) of ``position_ids`` for layers of ``layer_type``."""
    rotary = cm.decoder.rotary_emb
    if _rotary_takes_layer_type(type(rotary)):
        return rotary(hidden, position_ids, layer_type)
    return rotary(hidden, position_ids)


def run_layers(
    cm: ColaModel,
    chain: Chain,
    hidden: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor,
    cache: DynamicCache | None,
    start: int = 0,
    record: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    fresh_prompt: bool = False,
) -> torch.Tensor:
    """Apply chain positions ``start ..`` to ``hidden`` (batch, query, dim); the core loop of the executor.

    ``attention_mask`` is the 2D padding mask over cached + new tokens (None when nothing is padded). Position ``p``
    of the chain uses cache slot ``p``. ``record(p, hidden, key, value)``, when given (with a cache), receives each
    position's output and the keys and values it wrote. ``fresh_prompt`` says the tokens are a whole prompt with
    nothing before them, even if slots before ``start`` were already filled from a prefix cache: masks are then
    built as for a first prefill (the mask helpers read past lengths from the cache's first slot).
    """
    types = chain_layer_types(cm, chain)
    config = chain_config(cm, types)
    masks, rotaries = {}, {}
    for layer_type in dict.fromkeys(types[start:]):
        if layer_type not in MASK_FUNCTIONS:
            raise NotImplementedError(f"attention type {layer_type!r} is not supported by the chain executor")
        masks[layer_type] = MASK_FUNCTIONS[layer_type](
            config=config, inputs_embeds=hidden, attention_mask=attention_mask,
            cache=None if fresh_prompt else cache, position_ids=position_ids,
        )
        rotaries[layer_type] = rotary_embeddings(cm, hidden, position_ids, layer_type)
    for p in range(start, len(chain)):
        layer_type = types[p]
        slot = SlotCache(cache, p) if cache is not None else None
        hidden = cm.layers[chain[p]](
            hidden,
            attention_mask=masks[layer_type],
            position_embeddings=rotaries[layer_type],
            position_ids=position_ids,
            cache=slot,
            use_cache=cache is not None,
        )
        if record is not None and slot is not None:
            record(p, hidden, *slot.written)
    return hidden


def lm_head(cm: ColaModel, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm, output projection and (where the model has it) logit soft-capping."""
    logits = cm.model.lm_head(cm.decoder.norm(hidden))
    cap = getattr(cm.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.inference_mode()
def forward(
    cm: ColaModel,
    chain: Chain,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    cache: DynamicCache | None = None,
    position_ids: torch.Tensor | None = None,
    logits_to_keep: int = 0,
) -> torch.Tensor:
    """Logits (batch, tokens, vocab) of ``input_ids`` run through ``chain``.

    ``attention_mask`` covers cached and new tokens (left padding); positions follow the unpadded tokens. With a
    ``cache`` (from :func:`new_cache`) the new keys and values are appended, one slot per chain position.
    ``logits_to_keep=k`` computes logits for the last ``k`` tokens only.
    """
    query_length = input_ids.shape[1]
    if position_ids is None:
        if attention_mask is not None:
            position_ids = positions_from_mask(attention_mask, query_length)
        else:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(past, past + query_length, device=input_ids.device).unsqueeze(0)
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # nothing padded: lets SDPA take its causal fast path, as HF generate does
    hidden = cm.decoder.embed_tokens(input_ids)
    hidden = run_layers(cm, chain, hidden, attention_mask, position_ids, cache)
    if logits_to_keep:
        hidden = hidden[:, -logits_to_keep:]
    return lm_head(cm, hidden)


@torch.inference_mode()
def prefill(
    cm: ColaModel,
    chain: Chain,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    prefix: PrefixCache | None = None,
) -> tuple[torch.Tensor, DynamicCache]:
    """Run a prompt through ``chain`` into a new cache; returns the last token's logits (batch, 1, vocab) and the cache.

    With a :class:`~cola.reuse.PrefixCache` of this prompt (one unpadded sequence), the positions of the longest
    chain prefix already run are taken from it and only the rest is computed (and cached in turn). The computation of
    every position is the same as without it, so the results are too.
    """
    cache = new_cache(cm, chain)
    if prefix is None:
        return forward(cm, chain, input_ids, attention_mask, cache=cache, logits_to_keep=1), cache
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError("a prefix cache holds one unpadded prompt")
    start, hidden, record = prefix.resume(chain.layers, input_ids, cache)
    if hidden is None:
        hidden = cm.decoder.embed_tokens(input_ids)
    position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    hidden = run_layers(cm, chain, hidden, None, position_ids, cache, start=start, record=record, fresh_prompt=True)
    return lm_head(cm, hidden[:, -1:]), cache
