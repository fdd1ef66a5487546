"""Answer scoring through a chain: option log-likelihoods (lm-evaluation-harness ``acc`` / ``acc_norm``) and
next-token log-probabilities restricted to label tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .chain import Chain
from .errors import NonFiniteError
from .executor import advance, forward, prompt_segment
from .models import ColaModel
from .reuse import PrefixCache


@dataclass
class OptionScores:
    """Log-likelihood of each answer option as a continuation of the context."""

    logprobs: list[float]  # sum over the option's tokens
    n_chars: list[int]  # option length in characters (without the delimiter), lm-eval's acc_norm denominator
    n_tokens: list[int]

    @property
    def best(self) -> int:
        """Index of the option with the highest summed log-likelihood (``acc``)."""
        return max(range(len(self.logprobs)), key=lambda i: self.logprobs[i])

    @property
    def best_norm(self) -> int:
        """Index of the option with the highest log-likelihood per character (``acc_norm``)."""
        return max(range(len(self.logprobs)), key=lambda i: self.logprobs[i] / max(self.n_chars[i], 1))


def option_token_ids(
    cm: ColaModel, context: str, options: Sequence[str], add_special_tokens: bool = False
) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) per option, split as lm-eval does: the whole string is encoded and the
    context's tokens are cut off, so the continuation tokens are those the model would really read."""
    n_space = len(context) - len(context.rstrip(" "))
    if n_space:  # lm-eval moves trailing context spaces onto the continuation
        context, options = context[:-n_space], [" " * n_space + o for o in options]
    tok = cm.tokenizer
    ctx = tok(context, add_special_tokens=add_special_tokens)["input_ids"]
    pairs = []
    for option in options:
        whole = tok(context + option, add_special_tokens=add_special_tokens)["input_ids"]
        pairs.append((whole[: len(ctx)], whole[len(ctx) :]))
    return pairs


@dataclass
class OptionInputs:
    """One question's options as token ids: the ``context`` all inputs share (run once), each option's remaining
    ``suffix`` of inputs, and the (context, continuation) split of each option."""

    pairs: list[tuple[list[int], list[int]]]
    context: list[int]
    suffixes: list[list[int]]
    n_chars: list[int]

    @property
    def positions(self) -> int:
        """The positions the longest option's input takes: the shared context and its own suffix."""
        return len(self.context) + max(len(x) for x in self.suffixes)

    def without_first(self, drop: int) -> OptionInputs:
        """The same options after a context without its first ``drop`` tokens (``drop`` below the shared part)."""
        return OptionInputs([(ctx[drop:], cont) for ctx, cont in self.pairs], self.context[drop:], self.suffixes,
                            self.n_chars)


def option_inputs(
    cm: ColaModel, context: str, options: Sequence[str], add_special_tokens: bool = False, delimiter: str = ""
) -> OptionInputs:
    """Tokenise a question's options for scoring: each continuation is ``delimiter + option``; the model reads
    context + continuation[:-1], and the longest token prefix all inputs share runs once."""
    pairs = option_token_ids(cm, context, [delimiter + o for o in options], add_special_tokens)
    if any(not cont for _, cont in pairs):
        raise ValueError("an answer option encodes to no tokens")
    inputs = [ctx + cont[:-1] for ctx, cont in pairs]
    shared = min(len(ctx) for ctx, _ in pairs)
    while any(x[:shared] != inputs[0][:shared] for x in inputs):
        shared -= 1
    if shared < 1:
        raise ValueError("the options share no context token")
    return OptionInputs(pairs, inputs[0][:shared], [x[shared:] for x in inputs], [len(o) for o in options])


@torch.inference_mode()
def score_options(
    cm: ColaModel,
    chain: Chain,
    context: str,
    options: Sequence[str],
    add_special_tokens: bool = False,
    prefix: PrefixCache | None = None,
    delimiter: str = "",
) -> OptionScores:
    """Score every option of one question through ``chain``, running the shared prompt once.

    The tokens all options' inputs share (the context) go through the chain once, batch 1 (reusing earlier chains'
    work when a :class:`~cola.reuse.PrefixCache` of them is given); then the options' own tokens run as one
    right-padded batch on a copy of that cache per option (:func:`finish_scores`). Each continuation is
    ``delimiter + option``; as in lm-eval, ``acc_norm`` divides by the option's length without the delimiter.
    """
    inputs = option_inputs(cm, context, options, add_special_tokens, delimiter)
    return score_many(cm, [(chain, inputs, prefix)])[0]


@torch.inference_mode()
def score_many(
    cm: ColaModel, requests: Sequence[tuple[Chain, OptionInputs, PrefixCache | None]]
) -> list[OptionScores]:
    """Option scores of many (chain, tokenised options, prefix cache) requests: every request's shared context
    prefills in the same layer calls (packed, :func:`cola.executor.advance`), then each finishes its options
    (:func:`finish_scores`). One request alone runs its chain's layers in order, exactly."""
    segments = [prompt_segment(cm, chain, torch.tensor([inputs.context], device=cm.device), prefix)
                for chain, inputs, prefix in requests]
    logits = advance(cm, segments)
    scores = []
    for b, ((chain, inputs, _), seg) in enumerate(zip(requests, segments)):
        try:
            scores.append(finish_scores(cm, chain, inputs, logits[b : b + 1], seg.row.cache))
        except NonFiniteError as err:
            err.row = b
            raise
    return scores


@torch.inference_mode()
def finish_scores(
    cm: ColaModel, chain: Chain, inputs: OptionInputs, last_logits: torch.Tensor, cache: DynamicCache
) -> OptionScores:
    """The options' log-likelihoods once the shared context has run through ``chain``: ``last_logits`` (1, vocab)
    at its last token and its ``cache``, which the options' own tokens (if any) extend, one copy per option."""
    device, shared = cm.device, len(inputs.context)
    rows = [last_logits] * len(inputs.pairs)  # logits at input position shared-1 .. end, per option
    width = max(len(x) for x in inputs.suffixes)
    if width:
        for layer in cache.layers:
            layer.batch_repeat_interleave(len(inputs.suffixes))
        # right padding is masked and never read, so its id does not matter; 0 is in every vocabulary (a tokenizer's
        # pad token may be an added one past the embedding matrix)
        ids = torch.tensor([x + [0] * (width - len(x)) for x in inputs.suffixes], device=device)
        mask = torch.tensor([[1] * (shared + len(x)) + [0] * (width - len(x)) for x in inputs.suffixes],
                            device=device)
        logits = forward(cm, chain, ids, mask, cache=cache)
        rows = [torch.cat([last_logits, logits[b, : len(x)]]) for b, x in enumerate(inputs.suffixes)]
    sums = []
    for (ctx, cont), row in zip(inputs.pairs, rows):
        logprobs = torch.log_softmax(row.float(), dim=-1)
        at = torch.arange(len(cont), device=device) + len(ctx) - shared
        sums.append(float(logprobs[at, torch.tensor(cont, device=device)].sum()))
    if not all(math.isfinite(x) for x in sums):
        raise NonFiniteError(f"non-finite option log-likelihoods (NaN or inf) from chain {chain}")
    return OptionScores(sums, inputs.n_chars, [len(c) for _, c in inputs.pairs])
