"""The one harness every label-free policy runs in, live or replayed from a table of answers.

A policy is asked in rounds: each round, every unfinished input names its next request (a chain, or one seeded
sample of a chain) from what it has been told so far (its kind's ``next_request``); the round's requests run together
(:class:`~cola.evaluation.evaluator.Requests`, each input keeping one :class:`~cola.core.prefix_cache.PrefixCache`
across its rounds, so a chain that shares a prefix with one asked before computes only the rest); when no input asks any
more, each answers (its kind's ``decide``, :mod:`cola.policies.spec`). The layers computed per input are the prefix
cache's counters, as the router's are.

The same decisions replay from a *table* (every request of a family of settings asked once per input,
:func:`ask_table`): a cascade's thresholds or a vote's k and rule are then swept without running the model again,
with the layers each setting would compute counted the way the prefix cache counts them
(:func:`cola.core.prefix_cache.layers_computed`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

from ..core.chain import Chain
from ..core.prefix_cache import PrefixCache, layers_computed
from ..evaluation.evaluator import Evaluator, Outcome
from ..storage import EvalStore, chunks
from ..tasks import Sample
from .signals import confidence
from .spec import Asked, PolicySpec, Request


def to_asked(evaluator: Evaluator, sample: Sample, request: Request, outcome: Outcome, spec: PolicySpec) -> Asked:
    """A graded outcome as the policy sees it: the answer (``acc_norm``'s with ``norm``) and its confidence."""
    n_chars = evaluator.prepare(sample).inputs.n_chars if spec.norm and evaluator.config.mode == "score" else None
    answer, correct = ((outcome.answer_norm, bool(outcome.correct_norm)) if n_chars is not None
                       else (outcome.answer, outcome.correct))
    conf = confidence(outcome, spec.signal_in(evaluator.config.mode), n_chars)
    return Asked(str(request.chain), request.draw, answer, correct, conf, outcome.tokens or 0)


def ask(evaluator: Evaluator, samples: Sequence[Sample], prefixes: Sequence[PrefixCache],
        wanted: Sequence[tuple[int, Request]], spec: PolicySpec) -> list[Asked]:
    """Run the requests ``wanted`` ((input index, request) pairs) together, each through its input's prefix cache."""
    requests = evaluator.requests()
    for j, (i, request) in enumerate(wanted):
        requests.submit(j, request.chain, samples[i], prefixes[i], request.sampler(spec.seed, samples[i].id))
    outcomes = requests.drain()
    return [to_asked(evaluator, samples[i], r, outcomes[j], spec) for j, (i, r) in enumerate(wanted)]


def policy_row(spec: PolicySpec, sample: Sample, asked: Sequence[Asked], layers: int) -> dict:
    """One input's line of a policy evaluation: the answer, why it stopped, its cost and everything it asked."""
    chosen, why = spec.decide(asked)
    answer = None if chosen is None else asked[chosen].answer
    lengths = [len(Chain.parse(a.chain)) for a in asked]
    return {"id": sample.id, "gold": sample.gold, "answer": answer,
            "correct": bool(chosen is not None and asked[chosen].correct), "stop": why, "layers": layers,
            "positions": sum(lengths), "chains_asked": len(asked), "tokens": sum(a.tokens for a in asked),
            "layer_tokens": sum(n * a.tokens for n, a in zip(lengths, asked)), "asked": [asdict(a) for a in asked]}


def own_chains(spec: PolicySpec, evaluator: Evaluator, samples: Sequence[Sample], prefixes: Sequence[PrefixCache],
               router=None) -> list[list[Chain]]:
    """The chains each input's requests come from: the spec's own, or for a routed kind the one chain its ``router``
    (:meth:`~cola.policies.spec.Routed.load_router`) picks for the input, routed together, each through its prefix
    cache, so answering reuses the routing's layers."""
    if spec.routed:
        return [[c] for c in spec.route(router, evaluator, samples, prefixes)]
    return [spec.check(evaluator.cm.depth, evaluator.config.mode)] * len(samples)


def ask_rounds(spec: PolicySpec, evaluator: Evaluator, samples: Sequence[Sample], prefixes: Sequence[PrefixCache],
               router=None) -> tuple[list[list[Request]], list[list[Asked]]]:
    """Ask ``samples`` under ``spec`` round by round until no input asks more (module doc); per input, the requests
    it made and what each answered, in order."""
    own = own_chains(spec, evaluator, samples, prefixes, router)
    made: list[list[Request]] = [[] for _ in samples]
    asked: list[list[Asked]] = [[] for _ in samples]
    while True:
        wanted = [(i, r) for i in range(len(samples)) if (r := spec.next_request(own[i], asked[i])) is not None]
        if not wanted:
            return made, asked
        for (i, request), answer in zip(wanted, ask(evaluator, samples, prefixes, wanted, spec)):
            made[i].append(request)
            asked[i].append(answer)


def decided_requests(spec: PolicySpec, evaluator: Evaluator, samples: Sequence[Sample],
                     prefixes: Sequence[PrefixCache], router=None) -> list[Request]:
    """The request whose output ``spec`` answers each input with, for a caller that needs that output whole (per
    option log-likelihoods, the generated text): a chain or a routed kind's one chain, unasked; for a cascade or a
    vote, the request its ``decide`` picks (the first asked when none has an answer), after asking the rounds through
    ``prefixes``."""
    if spec.answers_its_first_request():
        return [Request(chains[0]) for chains in own_chains(spec, evaluator, samples, prefixes, router)]
    made, asked = ask_rounds(spec, evaluator, samples, prefixes, router)
    return [requests[spec.decide(answers)[0] or 0] for requests, answers in zip(made, asked)]


def run_policy(spec: PolicySpec, evaluator: Evaluator, samples: Sequence[Sample], batch: int = 16,
               router=None, progress: Callable[[int], None] | None = None, store: EvalStore | None = None,
               stage: str = "policy") -> list[dict]:
    """Answer ``samples`` with the policy ``spec``, ``batch`` inputs at a time (module doc); a routed kind needs its
    loaded router (:func:`load_router`). Returns one row per input (:func:`policy_row`), in order; each batch is
    recorded in ``store`` as stage ``stage`` as it finishes (and read back from it on a resume)."""
    spec.check(evaluator.cm.depth, evaluator.config.mode)

    def unit_rows(chunk: Sequence[Sample]) -> list[dict]:
        prefixes = [PrefixCache() for _ in chunk]
        _, asked = ask_rounds(spec, evaluator, chunk, prefixes, router)
        return [policy_row(spec, s, a, p.layers_computed) for s, a, p in zip(chunk, asked, prefixes)]

    units, _ = (store or EvalStore()).stage(stage, chunks(samples, batch), unit_rows, progress)
    return [row for unit in units for row in unit]


def ask_table(evaluator: Evaluator, samples: Sequence[Sample], requests: Sequence[Request], spec: PolicySpec,
              batch: int = 16, progress: Callable[[int], None] | None = None, store: EvalStore | None = None,
              stage: str = "table") -> list[dict[str, Asked]]:
    """Every request asked once on every input, in the given order (one round each, so later chains reuse the
    prefixes of earlier ones); per input, request key -> :class:`Asked` (confidence by ``spec``'s signal). Each
    batch is recorded in ``store`` as stage ``stage`` as it finishes (and read back from it on a resume)."""

    def unit_answers(chunk: Sequence[Sample]) -> list[dict[str, dict]]:
        prefixes = [PrefixCache() for _ in chunk]
        answers: list[dict[str, dict]] = [{} for _ in chunk]
        for request in requests:
            wanted = [(i, request) for i in range(len(chunk))]
            for (i, _), answer in zip(wanted, ask(evaluator, chunk, prefixes, wanted, spec)):
                answers[i][request.key] = asdict(answer)
        return answers

    units, _ = (store or EvalStore()).stage(stage, chunks(samples, batch), unit_answers, progress)
    return [{key: Asked(**a) for key, a in answers.items()} for unit in units for answers in unit]


def replay(spec: PolicySpec, chains: Sequence[Chain], sample: Sample, answers: dict[str, Asked]) -> dict:
    """One input's row under ``spec`` from its table of ``answers`` (:func:`ask_table`), as :func:`run_policy` would
    give it, the layers counted as its prefix cache would count them."""
    asked: list[Asked] = []
    requests: list[Request] = []
    while (request := spec.next_request(chains, asked)) is not None:
        requests.append(request)
        asked.append(answers[request.key])
    return policy_row(spec, sample, asked, layers_computed([r.chain for r in requests]))
