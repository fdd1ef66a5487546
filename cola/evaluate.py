"""Evaluate chains on a task's samples: prompts as the study asked them, generation or option scoring, grading."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from .chain import Chain
from .generation import generate
from .models import ColaModel
from .reuse import PrefixCache
from .scoring import OptionInputs, OptionScores, option_inputs, score_inputs
from .tasks import Sample, Task

MODES = ("generate", "score")
SCORE_STYLES = ("lmeval", "chat")


@dataclass
class Outcome:
    """One sample answered through one chain."""

    id: str
    chain: str
    prompt: str
    output: str | list[float]  # generated text, or per-option log-likelihoods in score mode
    answer: str | None
    gold: str
    correct: bool
    margin: float | None = None  # score mode: gold log-likelihood minus the best other option's
    answer_norm: str | None = None  # score mode: the acc_norm choice
    correct_norm: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Evaluator:
    """Asks one task's samples through any chain of one model.

    ``mode`` is ``generate`` (the model writes its answer, graded by extraction) or ``score`` (multiple choice only:
    options ranked by log-likelihood through the chain). ``score_style`` ``lmeval`` scores ``Question: ..\\nAnswer:``
    against `` {option text}`` with no chat template, as lm-evaluation-harness's ARC task; ``chat`` scores each choice
    label as the assistant's reply to the chat prompt that lists the options.
    """

    cm: ColaModel
    task: Task
    mode: str = "generate"
    chat: bool = True
    score_style: str = "lmeval"
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in self.task.modes:
            raise ValueError(f"task {self.task.name!r} has modes {self.task.modes}, not {self.mode!r}")
        if self.score_style not in SCORE_STYLES:
            raise ValueError(f"score style must be one of {SCORE_STYLES}, not {self.score_style!r}")

    def prompt(self, sample: Sample) -> str:
        """The text the model reads (generate mode, or the scoring context)."""
        if self.mode == "score" and self.score_style == "lmeval":
            return f"Question: {sample.question}\nAnswer:"
        return self.cm.format_prompt(self.task.prompt(sample), self.chat)

    def evaluate(self, chain: Chain, samples: Sequence[Sample]) -> list[Outcome]:
        """Outcomes of a batch of samples through ``chain`` (one batched generation, or one scoring pass each)."""
        if self.mode == "score":
            return [self._score(chain, s) for s in samples]
        return self._generate(chain, samples)

    def evaluate_one(self, chain: Chain, sample: Sample, prefix: PrefixCache | None = None) -> Outcome:
        """One sample through ``chain``; ``prefix`` (one :class:`~cola.reuse.PrefixCache` per sample, kept across
        the chains of a search) lets its prompt reuse the work of chains that share a prefix with this one. The
        outcome is the same with or without it."""
        if self.mode == "score":
            return self._score(chain, sample, prefix)
        return self._generate(chain, [sample], prefix)[0]

    def prompt_ids(self, sample: Sample) -> torch.Tensor:
        """The token ids (1, length) of the sample's prompt in generate mode."""
        return self._encode([self.prompt(sample)])[0]

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask of already formatted prompts (a chat template writes its own special tokens)."""
        templated = self.chat and self.cm.has_chat_template
        batch = self.cm.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not templated)
        return batch["input_ids"].to(self.cm.device), batch["attention_mask"].to(self.cm.device)

    def _generate(self, chain: Chain, samples: Sequence[Sample], prefix: PrefixCache | None = None) -> list[Outcome]:
        prompts = [self.prompt(s) for s in samples]
        input_ids, attention_mask = self._encode(prompts)
        outs = generate(
            self.cm, chain, input_ids, attention_mask,
            max_new_tokens=self.max_new_tokens or self.task.max_new_tokens,
            is_done=lambda b, text: self.task.is_done(text, samples[b]),
            prefix=prefix,
        )
        return [self.grade_text(chain, s, prompt, out.text) for s, prompt, out in zip(samples, prompts, outs)]

    def grade_text(self, chain: Chain, sample: Sample, prompt: str, text: str) -> Outcome:
        """The outcome of ``text``, generated through ``chain`` for ``sample``."""
        answer = self.task.extract(text, sample)
        return Outcome(sample.id, str(chain), prompt, text, answer, sample.gold, bool(self.task.grade(answer, sample)))

    def option_inputs(self, sample: Sample, prompt: str) -> OptionInputs:
        """Score mode: the sample's options as token ids after its ``prompt`` (:meth:`prompt`), the shared context
        first."""
        if self.score_style == "lmeval":  # lm-eval's target delimiter " "; it adds BOS for Gemma only
            options, delimiter = [text for _, text in sample.choices], " "
            special = self.cm.config.model_type.startswith("gemma")
        else:  # the chat prompt ends where the assistant's reply begins
            options, delimiter, special = list(sample.labels), "", False
        return option_inputs(self.cm, prompt, options, special, delimiter)

    def grade_scores(self, chain: Chain, sample: Sample, prompt: str, scores: OptionScores) -> Outcome:
        """The outcome of the options' log-likelihoods after ``prompt`` through ``chain``."""
        gold = sample.gold_index
        others = [lp for i, lp in enumerate(scores.logprobs) if i != gold]
        answer, answer_norm = sample.labels[scores.best], sample.labels[scores.best_norm]
        return Outcome(
            sample.id, str(chain), prompt, scores.logprobs, answer, sample.gold, answer == sample.gold,
            margin=scores.logprobs[gold] - max(others), answer_norm=answer_norm,
            correct_norm=answer_norm == sample.gold,
        )

    def _score(self, chain: Chain, sample: Sample, prefix: PrefixCache | None = None) -> Outcome:
        prompt = self.prompt(sample)
        scores = score_inputs(self.cm, chain, self.option_inputs(sample, prompt), prefix)
        return self.grade_scores(chain, sample, prompt, scores)


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))
