"""Answer scoring through a chain: option log-likelihoods (lm-evaluation-harness ``acc`` / ``acc_norm``) and
next-token log-probabilities restricted to label tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..core.chain import Chain
from ..core.executor import advance, forward, prompt_segment
from ..core.models import ColaModel
from ..core.prefix_cache import PrefixCache
from ..errors import NonFiniteError


@dataclass
class OptionScores:
    """Log-likelihood of each answer option as a continuation of the context."""

    logprobs: list[float]  # sum over the option's tokens
    n_chars: list[int]  # option length in characters (without the delimiter), lm-eval's acc_norm denominator
    greedy: list[bool]  # whether greedy decoding after the context gives exactly the option's tokens (lm-eval's)

    @property
    def best(self) -> int:
        """Index of the option with the highest summed log-likelihood (``acc``)."""
        return max(range(len(self.logprobs)), key=lambda i: self.logprobs[i])

    @property
    def best_norm(self) -> int:
        """Index of the option with the highest log-likelihood per character (``acc_norm``)."""
        return max(range(len(self.logprobs)), key=lambda i: self.logprobs[i] / max(self.n_chars[i], 1))


def encode(cm: ColaModel, text: str, add_special_tokens: bool | None = None) -> list[int]:
    """Token ids of ``text`` as lm-evaluation-harness's ``hf`` backend encodes it: special tokens (BOS) as the
    tokenizer adds them by default (``add_special_tokens`` None), except to a text that already starts with the BOS
    token's text; or as ``add_special_tokens`` says."""
    tok = cm.tokenizer
    if add_special_tokens is None and tok.bos_token and text.startswith(tok.bos_token):
        add_special_tokens = False
    return tok(text, **({} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}))["input_ids"]


def prefix_token_id(cm: ColaModel) -> int:
    """The token an empty context is (lm-eval's ``prefix_token_id``): BOS, else EOS."""
    tok = cm.tokenizer
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


def option_token_ids(
    cm: ColaModel, context: str, options: Sequence[str], add_special_tokens: bool | None = None
) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) per option, split as lm-eval's ``TemplateLM`` does: trailing whitespace of
    the context moves onto the continuation; the context is encoded alone (:func:`encode`) and the continuation is what
    follows the context's length in the encoded whole string, so its tokens are those the model would really read. An empty context is the prefix
    token (:func:`prefix_token_id`) before the continuation encoded without special tokens."""
    if not context:
        first = prefix_token_id(cm)
        pairs = []
        for option in options:
            cont = encode(cm, option, False)
            pairs.append(([first], cont) if not cont or cont[0] != first else (cont[:1], cont[1:]))
        return pairs
    stripped = context.rstrip()
    if len(stripped) < len(context):
        context, options = stripped, [context[len(stripped):] + o for o in options]
    ctx = encode(cm, context, add_special_tokens)
    pairs = []
    for option in options:
        whole = encode(cm, context + option, add_special_tokens)
        pairs.append((ctx, whole[len(ctx) :]))  # lm-eval's: the context encoded alone, then the rest of the whole
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
    cm: ColaModel, context: str, options: Sequence[str], add_special_tokens: bool | None = None, delimiter: str = ""
) -> OptionInputs:
    """Tokenise a question's options for scoring: each continuation is ``delimiter + option``
    (:func:`option_token_ids`; :func:`inputs_of_pairs`)."""
    pairs = option_token_ids(cm, context, [delimiter + o for o in options], add_special_tokens)
    return inputs_of_pairs(pairs, [len(o) for o in options])


def inputs_of_pairs(pairs: Sequence[tuple[list[int], list[int]]], n_chars: Sequence[int]) -> OptionInputs:
    """The options of one context given as (context ids, continuation ids) pairs: the model reads context +
    continuation[:-1], and the longest token prefix all inputs share runs once."""
    pairs = [(list(ctx), list(cont)) for ctx, cont in pairs]
    if any(not cont for _, cont in pairs):
        raise ValueError("an answer option encodes to no tokens")
    inputs = [ctx + cont[:-1] for ctx, cont in pairs]
    shared = min(len(ctx) for ctx, _ in pairs)
    while any(x[:shared] != inputs[0][:shared] for x in inputs):
        shared -= 1
    if shared < 1:
        raise ValueError("the options share no context token")
    return OptionInputs(pairs, inputs[0][:shared], [x[shared:] for x in inputs], list(n_chars))


@torch.inference_mode()
def score_options(
    cm: ColaModel,
    chain: Chain,
    context: str,
    options: Sequence[str],
    add_special_tokens: bool | None = None,
    prefix: PrefixCache | None = None,
    delimiter: str = "",
) -> OptionScores:
    """Score every option of one question through ``chain``, running the shared prompt once.

    The tokens all options' inputs share (the context) go through the chain once, batch 1 (reusing earlier chains'
    work when a :class:`~cola.core.prefix_cache.PrefixCache` of them is given); then the options' own tokens run as one
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
    prefills in the same layer calls (packed, :func:`cola.core.executor.advance`), then each finishes its options
    (:func:`finish_scores`). One request alone runs its chain's layers in order, exactly."""
    segments = [prompt_segment(cm, chain, torch.tensor([inputs.context], device=cm.device), prefix)
                for chain, inputs, prefix in requests]
    logits = advance(cm, segments)
    scores = []
    for b, ((chain, inputs, prefix), seg) in enumerate(zip(requests, segments)):
        try:
            scores.append(finish_scores(cm, chain, inputs, logits[b : b + 1], seg.row.cache, prefix))
        except NonFiniteError as err:
            err.row = b
            raise
    return scores


@torch.inference_mode()
def finish_scores(
    cm: ColaModel, chain: Chain, inputs: OptionInputs, last_logits: torch.Tensor, cache: DynamicCache,
    prefix: PrefixCache | None = None,
) -> OptionScores:
    """The options' log-likelihoods once the shared context has run through ``chain``: ``last_logits`` (1, vocab)
    at its last token and its ``cache``, which the options' own tokens (if any) extend, one copy per option. With the
    context's ``prefix`` cache, the options' tokens reuse the chain prefix they ran on for earlier chains
    (:func:`~cola.core.executor.forward`), exactly."""
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
        logits = forward(cm, chain, ids, mask, cache=cache, prefix=prefix)
        rows = [torch.cat([last_logits, logits[b, : len(x)]]) for b, x in enumerate(inputs.suffixes)]
    sums, greedy = [], []
    for (ctx, cont), row in zip(inputs.pairs, rows):
        logprobs = torch.log_softmax(row.float(), dim=-1)
        at, cont = torch.arange(len(cont), device=device) + len(ctx) - shared, torch.tensor(cont, device=device)
        sums.append(float(logprobs[at, cont].sum()))
        greedy.append(bool((logprobs[at].argmax(dim=-1) == cont).all()))
    if not all(math.isfinite(x) for x in sums):
        raise NonFiniteError(f"non-finite option log-likelihoods (NaN or inf) from chain {chain}")
    return OptionScores(sums, inputs.n_chars, greedy)
