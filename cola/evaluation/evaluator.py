"""Evaluate chains on a task's samples: prompts as the study asked them, generation or option scoring, grading."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from ..core.chain import Chain
from ..core.models import ColaModel, ContextTooLong
from ..core.prefix_cache import PrefixCache
from ..errors import NonFiniteError, UsageError
from ..inference.generation import Generation, RowDecoder, Sampler
from ..inference.scoring import OptionInputs, OptionScores, option_inputs, score_many
from ..tasks import Sample, Task
from .config import EvalConfig



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
    tokens: int | None = None  # generate mode: tokens decoded
    mean_logprob: float | None = None  # generate mode: mean log-probability of those tokens

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Evaluator:
    """Asks one task's samples through any chain of one model.

    ``config`` says how (:class:`EvalConfig`): in ``generate`` mode the model writes its answer, graded by extraction;
    in ``score`` mode (multiple choice only) options are ranked by log-likelihood through the chain. ``score_style``
    ``lmeval`` scores the task's options after its context (its ``score_format``: ``Question: ..\\nAnswer:`` and
    `` {option text}`` as lm-evaluation-harness's ARC task, CommonsenseQA's listed options and labels as its
    ``commonsense_qa``) with no chat template; ``chat`` scores each choice label as the assistant's reply to the chat
    prompt that lists the options. A ``verbatim`` task (lm-eval's) gives the model's whole input itself.
    """

    cm: ColaModel
    task: Task
    config: EvalConfig = EvalConfig()

    def __post_init__(self) -> None:
        self._prepared: dict[Sample, Prepared] = {}
        if self.config.mode not in self.task.modes:
            raise UsageError(f"task {self.task.name!r} has modes {self.task.modes}, not {self.config.mode!r}")

    def prompt(self, sample: Sample) -> str:
        """The text the model reads (generate mode, or the scoring context). A model with a chat template reads the
        task's prompt as a user turn (``chat``); a base model, which has none, reads it in the completion format of
        question-answer text, ``Question: ...\nAnswer:``, so that what it continues with is the answer."""
        if self.config.mode == "score" and (self.config.score_style == "lmeval" or self.task.verbatim):
            return self.task.score_format(sample)[0]
        if self.task.verbatim:
            return self.task.prompt(sample)
        if not self.cm.has_chat_template:
            return f"Question: {self.task.prompt(sample)}\nAnswer:"
        return self.cm.format_prompt(self.task.prompt(sample), self.config.chat)

    def prepare(self, sample: Sample) -> Prepared:
        """The sample's prompt and its token ids (score mode: the options, tokenised), made once per sample and
        kept for the next chains asked on it (a search asks hundreds)."""
        prepared = self._prepared.get(sample)
        if prepared is None:
            if len(self._prepared) >= 4096:
                self._prepared.clear()
            prompt, what = self.prompt(sample), f"sample {sample.id!r}"
            if self.config.mode == "score":
                inputs = self.option_inputs(sample, prompt)
                reserve = inputs.positions - len(inputs.context)
                drop = self.cm.context_drop(len(inputs.context), reserve, self.config.truncate,
                                            f"{what} (with its longest option)")
                prepared = Prepared(prompt, None, inputs.without_first(drop) if drop else inputs)
            else:
                ids = self.cm.tokenize([prompt], self.config.chat and not self.task.verbatim)[0]
                budget = self.config.max_new_tokens or self.task.max_new_tokens
                prepared = Prepared(prompt, ids[:, self.cm.context_drop(ids.shape[1], budget, self.config.truncate,
                                                                        what) :],
                                    None)
            self._prepared[sample] = prepared
        return prepared

    def check(self, samples: Sequence[Sample]) -> None:
        """Prepare every sample now (:meth:`prepare`), so that one too long for the model fails before any work. A
        sample that cannot be prepared for another reason (an option that encodes to no token) fails when it is asked,
        as it would without this check: a search on Ray reports it and goes on with the others."""
        for sample in samples:
            try:
                self.prepare(sample)
            except ContextTooLong:
                raise
            except ValueError:
                continue

    def prompt_ids(self, sample: Sample) -> torch.Tensor:
        """The token ids (1, length) every chain runs over for ``sample``: the prompt, or in score mode the context
        the options share."""
        prepared = self.prepare(sample)
        return prepared.ids if prepared.ids is not None else torch.tensor([prepared.inputs.context],
                                                                          device=self.cm.device)

    def requests(self) -> Requests:
        """An empty set of (chain, sample) requests to run together (:class:`Requests`)."""
        return Requests(self)

    def evaluate(self, chain: Chain, samples: Sequence[Sample],
                 prefixes: Sequence[PrefixCache | None] | None = None) -> list[Outcome]:
        """Outcomes of ``samples`` through ``chain``, all run together. ``prefixes`` (one
        :class:`~cola.core.prefix_cache.PrefixCache` per sample, kept across the chains asked on it) let a prompt reuse
        the work of chains that share a prefix with this one; the outcome is the same with or without them."""
        requests = self.requests()
        for b, sample in enumerate(samples):
            requests.submit(b, chain, sample, prefixes[b] if prefixes is not None else None)
        outcomes = requests.drain()
        return [outcomes[b] for b in range(len(samples))]

    def evaluate_many(self, chain: Chain, samples: Sequence[Sample], batch: int,
                      prefixes: Sequence[PrefixCache | None] | None = None,
                      progress: Callable[[list[Outcome]], None] | None = None) -> list[Outcome]:
        """:meth:`evaluate` ``batch`` samples at a time (``batch=1``: each alone, exactly); ``progress(outcomes)``
        after each batch."""
        outcomes: list[Outcome] = []
        for i in range(0, len(samples), batch):
            done = self.evaluate(chain, samples[i : i + batch], None if prefixes is None else prefixes[i : i + batch])
            outcomes.extend(done)
            if progress is not None:
                progress(done)
        return outcomes

    def evaluate_assigned(self, chains: Sequence[Chain], samples: Sequence[Sample], batch: int,
                          prefixes: Sequence[PrefixCache | None] | None = None,
                          progress: Callable[[list[Outcome]], None] | None = None) -> list[Outcome]:
        """Each sample through its own chain (``chains[i]`` for ``samples[i]``): the samples of one chain run
        together, ``batch`` at a time (:meth:`evaluate_many`); outcomes in the samples' order."""
        outcomes: dict[int, Outcome] = {}
        for chain in dict.fromkeys(chains):
            members = [i for i, c in enumerate(chains) if c == chain]
            done = self.evaluate_many(chain, [samples[i] for i in members], batch,
                                      None if prefixes is None else [prefixes[i] for i in members], progress)
            outcomes.update(zip(members, done))
        return [outcomes[i] for i in range(len(samples))]

    def evaluate_one(self, chain: Chain, sample: Sample, prefix: PrefixCache | None = None) -> Outcome:
        """One sample through ``chain`` (:meth:`evaluate`)."""
        return self.evaluate(chain, [sample], [prefix])[0]

    def grade_text(self, chain: Chain, sample: Sample, prompt: str, generation: Generation) -> Outcome:
        """The outcome of ``generation``, decoded through ``chain`` for ``sample``."""
        answer = self.task.extract(generation.text, sample)
        return Outcome(sample.id, str(chain), prompt, generation.text, answer, sample.gold,
                       bool(self.task.grade(answer, sample)), tokens=len(generation.tokens),
                       mean_logprob=generation.mean_logprob)

    def option_inputs(self, sample: Sample, prompt: str) -> OptionInputs:
        """Score mode: the sample's options as token ids after its ``prompt`` (:meth:`prompt`), the shared context
        first."""
        if self.config.score_style == "lmeval" or self.task.verbatim:  # special tokens as the tokenizer adds them
            options, delimiter, special = self.task.score_format(sample)[1], self.task.target_delimiter, None
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
            margin=scores.logprobs[gold] - max(others) if others else None, answer_norm=answer_norm,
            correct_norm=answer_norm == sample.gold,
        )


@dataclass
class Prepared:
    """A sample as the model reads it: the prompt, and its token ids (1, length) in generate mode or its options
    tokenised in score mode."""

    prompt: str
    ids: torch.Tensor | None
    inputs: OptionInputs | None


@dataclass
class _Pending:
    key: object
    chain: Chain
    sample: Sample
    prefix: PrefixCache | None


class Requests:
    """(chain, sample) requests of one :class:`Evaluator`, run together: the one way CoLa asks chains on samples.

    :meth:`submit` adds a request at any time; :meth:`step` runs one step of all of them and returns those that
    finished, graded. In generate mode the requests decode together with continuous batching
    (:class:`~cola.inference.generation.RowDecoder`: a request submitted between steps prefills in the same layer calls
    as the others' decoding tokens); in score mode a step prefills every submitted request's context together and scores
    its options (:func:`~cola.inference.scoring.score_many`). One request alone computes exactly as its chain's layers
    run in order; several give the same outcomes up to the rounding of packed matrix products."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.queued: list[_Pending] = []  # score mode
        self.decoder = None if evaluator.config.mode == "score" else RowDecoder(
            evaluator.cm, evaluator.config.max_new_tokens or evaluator.task.max_new_tokens)
        self.in_decoder: dict[int, _Pending] = {}

    def __len__(self) -> int:
        """Requests submitted and not yet returned by :meth:`step`."""
        return len(self.queued) + len(self.in_decoder)

    def submit(self, key: object, chain: Chain, sample: Sample, prefix: PrefixCache | None = None,
               sampler: Sampler | None = None) -> None:
        """Ask ``sample`` through ``chain`` at the next step; ``key`` names the outcome. ``prefix`` is the sample's
        :class:`~cola.core.prefix_cache.PrefixCache`, if any; a ``sampler`` (generate mode) draws the answer's tokens
        instead of choosing them greedily."""
        pending = _Pending(key, chain, sample, prefix)
        if self.decoder is None:
            if sampler is not None:
                raise ValueError("score mode ranks the options; there are no tokens to sample")
            self.queued.append(pending)
            return
        task = self.evaluator.task
        self.in_decoder[id(pending)] = pending
        self.decoder.add(id(pending), chain, self.evaluator.prepare(sample).ids, prefix,
                         lambda text: task.is_done(text, sample), sampler)

    def drain(self, on_outcome: Callable[[object, Outcome], None] | None = None) -> dict[object, Outcome]:
        """Step until every request has finished; returns key -> outcome, and calls ``on_outcome(key, outcome)``
        as each one finishes."""
        outcomes: dict[object, Outcome] = {}
        while self:
            for key, outcome in self.step():
                outcomes[key] = outcome
                if on_outcome is not None:
                    on_outcome(key, outcome)
        return outcomes

    def step(self) -> list[tuple[object, Outcome]]:
        """Run one step; returns (key, outcome) of the requests that finished in it."""
        ev = self.evaluator
        if self.decoder is not None:
            try:
                stepped = self.decoder.step()
            except NonFiniteError as err:
                raise self._named(err, self.in_decoder[err.key]) from None
            finished = [(self.in_decoder.pop(handle), generation) for handle, generation in stepped]
            return [(p.key, ev.grade_text(p.chain, p.sample, ev.prepare(p.sample).prompt, generation))
                    for p, generation in finished]
        queued, self.queued = self.queued, []
        prepared = [ev.prepare(p.sample) for p in queued]
        try:
            scores = score_many(ev.cm, [(p.chain, prep.inputs, p.prefix) for p, prep in zip(queued, prepared)])
        except NonFiniteError as err:
            raise self._named(err, queued[err.row]) from None
        return [(p.key, ev.grade_scores(p.chain, p.sample, prep.prompt, s))
                for p, prep, s in zip(queued, prepared, scores)]

    def _named(self, err: NonFiniteError, pending: _Pending) -> NonFiniteError:
        """``err`` with the chain and the input it came from, and what to do."""
        return NonFiniteError(f"non-finite logits (NaN or inf) from chain {pending.chain} on sample "
                              f"{pending.sample.id!r} ({self.evaluator.task.name}); no answer is read from them. The "
                              "weights hold NaN or inf values (a corrupt file?) or a 16-bit dtype overflowed: "
                              "reinstall the weights (a corrupt CoLa cache is rebuilt at load) or use --dtype float32")
