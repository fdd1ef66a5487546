"""Label-free confidence of one chain's answer, in [0, 1].

Score mode, from the softmax over the options' log-likelihoods (per character of the option with ``norm``, as
lm-eval's ``acc_norm`` ranks them): ``max_prob`` (the top option's probability), ``margin`` (the top two's
difference) and ``certainty`` (1 - entropy / log(options)). Generate mode: ``answer_prob``, the geometric mean of the
answer's token probabilities (from the decoding loop, no second pass), 0 when no answer could be extracted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..evaluation.evaluator import Outcome


def option_probabilities(logprobs: Sequence[float], n_chars: Sequence[int] | None = None) -> list[float]:
    """Softmax over the options of their log-likelihoods (divided by their lengths in characters when given)."""
    values = [lp / max(n, 1) for lp, n in zip(logprobs, n_chars)] if n_chars is not None else list(logprobs)
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    total = sum(weights)
    return [w / total for w in weights]


def confidence(outcome: Outcome, signal: str, n_chars: Sequence[int] | None = None) -> float:
    """``signal`` (module doc) of ``outcome``; ``n_chars`` (score mode, ``norm``) normalises per character."""
    if signal == "answer_prob":
        if outcome.answer is None or outcome.mean_logprob is None:
            return 0.0
        return math.exp(outcome.mean_logprob)
    probs = sorted(option_probabilities(outcome.output, n_chars), reverse=True)
    if signal == "max_prob":
        return probs[0]
    if signal == "margin":
        return probs[0] - (probs[1] if len(probs) > 1 else 0.0)
    if signal == "certainty":
        if len(probs) < 2:
            return 1.0
        entropy = -sum(p * math.log(p) for p in probs if p > 0)
        return max(0.0, 1.0 - entropy / math.log(len(probs)))
    raise ValueError(f"unknown signal {signal!r}")
