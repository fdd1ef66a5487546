"""The chain executor: run a model's decoder layers in the order a :class:`~cola.core.chain.Chain` gives.

Each *position* of the chain owns its KV-cache slot. A layer that appears twice is two independent applications of
that layer, writing two slots, exactly as if the layer list had been physically built in chain order. The HF
attention modules address the cache by their own ``layer_idx``; :class:`SlotCache` redirects that to the chain
position, so the weights are shared but the cache entries are not.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from ..errors import ModelLoadError, NonFiniteError
from .chain import Chain
from .models import ColaModel, stack_config
from .packing import attention_configs, packed_mode, packs, run_packed
from .prefix_cache import PrefixCache

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
        cfg = cm.chain_configs[layer_types] = stack_config(cm.config, layer_types)
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


@dataclass
class Row:
    """One sequence (or a left-padded batch of them) run through its own chain: its cache (one slot per chain
    position) and the number of tokens in it, the position of the next token."""

    chain: Chain
    cache: DynamicCache
    length: int = 0


@dataclass(eq=False)
class Segment:
    """The tokens a row runs in one call of :func:`run_segments`: a prompt's prefill (from chain position ``start``,
    the slots before it filled from a prefix cache) or its next token(s) after the cached ones.

    ``attention_mask`` is the 2D padding mask over cached + new tokens of a left-padded batch (None: nothing padded)
    and ``position_ids`` then follow the unpadded tokens; by default positions continue from ``row.length``.
    ``record(p, hidden, key, value)`` receives each position's output and the keys and values it wrote (a prefix
    cache filling in). A segment whose row is empty is a fresh prompt: its masks are built as for a first prefill,
    even if slots before ``start`` were filled (the mask helpers would read past lengths from the first slot)."""

    row: Row
    hidden: torch.Tensor  # (batch, tokens, dim)
    start: int = 0
    record: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None
    attention_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    position: int = field(init=False)  # the next chain position to run
    prefill: bool = field(init=False)

    def __post_init__(self) -> None:
        self.position = self.start
        self.prefill = self.row.length == 0
        if self.position_ids is None:
            past, tokens = self.row.length, self.hidden.shape[1]
            self.position_ids = torch.arange(past, past + tokens, device=self.hidden.device).unsqueeze(0)
        self._masks: dict[str, torch.Tensor | None] = {}
        self._rotaries: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def done(self) -> bool:
        return self.position >= len(self.row.chain)

    def resume(self, start: int, hidden: torch.Tensor | None,
               record: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]) -> None:
        """Continue from chain position ``start``, its slots filled from a prefix cache and ``hidden`` the states
        after them (None: nothing was cached), passing each position computed next to ``record``."""
        self.start = self.position = start
        if hidden is not None:
            self.hidden = hidden
        self.record = record

    @property
    def packable(self) -> bool:
        """One unpadded sequence: it may share a packed layer call with other rows (:mod:`cola.core.packing`)."""
        return self.hidden.shape[0] == 1 and self.attention_mask is None

    def rotary(self, cm: ColaModel, layer_type: str):
        """The rotary (cos, sin) of these tokens for layers of ``layer_type``."""
        if layer_type not in self._rotaries:
            self._rotaries[layer_type] = rotary_embeddings(cm, self.hidden, self.position_ids, layer_type)
        return self._rotaries[layer_type]

    def mask(self, cm: ColaModel, layer_type: str):
        """The attention mask of these tokens for layers of ``layer_type``: a fresh prompt's (no cache), or one
        sized from the row's cache, so :func:`run_segments` builds every mask before any layer writes a slot."""
        if layer_type not in self._masks:
            if layer_type not in MASK_FUNCTIONS:
                raise NotImplementedError(f"attention type {layer_type!r} is not supported by the chain executor")
            config = chain_config(cm, chain_layer_types(cm, self.row.chain))
            self._masks[layer_type] = MASK_FUNCTIONS[layer_type](
                config=config, inputs_embeds=self.hidden, attention_mask=self.attention_mask,
                cache=None if self.prefill else self.row.cache, position_ids=self.position_ids)
        return self._masks[layer_type]


def run_segments(cm: ColaModel, segments: list[Segment]) -> None:
    """Run every segment through the rest of its row's chain, in place (``segment.hidden`` ends as the last
    position's output); the one layer loop of CoLa. Chain position ``p`` of a row uses its cache slot ``p``.

    A step is scheduled by layer: among the segments' next chain positions, the lowest layer index runs next, for
    every segment whose next layer it is. Unpadded rows of a layer run together in one call, packed end to end
    (:func:`cola.core.packing.run_packed`), where the model's packed attention mode packs that layer's type
    (:func:`cola.core.packing.packs`); any other runs alone. One segment alone is thus the plain loop
    over its chain positions, and several get the same results up to the rounding of packed matrix products."""
    for seg in segments:
        for layer_type in dict.fromkeys(chain_layer_types(cm, seg.row.chain)[seg.start :]):
            seg.mask(cm, layer_type)
    configs, types = attention_configs(cm) if len(segments) > 1 else [], cm.layer_types
    mode = packed_mode(cm)
    packing = {t: packs(cm, mode, t) for t in set(types)}
    while True:
        waiting = [(seg.row.chain[seg.position], seg) for seg in segments if not seg.done]
        if not waiting:
            return
        layer = min(index for index, _ in waiting)
        group = [seg for index, seg in waiting if index == layer]
        packed = [seg for seg in group if seg.packable] if packing[types[layer]] else []
        if len(packed) > 1:
            run_packed(cm, layer, packed, configs, mode)
        together = {id(seg) for seg in packed} if len(packed) > 1 else set()
        for seg in group:
            if id(seg) not in together:
                _run_one(cm, layer, types[layer], seg)
            seg.position += 1


def _run_one(cm: ColaModel, layer: int, layer_type: str, seg: Segment) -> None:
    """One segment through one decoder layer, writing its row's slot of the current chain position."""
    slot = SlotCache(seg.row.cache, seg.position)
    seg.hidden = cm.layers[layer](
        seg.hidden, attention_mask=seg.mask(cm, layer_type), position_embeddings=seg.rotary(cm, layer_type),
        position_ids=seg.position_ids, cache=slot, use_cache=True)
    if seg.record is not None:
        seg.record(seg.position, seg.hidden, *slot.written)


def embed(cm: ColaModel, input_ids: torch.Tensor) -> torch.Tensor:
    """The decoder's input: token embeddings, times the embedding multiplier where the model has one (Granite)."""
    hidden = cm.decoder.embed_tokens(input_ids)
    multiplier = cm.family.read(cm.config, "embedding_multiplier")
    return hidden * multiplier if multiplier is not None else hidden


def lm_head(cm: ColaModel, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm, output projection and, where the model has them, logit scaling (Granite) and soft-capping."""
    logits = cm.model.lm_head(cm.decoder.norm(hidden))
    scaling = cm.family.read(cm.config, "logits_scaling")
    if scaling is not None:
        logits = logits / scaling
    cap = cm.family.read(cm.config, "final_softcapping")
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
    prefix: PrefixCache | None = None,
) -> torch.Tensor:
    """Logits (batch, tokens, vocab) of ``input_ids`` run through ``chain``.

    ``attention_mask`` covers cached and new tokens (left padding); positions follow the unpadded tokens. With a
    ``cache`` (from :func:`new_cache`) the new keys and values are appended, one slot per chain position; without
    one, a fresh cache is used and dropped. ``logits_to_keep=k`` computes logits for the last ``k`` tokens only.
    ``prefix`` is the :class:`~cola.core.prefix_cache.PrefixCache` of the prompt ``cache`` holds: where earlier chains
    ran these same inputs after it, the longest such chain prefix is taken from it and the rest is cached in turn
    (:meth:`~cola.core.prefix_cache.PrefixCache.resume_after`); every position computes as it would without it.
    """
    if prefix is not None and cache is None:
        raise ValueError("a prefix cache serves inputs that continue its prompt: pass the prompt's cache")
    cache = cache if cache is not None else new_cache(cm, chain)
    past = cache.get_seq_length()
    if position_ids is None and attention_mask is not None:
        position_ids = positions_from_mask(attention_mask, input_ids.shape[1])
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # nothing padded: lets SDPA take its causal fast path, as HF generate does
    seg = Segment(Row(chain, cache, past), embed(cm, input_ids), attention_mask=attention_mask,
                  position_ids=position_ids)
    if prefix is not None:
        for layer_type in dict.fromkeys(chain_layer_types(cm, chain)):
            seg.mask(cm, layer_type)  # from the cache as the prompt left it, before resumed slots extend it
        seg.resume(*prefix.resume_after(chain.layers, input_ids, attention_mask, cache))
    run_segments(cm, [seg])
    hidden = seg.hidden[:, -logits_to_keep:] if logits_to_keep else seg.hidden
    return lm_head(cm, hidden)


def prompt_segment(cm: ColaModel, chain: Chain, input_ids: torch.Tensor, prefix: PrefixCache | None = None) -> Segment:
    """A new row's prefill of ``input_ids`` (1, length) through ``chain``: with a prefix cache of this prompt, the
    longest cached chain prefix fills the first slots and only the rest is left to run (and cached in turn). The
    computation of every position is the same as without it, so the results are too."""
    row = Row(chain, new_cache(cm, chain))
    if prefix is None:
        return Segment(row, embed(cm, input_ids))
    start, hidden, record = prefix.resume(chain.layers, input_ids, row.cache)
    if hidden is None:
        hidden = embed(cm, input_ids)
    return Segment(row, hidden, start=start, record=record)


@torch.inference_mode()
def advance(cm: ColaModel, segments: list[Segment]) -> torch.Tensor:
    """Run every segment through the rest of its row's chain (:func:`run_segments`); returns the last token's logits
    (segments, vocab) and advances every row's length by its segment's tokens."""
    run_segments(cm, segments)
    for seg in segments:
        seg.row.length += seg.hidden.shape[1]
    logits = lm_head(cm, torch.cat([seg.hidden[:, -1:] for seg in segments]))[:, -1]
    check_finite(logits, [seg.row.chain for seg in segments])
    return logits


def check_finite(logits: torch.Tensor, chains: Sequence[Chain]) -> None:
    """Raise :class:`~cola.errors.NonFiniteError` when a row of ``logits`` (one row per chain of ``chains``) holds NaN
    or inf, never answering from it (argmax of NaN logits is token 0); ``row`` on the error says which,
    for the caller to name its input."""
    finite = torch.isfinite(logits).reshape(logits.shape[0], -1).all(-1)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0])
        err = NonFiniteError(f"non-finite logits (NaN or inf) from chain {chains[row]}")
        err.row = row
        raise err


@torch.inference_mode()
def prompt_hidden(cm: ColaModel, chain: Chain, input_ids: torch.Tensor,
                  prefix: PrefixCache | None = None) -> torch.Tensor:
    """The hidden states (1, length, hidden) of the prompt ``input_ids`` (1, length) after running ``chain``, through
    ``prefix`` (this prompt's :class:`~cola.core.prefix_cache.PrefixCache`) when given."""
    segment = prompt_segment(cm, chain, input_ids, prefix)
    run_segments(cm, [segment])
    return segment.hidden


@torch.inference_mode()
def prefill(
    cm: ColaModel, chain: Chain, input_ids: torch.Tensor, prefix: PrefixCache | None = None
) -> tuple[torch.Tensor, DynamicCache]:
    """Run one unpadded prompt ``input_ids`` (1, length) through ``chain`` into a new cache, reusing the work of
    earlier chains held by ``prefix`` (a :class:`~cola.core.prefix_cache.PrefixCache` of this prompt); returns the last
    token's logits (1, 1, vocab) and the cache."""
    seg = prompt_segment(cm, chain, input_ids, prefix)
    return advance(cm, [seg])[:, None], seg.row.cache


def check_exact(cm: ColaModel, tokens: int = 16) -> float:
    """Run the full chain and the model's own forward on a fixed probe of ``tokens`` tokens; returns the largest
    logit difference, or raises :class:`~cola.errors.ModelLoadError` when it exceeds the dtype's rounding (1e-4 of
    the largest logit in float32, 2e-2 in 16-bit types): the executor would not compute what the model computes
    (a forward that scales or adds something CoLa does not know of)."""
    ids = (torch.arange(tokens, device=cm.device) * 7 + 3).remainder(cm.config.vocab_size)[None]
    with torch.inference_mode():
        expected = cm.model(ids).logits.float()
    got = forward(cm, Chain.full(cm.depth), ids).float()
    if not bool(torch.isfinite(expected).all() and torch.isfinite(got).all()):
        raise NonFiniteError(f"{cm.name!r}: the model's own forward gives non-finite logits (NaN or inf) on the "
                             "load-time probe: its weights hold NaN or inf values (a corrupt file?) or the dtype "
                             f"{str(cm.dtype).removeprefix('torch.')} overflows; reinstall or re-download the weights, "
                             "or try --dtype float32")
    diff = float((got - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    tolerance = (1e-4 if cm.dtype == torch.float32 else 2e-2) * scale
    if not diff <= tolerance:
        raise ModelLoadError(
            f"{cm.name!r} ({cm.config.model_type}): the full chain run by CoLa differs from the model's own forward by "
            f"up to {diff:.3g} in the logits (allowed {tolerance:.3g} in {str(cm.dtype).removeprefix('torch.')}); its "
            "layers cannot be run as separate modules exactly, so it is refused")
    return diff
