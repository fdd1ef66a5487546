"""Greedy, batched, KV-cached generation through a chain, with EOS and stop strings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .chain import Chain
from .executor import forward, prefill
from .models import ColaModel
from .reuse import PrefixCache


@dataclass
class Generation:
    """What one prompt generated: new token ids (EOS included when reached) and their text."""

    tokens: list[int]
    text: str
    stop_reason: str  # "eos", "stop_string", "done" (``is_done`` said so) or "length"


def eos_ids(cm: ColaModel) -> set[int]:
    """The token ids that end a generation: the generation config's EOS ids and the tokenizer's."""
    ids = cm.model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if cm.tokenizer.eos_token_id is not None:
        ids.add(cm.tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def generate(
    cm: ColaModel,
    chain: Chain,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    stop_strings: Sequence[str] = (),
    is_done: Callable[[int, str], bool] | None = None,
    prefix: PrefixCache | None = None,
) -> list[Generation]:
    """Greedy decoding of a left-padded batch through ``chain``, one KV slot per chain position.

    A sample stops at EOS, once its new text contains a stop string, or once ``is_done(b, text)`` is true for its batch index ``b`` (an answer
    that is complete); the batch stops when every sample has. Finished samples are padded, as HF generate does. ``prefix`` (a
    :class:`~cola.reuse.PrefixCache` of this one prompt) lets the prompt's prefill reuse earlier chains' work.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    batch_size = input_ids.shape[0]
    eos = eos_ids(cm)
    pad_id = cm.tokenizer.pad_token_id
    tokens: list[list[int]] = [[] for _ in range(batch_size)]
    reasons: list[str | None] = [None] * batch_size
    logits, cache = prefill(cm, chain, input_ids, attention_mask, prefix)
    for step in range(max_new_tokens):
        next_ids = logits[:, -1].argmax(-1)
        for b in range(batch_size):
            if reasons[b] is not None:
                next_ids[b] = pad_id
                continue
            tokens[b].append(int(next_ids[b]))
            reasons[b] = stop_reason(cm, tokens[b], eos, stop_strings, is_done, b)
        if step == max_new_tokens - 1 or all(r is not None for r in reasons):
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch_size, 1)], dim=1)
        logits = forward(cm, chain, next_ids[:, None], attention_mask, cache=cache, logits_to_keep=1)
    return [
        Generation(t, cm.tokenizer.decode(t, skip_special_tokens=True), r or "length") for t, r in zip(tokens, reasons)
    ]


def stop_reason(
    cm: ColaModel,
    tokens: list[int],
    eos: set[int],
    stop_strings: Sequence[str],
    is_done: Callable[[int, str], bool] | None,
    b: int,
) -> str | None:
    """Why the generation ``tokens`` of batch row ``b`` ends after its last token, or None while it goes on."""
    if tokens[-1] in eos:
        return "eos"
    if stop_strings or is_done:
        text = cm.tokenizer.decode(tokens, skip_special_tokens=True)
        if any(s in text for s in stop_strings):
            return "stop_string"
        if is_done is not None and is_done(b, text):
            return "done"
    return None


def generate_text(
    cm: ColaModel,
    chain: Chain,
    prompts: Sequence[str],
    chat: bool = True,
    **kwargs,
) -> list[Generation]:
    """Format (chat template when ``chat``), encode and greedily generate for a batch of prompts."""
    input_ids, attention_mask = cm.encode(prompts, chat)
    return generate(cm, chain, input_ids, attention_mask, **kwargs)
