"""Answer scoring through a chain: option log-likelihoods (lm-evaluation-harness ``acc`` / ``acc_norm``) and
next-token log-probabilities restricted to label tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .chain import Chain
from .executor import forward
from .models import ColaModel


@dataclass
class OptionScores:
    """Log-likelihood of each answer option as a continuation of the context."""

    logprobs: list[float]  # sum over the option's tokens
    n_chars: list[int]  # option length in characters, lm-eval's acc_norm denominator
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


@torch.inference_mode()
def score_options(
    cm: ColaModel, chain: Chain, context: str, options: Sequence[str], add_special_tokens: bool = False
) -> OptionScores:
    """Score every option of one question in a single batched, left-padded pass through ``chain``."""
    pairs = option_token_ids(cm, context, options, add_special_tokens)
    if any(not cont for _, cont in pairs):
        raise ValueError("an answer option encodes to no tokens")
    inputs = [(ctx + cont)[:-1] for ctx, cont in pairs]
    width = max(len(x) for x in inputs)
    pad = cm.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in inputs], device=cm.device)
    attention_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in inputs], device=cm.device)
    n_cont = max(len(cont) for _, cont in pairs)
    logprobs = torch.log_softmax(
        forward(cm, chain, input_ids, attention_mask, logits_to_keep=n_cont).float(), dim=-1
    )
    sums = []
    for b, (_, cont) in enumerate(pairs):
        rows = logprobs[b, n_cont - len(cont) :]
        sums.append(float(rows.gather(-1, torch.tensor(cont, device=cm.device)[:, None]).sum()))
    return OptionScores(sums, [len(o) for o in options], [len(c) for _, c in pairs])


@torch.inference_mode()
def next_token_logprobs(
    cm: ColaModel,
    chain: Chain,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_ids: Sequence[int],
) -> torch.Tensor:
    """Log-probabilities (batch, len(token_ids)) of the next token, over the full vocabulary, at the given ids."""
    logits = forward(cm, chain, input_ids, attention_mask, logits_to_keep=1)[:, -1].float()
    return torch.log_softmax(logits, dim=-1)[:, list(token_ids)]
