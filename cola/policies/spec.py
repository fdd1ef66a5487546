"""What a label-free policy is: one registered class per kind, each a small, validated, JSON round-tripping spec
that owns its fields, its checks, the requests it makes, how it decides and the settings calibration sweeps.

A policy answers an input by asking one or more chains, never seeing the gold:

- ``chain``: one chain for every input;
- ``cascade``: chains cheapest first (full depth last by default); a step's answer is kept when its confidence is at
  least that step's threshold, else the next chain is asked (a threshold of 0 always keeps, of 1 never does);
- ``vote``: the first ``k`` chains all answer; ``majority`` (ties to the chain listed first), the ``confident`` chain's
  answer, or a confidence-``weighted`` vote decides;
- ``self-consistency``: ``k`` seeded samples of one chain at ``temperature`` (generate mode), majority vote;
- ``router``: the chain a fitted router (:mod:`cola.policies.library_router`) picks for the input;
- ``layer-router``: the chain Dr.LLM's per-layer routers (:mod:`cola.policies.layer_router`) build for the input
  during its prefill, layer by layer (or a random control of them);
- ``program``: the top program PoLar's predictor (:mod:`cola.policies.program`) writes for the input from its
  question (or a control of it).

A new kind is one subclass of :class:`PolicySpec` with its ``kind`` name: the harness (:mod:`cola.policies.harness`),
calibration, replay and evaluation call only the methods below. Every spec file has one JSON layout, whatever its
kind (:meth:`PolicySpec.to_dict`), so files written before the kinds were classes load unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar

from ..core.chain import Chain
from ..errors import MissingFileError, UsageError

SCORE_SIGNALS = ("max_prob", "margin", "certainty")  # of the softmax over the options' log-likelihoods
GENERATE_SIGNALS = ("answer_prob",)  # exp(mean log-probability of the answer's tokens); 0 without an answer
RULES = ("majority", "confident", "weighted")


@dataclass(frozen=True)
class Request:
    """One question a policy asks of one input: ``chain`` greedily, or its seeded sample ``draw`` at ``temperature``."""

    chain: Chain
    draw: int | None = None
    temperature: float = 0.0

    @property
    def key(self) -> str:
        return str(self.chain) if self.draw is None else f"{self.chain}#T{self.temperature:g}#{self.draw}"

    def sampler(self, seed: int, sample_id: str):
        """What draws this request's tokens on input ``sample_id`` under spec seed ``seed``: None (greedy), or the
        draw's seeded :class:`~cola.inference.generation.Sampler`, the same on every run."""
        if self.draw is None:
            return None
        from ..inference.generation import Sampler

        return Sampler(draw_seed(seed, sample_id, self.draw), self.temperature)


def draw_seed(seed: int, sample_id: str, draw: int) -> int:
    """The sampler seed of one input's ``draw``: the same for every run of the same spec seed."""
    return int(hashlib.sha256(f"{seed}:{sample_id}:{draw}".encode()).hexdigest()[:12], 16)


@dataclass
class Asked:
    """What one request answered, as a policy sees it (no gold: ``correct`` is kept for the record, never read)."""

    chain: str
    draw: int | None
    answer: str | None
    correct: bool
    confidence: float
    tokens: int  # decoded (generate mode; 0 in score mode)


# The JSON layout of every spec: key -> (its value when the kind has no such field, JSON types it takes, what to say,
# element type of a list). Written in this order, whatever the kind.
LAYOUT = {
    "chains": (["full"], (list,), "a list of chains in notation", str),
    "thresholds": ([], (list,), "a list of numbers in [0, 1]", (int, float)),
    "signal": (None, (str, type(None)), "a signal name or null", None),
    "norm": (False, (bool,), "true or false", None),
    "rule": ("majority", (str,), "a vote rule", None),
    "k": (1, (int,), "a whole number", None),
    "temperature": (0.0, (int, float), "a number", None),
    "seed": (0, (int,), "a whole number", None),
    "router": (None, (str, type(None)), "a router folder (or per-layer routers folder) or null", None),
}

KINDS: dict[str, type[PolicySpec]] = {}  # kind -> its class, filled as each class is defined


@dataclass(frozen=True)
class PolicySpec:
    """One label-free policy (module doc); a kind's class adds its own fields. ``chains`` are in chain notation
    (``full`` allowed); ``signal`` None is the mode's own (max_prob in score mode, answer_prob in generate mode);
    ``norm``: in score mode, answers and confidences per character of the option (lm-eval's acc_norm)."""

    kind: ClassVar[str]
    routed: ClassVar[bool] = False  # its one chain per input comes from a router
    chains: tuple[str, ...] = ("full",)
    signal: str | None = None
    norm: bool = False
    seed: int = 0

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            KINDS[cls.kind] = cls

    # --- the file format --------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The spec as JSON-ready data in the one layout of every kind (:meth:`from_dict` reads it back)."""
        own = {f.name: getattr(self, f.name) for f in fields(self)}
        data = {"kind": self.kind}
        for key, (absent, *_) in LAYOUT.items():
            value = own.get(key, absent)
            data[key] = list(value) if isinstance(value, tuple) else value
        return data

    @staticmethod
    def from_dict(data: dict, where: str = "policy spec") -> PolicySpec:
        """A spec from :meth:`to_dict`'s data (or a JSON file's, named ``where`` in errors): unknown keys, values of
        the wrong JSON type and settings the kind does not have are errors."""
        if not isinstance(data, dict):
            raise UsageError(f"{where}: holds a JSON {type(data).__name__}; expected an object such as "
                             '{"kind": "cascade", "chains": ["0-20", "full"], "thresholds": [0.9]}')
        unknown = sorted(set(data) - set(LAYOUT) - {"kind"})
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted([*LAYOUT, 'kind']))}")
        if "kind" not in data:
            raise UsageError(f"{where}: it needs a 'kind', one of " + ", ".join(KINDS))
        for key, value in data.items():
            types, what, element = ((str,), "a policy name", None) if key == "kind" else LAYOUT[key][1:]
            if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
                raise UsageError(f"{where}: {key!r} is {json.dumps(value)}; expected {what}")
            if isinstance(value, list) and not all(isinstance(v, element) and not isinstance(v, bool)
                                                   for v in value):
                raise UsageError(f"{where}: {key!r} is {json.dumps(value)}; expected {what}")
        settings = {k: v for k, v in data.items() if k != "kind"}
        return policy(data["kind"], **settings)

    @staticmethod
    def load(path: str | Path) -> PolicySpec:
        """A spec from a JSON file: the spec itself, or a ``cola eval --out`` summary that holds one."""
        from ..storage import read_json

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"policy spec file not found: {path}")
        data = read_json(path)
        return PolicySpec.from_dict(data.get("policy", data), str(path))

    @classmethod
    def arrange(cls, named: list[str], found: list[str], full: str, calibrating: bool,
                settings: dict) -> tuple[list[str], dict]:
        """The chains and settings of this kind as ``cola eval --policy`` builds it: the ``named`` chains, then those
        ``found`` in another command's output (the full chain ``full`` when there are none), the settings given."""
        return named + found or [full], settings

    @classmethod
    def answers_its_first_request(cls) -> bool:
        """Whether the kind asks one request and answers with it, whatever it answers: it keeps
        :meth:`next_request` and :meth:`decide` as :class:`PolicySpec` has them (a chain, a routed kind). A caller
        that needs the answering request's whole output (the lm-eval backend) then skips asking it first. Derived
        from the methods, so a kind that asks or decides otherwise is asked as it asks."""
        return cls.next_request is PolicySpec.next_request and cls.decide is PolicySpec.decide

    @classmethod
    def example(cls, cm, folder: Path) -> PolicySpec:
        """A valid spec of this kind for the model ``cm``, over chains of its own (a routed kind writes an untrained
        router of its kind into ``folder``): what the contract tests (``tests/test_policy_contract.py``) run every
        registered kind with. This default asks one shorter chain with the kind's default settings; a kind that
        needs more overrides it."""
        return cls(chains=(str(Chain(tuple(range(cm.depth - 1)))),))

    def with_(self, **changes) -> PolicySpec:
        """A copy with ``changes`` (a calibrated threshold, another k)."""
        return replace(self, **changes)

    # --- checks -------------------------------------------------------------------------------------------------

    def check(self, depth: int, mode: str) -> list[Chain]:
        """Validate the spec for a model of ``depth`` layers in ``mode``; returns its chains, parsed. Every mistake is
        one :class:`~cola.errors.UsageError` (or :class:`~cola.errors.ChainError` for a chain) naming it."""
        if not self.chains:
            raise UsageError(f"a {self.kind} policy needs at least one chain")
        chains = [Chain.parse(c, depth) for c in self.chains]
        signals = SCORE_SIGNALS if mode == "score" else GENERATE_SIGNALS
        if self.signal is not None and self.signal not in signals:
            raise UsageError(f"signal {self.signal!r} does not exist in {mode} mode; use one of {', '.join(signals)}")
        self.validate(chains, mode)
        return chains

    def validate(self, chains: list[Chain], mode: str) -> None:
        """The kind's own checks of its settings (:meth:`check` has parsed the chains and checked the signal)."""

    def signal_in(self, mode: str) -> str:
        """The confidence signal this spec uses in ``mode``."""
        return self.signal or (SCORE_SIGNALS[0] if mode == "score" else GENERATE_SIGNALS[0])

    def describe(self, mode: str | None = None) -> str:
        """A short human name: ``cascade[max_prob] 0-7,10-17@0.6 > 0-17``, ``vote k=3 majority``,
        ``self-consistency k=5 T=0.7`` (the signal as ``mode`` resolves it, when given)."""
        raise NotImplementedError

    # --- asking and deciding ----------------------------------------------------------------------------------

    def next_request(self, chains: Sequence[Chain], asked: Sequence[Asked]) -> Request | None:
        """The next request of one input given what it was told (``asked``; ``chains``: the input's chains, parsed),
        or None when it answers. One request, then the answer: a kind that asks more overrides it."""
        return Request(chains[0]) if not asked else None

    def decide(self, asked: Sequence[Asked]) -> tuple[int | None, str]:
        """Which asked answer the policy gives (an index into ``asked``, None when none has an answer) and why."""
        return 0, "one chain"

    # --- calibration on dev -----------------------------------------------------------------------------------

    def family(self, ks: Sequence[int] = (), rules: Sequence[str] = (),
               temperatures: Sequence[float] = ()) -> list[PolicySpec]:
        """The settings calibration sweeps around this spec (a kind without free settings: itself)."""
        return [self]

    def requests(self, depth: int) -> list[Request]:
        """Every request this setting can make of an input (the table calibration asks once per dev input)."""
        return [Request(Chain.parse(c, depth)) for c in self.chains]


def policy(kind: str, **settings) -> PolicySpec:
    """The spec of ``kind`` with ``settings`` (keys of the one layout, lists allowed for tuples); a setting the kind
    does not have must keep the layout's value for it (so every file layout loads), else it is an error."""
    if kind not in KINDS:
        raise UsageError(f"unknown policy {kind!r}; policies: {', '.join(KINDS)}")
    cls = KINDS[kind]
    own = {f.name for f in fields(cls)}
    for key, value in settings.items():
        if key in own:
            continue
        if key not in LAYOUT:
            raise UsageError(f"unknown policy setting {key!r}")
        absent = LAYOUT[key][0]
        if (list(value) if isinstance(value, tuple) else value) != absent:
            owners = [name for name, c in KINDS.items() if key in {f.name for f in fields(c)}]
            raise UsageError(f"{key} belong{'s' if key != 'thresholds' else ''} to a {' or '.join(owners)} policy, "
                             f"not a {kind} policy")
    kept = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in own}
    if "chains" in kept:
        kept["chains"] = tuple(str(c) for c in kept["chains"])
    if "thresholds" in kept:
        kept["thresholds"] = tuple(float(t) for t in kept["thresholds"])
    return cls(**kept)


@dataclass(frozen=True)
class ChainPolicy(PolicySpec):
    """One chain for every input."""

    kind: ClassVar[str] = "chain"

    def validate(self, chains: list[Chain], mode: str) -> None:
        if len(chains) != 1:
            raise UsageError(f"a chain policy asks one chain; {len(chains)} given")

    def describe(self, mode: str | None = None) -> str:
        return self.chains[0]


def keeps(threshold: float, conf: float) -> bool:
    """A cascade step keeps its answer when its confidence is at least the threshold; 1 never keeps."""
    return threshold < 1.0 and conf >= threshold


GRID = tuple(i / 20 for i in range(21))  # the thresholds calibration sweeps: 0, 0.05, ..., 1


@dataclass(frozen=True)
class Cascade(PolicySpec):
    """Chains cheapest first; a step's answer is kept when its confidence reaches the step's threshold."""

    kind: ClassVar[str] = "cascade"
    thresholds: tuple[float, ...] = ()

    @classmethod
    def arrange(cls, named: list[str], found: list[str], full: str, calibrating: bool,
                settings: dict) -> tuple[list[str], dict]:
        """Cheapest first: the chains found are sorted by length after those named, and the full chain ends the
        cascade when it is not last; while ``calibrating``, the thresholds are left to the calibration (1 until
        then)."""
        chains = named + sorted(found, key=lambda c: len(Chain.parse(c)))
        if not chains or chains[-1] != full:
            chains.append(full)
        if calibrating and "thresholds" not in settings:
            settings = {**settings, "thresholds": (1.0,) * (len(chains) - 1)}
        return chains, settings

    @classmethod
    def example(cls, cm, folder: Path) -> PolicySpec:
        return cls(chains=(str(Chain(tuple(range(cm.depth // 2)))), str(Chain.full(cm.depth))), thresholds=(0.5,))

    def validate(self, chains: list[Chain], mode: str) -> None:
        bad = [t for t in self.thresholds if not 0.0 <= t <= 1.0]
        if bad:
            raise UsageError(f"threshold {bad[0]} is outside [0, 1]")
        if len(self.thresholds) != len(chains) - 1:
            raise UsageError(f"a cascade of {len(chains)} chains needs {len(chains) - 1} threshold(s) (one per step "
                             f"but the last), not {len(self.thresholds)}")

    def describe(self, mode: str | None = None) -> str:
        steps = [f"{c}@{t:g}" for c, t in zip(self.chains, self.thresholds)] + [self.chains[-1]]
        signal = self.signal_in(mode) if mode else self.signal or "confidence"
        return f"cascade[{signal}{'/norm' if self.norm else ''}] " + " > ".join(steps)

    def next_request(self, chains: Sequence[Chain], asked: Sequence[Asked]) -> Request | None:
        n = len(asked)
        if n == 0:
            return Request(chains[0])
        if n == len(chains) or keeps(self.thresholds[n - 1], asked[-1].confidence):
            return None
        return Request(chains[n])

    def decide(self, asked: Sequence[Asked]) -> tuple[int | None, str]:
        n = len(asked)
        return n - 1, f"kept at step {n}" if n < len(self.chains) else "last step"

    def family(self, ks: Sequence[int] = (), rules: Sequence[str] = (),
               temperatures: Sequence[float] = ()) -> list[PolicySpec]:
        """Every step's threshold over :data:`GRID`, each its own for up to two steps, one shared value beyond."""
        steps = len(self.chains) - 1
        grid = itertools.product(GRID, repeat=steps) if steps <= 2 else ((t,) * steps for t in GRID)
        return [self.with_(thresholds=tuple(t)) for t in grid]


def vote_of(asked: Sequence[Asked], rule: str) -> tuple[int | None, str]:
    """The answer a vote of ``rule`` over ``asked`` gives (ties: the answer asked first) and why."""
    answered = [i for i, a in enumerate(asked) if a.answer is not None]
    if not answered:
        return None, "no answer"
    if rule == "confident":
        best = max(answered, key=lambda i: (asked[i].confidence, -i))
        return best, "most confident"
    score: dict[str, float] = {}
    for i in answered:
        score[asked[i].answer] = score.get(asked[i].answer, 0.0) + (asked[i].confidence if rule == "weighted" else 1.0)
    top = max(score.values())
    best = next(i for i in answered if score[asked[i].answer] == top)
    votes = sum(1 for i in answered if asked[i].answer == asked[best].answer)
    return best, f"{rule} {votes}/{len(asked)}"


def _check_k(k: int) -> None:
    if k < 1:
        raise UsageError(f"k must be at least 1, not {k}")


@dataclass(frozen=True)
class Vote(PolicySpec):
    """The first ``k`` chains all answer; ``rule`` decides."""

    kind: ClassVar[str] = "vote"
    k: int = 1
    rule: str = "majority"

    @classmethod
    def arrange(cls, named: list[str], found: list[str], full: str, calibrating: bool,
                settings: dict) -> tuple[list[str], dict]:
        """Every chain votes unless ``k`` says otherwise."""
        chains, settings = super().arrange(named, found, full, calibrating, settings)
        return chains, {"k": len(named) + len(found), **settings}

    @classmethod
    def example(cls, cm, folder: Path) -> PolicySpec:
        depth = cm.depth
        chains = (str(Chain(tuple(range(depth - 2)))), str(Chain(tuple(range(depth - 1)))), str(Chain.full(depth)))
        return cls(chains=chains, k=3, rule="weighted")

    def validate(self, chains: list[Chain], mode: str) -> None:
        if self.rule not in RULES:
            raise UsageError(f"unknown vote rule {self.rule!r}; rules: {', '.join(RULES)}")
        _check_k(self.k)
        if self.k > len(chains):
            raise UsageError(f"a vote of k={self.k} needs {self.k} chains; {len(chains)} given")

    def describe(self, mode: str | None = None) -> str:
        return f"vote k={self.k} {self.rule}"

    def next_request(self, chains: Sequence[Chain], asked: Sequence[Asked]) -> Request | None:
        return Request(chains[len(asked)]) if len(asked) < self.k else None

    def decide(self, asked: Sequence[Asked]) -> tuple[int | None, str]:
        return vote_of(asked, self.rule)

    def family(self, ks: Sequence[int] = (), rules: Sequence[str] = (),
               temperatures: Sequence[float] = ()) -> list[PolicySpec]:
        """``ks`` (at most the chains given) × ``rules``."""
        return [self.with_(k=k, rule=r) for k in (ks or [self.k]) if k <= len(self.chains)
                for r in (rules or [self.rule])]


@dataclass(frozen=True)
class SelfConsistency(PolicySpec):
    """``k`` seeded samples of one chain at ``temperature``, majority vote (at temperature 0: one greedy answer)."""

    kind: ClassVar[str] = "self-consistency"
    k: int = 1
    temperature: float = 0.0

    @classmethod
    def example(cls, cm, folder: Path) -> PolicySpec:
        """Greedy (temperature 0): a sampled draw is seeded by the input's id, which an lm-eval request has not, so
        only greedy answers are the same through ``cola eval`` and the lm-eval backend."""
        return cls(chains=(str(Chain(tuple(range(cm.depth - 1)))),), k=3)

    def validate(self, chains: list[Chain], mode: str) -> None:
        _check_k(self.k)
        if len(chains) != 1:
            raise UsageError(f"a self-consistency policy asks one chain; {len(chains)} given")
        if mode != "generate":
            raise UsageError("self-consistency samples answers: it needs --mode generate")
        if self.temperature < 0:
            raise UsageError(f"temperature must be >= 0, not {self.temperature}")

    def describe(self, mode: str | None = None) -> str:
        return f"self-consistency k={self.k} T={self.temperature:g}"

    def next_request(self, chains: Sequence[Chain], asked: Sequence[Asked]) -> Request | None:
        if self.temperature == 0:  # greedy answers: every sample is the same one
            return Request(chains[0]) if not asked else None
        return Request(chains[0], len(asked), self.temperature) if len(asked) < self.k else None

    def decide(self, asked: Sequence[Asked]) -> tuple[int | None, str]:
        return vote_of(asked, "majority")

    def family(self, ks: Sequence[int] = (), rules: Sequence[str] = (),
               temperatures: Sequence[float] = ()) -> list[PolicySpec]:
        """``temperatures`` × ``ks``."""
        return [self.with_(k=k, temperature=t) for t in (temperatures or [self.temperature])
                for k in (ks or [self.k])]

    def requests(self, depth: int) -> list[Request]:
        chain = Chain.parse(self.chains[0], depth)
        if self.temperature > 0:
            return [Request(chain, d, self.temperature) for d in range(self.k)]
        return [Request(chain)]


@dataclass(frozen=True)
class Routed(PolicySpec):
    """A kind whose one chain per input a fitted router picks (``router``: its folder)."""

    routed: ClassVar[bool] = True
    router: str | None = None

    def validate(self, chains: list[Chain], mode: str) -> None:
        if not self.router:
            raise UsageError(f"a {self.kind} policy needs the router's folder (--router DIR)")

    def describe(self, mode: str | None = None) -> str:
        return f"{self.kind} {self.router}"

    def load_router(self, cm, config=None):
        """The fitted router, checked against ``cm`` (and, where it matters, against ``config``, the
        :class:`~cola.evaluation.evaluator.EvalConfig` it will be asked with)."""
        raise NotImplementedError

    def route(self, router, evaluator, samples, prefixes) -> list[Chain]:
        """The chain ``router`` picks for each input (routed together, each through its prefix cache)."""
        raise NotImplementedError


@dataclass(frozen=True)
class LibraryRouter(Routed):
    """The chain a ``cola router fit`` router picks from its library."""

    kind: ClassVar[str] = "router"

    @classmethod
    def example(cls, cm, folder: Path) -> PolicySpec:
        """A router over full depth and two shorter chains whose predictor has seeded random weights."""
        from .library_router import untrained_router

        return cls(router=str(untrained_router(cm, folder)))

    def load_router(self, cm, config=None):
        from .library_router import Router

        return Router.load(self.router, cm)

    def route(self, router, evaluator, samples, prefixes) -> list[Chain]:
        from .library_router import route_inputs

        return route_inputs(router, evaluator, samples, prefixes)


@dataclass(frozen=True)
class LayerRouter(Routed):
    """The chain Dr.LLM's per-layer routers build during the prefill (or a random control of them)."""

    kind: ClassVar[str] = "layer-router"

    @classmethod
    def example(cls, cm, folder: Path) -> PolicySpec:
        """Per-layer routers with seeded random weights, untrained (their random control draws per input name, which
        an lm-eval request has not: it draws other paths there)."""
        import torch

        from ..core.hashes import weights_hash
        from .layer_router import LayerRouters, save_routers

        with torch.random.fork_rng():
            torch.manual_seed(0)
            routers = LayerRouters(cm.depth, cm.config.hidden_size)
        save_routers(routers, folder, {"model": cm.name, "weights": weights_hash(cm), "untrained": True})
        return cls(router=str(folder))

    def load_router(self, cm, config=None):
        """The routers, with a warning when they were trained on hidden states of another dtype than ``cm`` runs in,
        or of prompts asked another way than ``config`` asks them (another mode, chat setting or score style: the
        routers then read hidden states of prompts they never saw)."""
        from .layer_router import load_routers

        routers, about = load_routers(self.router, cm)
        running = str(cm.dtype).removeprefix("torch.")
        if about.get("dtype") not in (None, running):
            warnings.warn(f"{self.router} was trained on {about['dtype']} hidden states; this model runs in {running}",
                          stacklevel=2)
        if config is not None:
            trained = {k: about.get(k) for k in ("mode", "chat", "score_style")}
            asked = {"mode": config.mode, "chat": config.chat, "score_style": config.score_style}
            differ = [f"{k} {trained[k]!r} (asked: {asked[k]!r})" for k in trained
                      if trained[k] is not None and trained[k] != asked[k]]
            if differ:
                warnings.warn(f"{self.router} was trained on prompts asked another way: {'; '.join(differ)}",
                              stacklevel=2)
        return routers

    def route(self, router, evaluator, samples, prefixes) -> list[Chain]:
        from .layer_router import route_inputs

        return route_inputs(router, evaluator, samples, prefixes)


@dataclass(frozen=True)
class ProgramPolicy(Routed):
    """The top program PoLar's predictor writes for the input from its question (pass@1: what a deployed predictor
    gives), or a control of it (:mod:`cola.policies.program`)."""

    kind: ClassVar[str] = "program"

    @classmethod
    def example(cls, cm, folder: Path) -> PolicySpec:
        """An untrained predictor (seeded random weights) reading the target model's states."""
        from .program import untrained_program_router

        return cls(router=str(untrained_program_router(cm, folder)))

    def load_router(self, cm, config=None):
        """The predictor (or control), with a warning when it was fitted on states of another dtype than ``cm``
        runs in (its target-model encoder then reads slightly other states)."""
        from .program import ProgramRouter

        router = ProgramRouter.load(self.router, cm)
        running = str(cm.dtype).removeprefix("torch.")
        if router.routing == "trained" and router.config.get("dtype") not in (None, running):
            warnings.warn(f"{self.router} was fitted on {router.config['dtype']} states; this model runs in "
                          f"{running}", stacklevel=2)
        return router

    def route(self, router, evaluator, samples, prefixes) -> list[Chain]:
        from .program import route_inputs

        return route_inputs(router, evaluator, samples, prefixes)
