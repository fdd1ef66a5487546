"""Greedy KV-cached generation through chains, with EOS and stop strings: the one decoding loop of CoLa.

:class:`RowDecoder` decodes any number of (chain, prompt) requests together with continuous batching: a request joins
at any step, its prompt prefills (reusing its prefix cache) in the same layer calls as the other requests' decoding
tokens, and it leaves as soon as it stops. :func:`generate` is that loop for a batch of prompts through one chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..core.chain import Chain
from ..core.executor import Row, Segment, advance, embed, prompt_segment
from ..core.models import ColaModel
from ..core.prefix_cache import PrefixCache
from ..errors import NonFiniteError


@dataclass
class Generation:
    """What one prompt generated: new token ids (EOS included when reached) and their text."""

    tokens: list[int]
    text: str
    stop_reason: str  # "eos", "stop_string", "done" (``is_done`` said so) or "length"
    logprobs: list[float]  # each new token's log-probability under the chain's next-token distribution

    @property
    def mean_logprob(self) -> float:
        """The mean log-probability of the new tokens: the decoder's own confidence in what it wrote."""
        return sum(self.logprobs) / max(len(self.logprobs), 1)


def eos_ids(cm: ColaModel) -> set[int]:
    """The token ids that end a generation: the generation config's EOS ids and the tokenizer's."""
    ids = cm.model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if cm.tokenizer.eos_token_id is not None:
        ids.add(cm.tokenizer.eos_token_id)
    return ids


def stop_reason(
    cm: ColaModel,
    tokens: list[int],
    eos: set[int],
    stop_strings: Sequence[str],
    is_done: Callable[[str], bool] | None,
) -> str | None:
    """Why the generation ``tokens`` ends after its last token, or None while it goes on."""
    if tokens[-1] in eos:
        return "eos"
    if stop_strings or is_done:
        text = cm.tokenizer.decode(tokens, skip_special_tokens=True)
        if any(s in text for s in stop_strings):
            return "stop_string"
        if is_done is not None and is_done(text):
            return "done"
    return None


@dataclass
class _Request:
    key: object
    segment: Segment | None  # the prompt, until its prefill has run
    row: Row
    tokens: list[int]
    is_done: Callable[[str], bool] | None
    sampler: Sampler | None = None
    logprobs: list[float] = field(default_factory=list)


@dataclass
class Sampler:
    """Draw each next token from softmax(logits / temperature) with its own seeded generator, instead of greedily."""

    seed: int
    temperature: float = 1.0

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def draw(self, logits: torch.Tensor) -> int:
        """One token id from the distribution of ``logits`` (vocab,)."""
        probs = torch.softmax(logits.float().cpu() / self.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


class RowDecoder:
    """Greedy decoding with continuous batching: a request (chain, unpadded prompt) joins at any step; at the next
    step its prompt is prefilled (reusing its prefix cache) in the same layer calls as the other requests' decoding
    tokens, and it leaves as soon as it stops (EOS, a stop string, ``is_done(text)``, or ``max_new_tokens``).
    One request alone runs exactly its chain's layers in order; several give the same tokens up to the rounding of
    packed matrix products (:mod:`cola.core.packing`)."""

    def __init__(self, cm: ColaModel, max_new_tokens: int, stop_strings: Sequence[str] = ()) -> None:
        self.cm, self.max_new_tokens, self.stop_strings = cm, max_new_tokens, stop_strings
        self.eos = eos_ids(cm)
        self.active: list[_Request] = []
        self.finished: list[tuple[object, Generation]] = []

    def add(self, key: object, chain: Chain, input_ids: torch.Tensor, prefix: PrefixCache | None = None,
            is_done: Callable[[str], bool] | None = None, sampler: Sampler | None = None) -> None:
        """Queue ``input_ids`` (1, length) through ``chain``; ``key`` names the request when it finishes. With a
        ``sampler`` its tokens are drawn, else chosen greedily."""
        segment = prompt_segment(self.cm, chain, input_ids, prefix)
        self.active.append(_Request(key, segment, segment.row, [], is_done, sampler))

    def __len__(self) -> int:
        """Requests not finished yet."""
        return len(self.active)

    def step(self) -> list[tuple[object, Generation]]:
        """Prefill the new requests and decode one token of every other unfinished one; returns the requests
        finished since the last step."""
        going, self.active = self.active, []
        if going:
            decoding = [r for r in going if r.segment is None]
            if decoding:
                tokens = torch.tensor([r.tokens[-1] for r in decoding], device=self.cm.device)
                hidden = embed(self.cm, tokens[:, None])
                for b, request in enumerate(decoding):
                    request.segment = Segment(request.row, hidden[b : b + 1])
            try:
                logits = advance(self.cm, [r.segment for r in going])
            except NonFiniteError as err:
                err.key = going[err.row].key  # the caller names its input
                raise
            greedy = logits.argmax(-1).tolist()
            chosen = [greedy[b] if r.sampler is None else r.sampler.draw(logits[b]) for b, r in enumerate(going)]
            logprobs = torch.log_softmax(logits.float(), dim=-1)[torch.arange(len(going)), chosen].tolist()
            for request, token, logprob in zip(going, chosen, logprobs):
                request.segment = None
                request.logprobs.append(logprob)
                self._take(request, token)
        done, self.finished = self.finished, []
        return done

    def _take(self, request: _Request, token: int) -> None:
        request.tokens.append(token)
        reason = stop_reason(self.cm, request.tokens, self.eos, self.stop_strings, request.is_done)
        if reason is None and len(request.tokens) < self.max_new_tokens:
            self.active.append(request)
        else:
            text = self.cm.tokenizer.decode(request.tokens, skip_special_tokens=True)
            self.finished.append((request.key, Generation(request.tokens, text, reason or "length", request.logprobs)))


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
    truncate: bool = False,
) -> list[Generation]:
    """Greedy decoding of a (left-padded) batch of prompts through ``chain``, one KV slot per chain position.

    Each prompt runs unpadded as its own row (:class:`RowDecoder`), and stops at EOS, once its new text contains a
    stop string, or once ``is_done(b, text)`` is true for its batch index ``b`` (an answer that is complete).
    ``prefix`` (a :class:`~cola.core.prefix_cache.PrefixCache` of a single prompt) lets its prefill reuse earlier
    chains' work. A prompt that leaves fewer than ``max_new_tokens`` of the model's positions is refused
    (:meth:`~cola.core.models.ColaModel.context_drop`), or with ``truncate`` loses its first tokens.
    """
    if prefix is not None and input_ids.shape[0] != 1:
        raise ValueError("a prefix cache holds one unpadded prompt")
    decoder = RowDecoder(cm, max_new_tokens, stop_strings)
    for b in range(input_ids.shape[0]):
        ids = input_ids[b : b + 1] if attention_mask is None else input_ids[b : b + 1, attention_mask[b].bool()]
        ids = ids[:, cm.context_drop(ids.shape[1], max_new_tokens, truncate, f"prompt {b}") :]
        decoder.add(b, chain, ids, prefix, None if is_done is None else lambda text, b=b: is_done(b, text))
    results: dict[int, Generation] = {}
    while decoder:
        results.update(decoder.step())
    return [results[b] for b in range(input_ids.shape[0])]


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
