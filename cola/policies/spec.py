"""What a label-free policy is: a small, validated, JSON round-tripping spec, and where its chains come from.

A policy answers an input by asking one or more chains, never seeing the gold:

- ``chain``: one chain for every input;
- ``cascade``: chains cheapest first (full depth last by default); a step's answer is kept when its confidence is at
  least that step's threshold, else the next chain is asked (a threshold of 0 always keeps, of 1 never does);
- ``vote``: the first ``k`` chains all answer; ``majority`` (ties to the chain listed first), the ``confident`` chain's
  answer, or a confidence-``weighted`` vote decides;
- ``self-consistency``: ``k`` seeded samples of one chain at ``temperature`` (generate mode), majority vote;
- ``router``: the chain a fitted router (:mod:`cola.router`) picks for the input;
- ``layer-router``: the chain Dr.LLM's per-layer routers (:mod:`cola.policies.layer_router`) build for the input
  during its prefill, layer by layer (or a random control of them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..chain import Chain
from ..errors import MissingFileError, UsageError

KINDS = ("chain", "cascade", "vote", "self-consistency", "router", "layer-router")
ROUTED = ("router", "layer-router")  # kinds whose one chain a router picks per input
SCORE_SIGNALS = ("max_prob", "margin", "certainty")  # of the softmax over the options' log-likelihoods
GENERATE_SIGNALS = ("answer_prob",)  # exp(mean log-probability of the answer's tokens); 0 without an answer
RULES = ("majority", "confident", "weighted")


# field -> (JSON types it takes, what to say, element type of a list)
_TYPES = {"kind": ((str,), "a policy name", None), "chains": ((list,), "a list of chains in notation", str),
          "thresholds": ((list,), "a list of numbers in [0, 1]", (int, float)),
          "signal": ((str, type(None)), "a signal name or null", None), "norm": ((bool,), "true or false", None),
          "rule": ((str,), "a vote rule", None), "k": ((int,), "a whole number", None),
          "temperature": ((int, float), "a number", None), "seed": ((int,), "a whole number", None),
          "router": ((str, type(None)), "a router folder (or per-layer routers folder) or null", None)}


@dataclass(frozen=True)
class PolicySpec:
    """One label-free policy (module doc). ``chains`` are in chain notation (``full`` allowed)."""

    kind: str
    chains: tuple[str, ...] = ("full",)
    thresholds: tuple[float, ...] = ()
    signal: str | None = None  # None: the mode's own (max_prob in score mode, answer_prob in generate mode)
    norm: bool = False  # score mode: answers and confidences per character of the option (lm-eval's acc_norm)
    rule: str = "majority"
    k: int = 1
    temperature: float = 0.0
    seed: int = 0
    router: str | None = None

    def to_dict(self) -> dict:
        """The spec as JSON-ready data (:meth:`from_dict` reads it back)."""
        d = asdict(self)
        d["chains"], d["thresholds"] = list(self.chains), list(self.thresholds)
        return d

    @classmethod
    def from_dict(cls, data: dict, where: str = "policy spec") -> PolicySpec:
        """A spec from :meth:`to_dict`'s data (or a JSON file's, named ``where`` in errors); unknown keys and values
        of the wrong JSON type are errors."""
        if not isinstance(data, dict):
            raise UsageError(f"{where}: holds a JSON {type(data).__name__}; expected an object such as "
                             '{"kind": "cascade", "chains": ["0-20", "full"], "thresholds": [0.9]}')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "kind" not in data:
            raise UsageError(f"{where}: it needs a 'kind', one of " + ", ".join(KINDS))
        for key, value in data.items():
            expected = _TYPES[key]
            if not isinstance(value, expected[0]) or isinstance(value, bool) and bool not in expected[0]:
                raise UsageError(f"{where}: {key!r} is {json.dumps(value)}; expected {expected[1]}")
            if isinstance(value, list) and not all(isinstance(v, expected[2]) and not isinstance(v, bool)
                                                   for v in value):
                raise UsageError(f"{where}: {key!r} is {json.dumps(value)}; expected {expected[1]}")
        d = dict(data)
        d["chains"] = tuple(str(c) for c in d.get("chains", ("full",)))
        d["thresholds"] = tuple(float(t) for t in d.get("thresholds", ()))
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> PolicySpec:
        """A spec from a JSON file: the spec itself, or a ``cola eval --out`` summary that holds one."""
        from ..store import read_json

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"policy spec file not found: {path}")
        data = read_json(path)
        return cls.from_dict(data.get("policy", data), str(path))

    def with_(self, **changes) -> PolicySpec:
        """A copy with ``changes`` (a calibrated threshold, another k)."""
        return replace(self, **changes)

    def check(self, depth: int, mode: str) -> list[Chain]:
        """Validate the spec for a model of ``depth`` layers in ``mode``; returns its chains, parsed. Every mistake is
        one :class:`~cola.errors.UsageError` (or :class:`~cola.errors.ChainError` for a chain) naming it."""
        if self.kind not in KINDS:
            raise UsageError(f"unknown policy {self.kind!r}; policies: {', '.join(KINDS)}")
        if not self.chains:
            raise UsageError(f"a {self.kind} policy needs at least one chain")
        chains = [Chain.parse(c, depth) for c in self.chains]
        signals = SCORE_SIGNALS if mode == "score" else GENERATE_SIGNALS
        if self.signal is not None and self.signal not in signals:
            raise UsageError(f"signal {self.signal!r} does not exist in {mode} mode; use one of {', '.join(signals)}")
        bad = [t for t in self.thresholds if not 0.0 <= t <= 1.0]
        if bad:
            raise UsageError(f"threshold {bad[0]} is outside [0, 1]")
        if self.kind == "cascade" and len(self.thresholds) != len(chains) - 1:
            raise UsageError(f"a cascade of {len(chains)} chains needs {len(chains) - 1} threshold(s) (one per step "
                             f"but the last), not {len(self.thresholds)}")
        if self.kind != "cascade" and self.thresholds:
            raise UsageError(f"thresholds belong to a cascade, not a {self.kind} policy")
        if self.rule not in RULES:
            raise UsageError(f"unknown vote rule {self.rule!r}; rules: {', '.join(RULES)}")
        if self.k < 1:
            raise UsageError(f"k must be at least 1, not {self.k}")
        if self.kind == "vote" and self.k > len(chains):
            raise UsageError(f"a vote of k={self.k} needs {self.k} chains; {len(chains)} given")
        if self.kind in ("chain", "self-consistency") and len(chains) != 1:
            raise UsageError(f"a {self.kind} policy asks one chain; {len(chains)} given")
        if self.kind == "self-consistency" and mode != "generate":
            raise UsageError("self-consistency samples answers: it needs --mode generate")
        if self.temperature < 0:
            raise UsageError(f"temperature must be >= 0, not {self.temperature}")
        if self.kind in ROUTED and not self.router:
            raise UsageError(f"a {self.kind} policy needs the router's folder (--router DIR)")
        return chains

    def signal_in(self, mode: str) -> str:
        """The confidence signal this spec uses in ``mode``."""
        return self.signal or (SCORE_SIGNALS[0] if mode == "score" else GENERATE_SIGNALS[0])

    def describe(self, mode: str | None = None) -> str:
        """A short human name: ``cascade[max_prob] 0-7,10-17@0.6 > 0-17``, ``vote k=3 majority``,
        ``self-consistency k=5 T=0.7`` (the signal as ``mode`` resolves it, when given)."""
        if self.kind == "chain":
            return self.chains[0]
        if self.kind == "cascade":
            steps = [f"{c}@{t:g}" for c, t in zip(self.chains, self.thresholds)] + [self.chains[-1]]
            signal = self.signal_in(mode) if mode else self.signal or "confidence"
            return f"cascade[{signal}{'/norm' if self.norm else ''}] " + " > ".join(steps)
        if self.kind == "vote":
            return f"vote k={self.k} {self.rule}"
        if self.kind == "self-consistency":
            return f"self-consistency k={self.k} T={self.temperature:g}"
        return f"{self.kind} {self.router}"


def router_kind(folder: str | Path) -> str:
    """The policy kind a router folder is read by: ``router`` for a ``cola router fit`` folder (a library router, with
    its predictor), else ``layer-router`` (``cola router fit-layers`` routers or a control of them; reading them
    checks the folder)."""
    from ..router import PREDICTOR

    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"router folder not found: {folder}")
    return "router" if (folder / PREDICTOR).is_file() else "layer-router"


def chains_from(path: str | Path, depth: int, top: int | None = None) -> list[str]:
    """Chains (notation) from a file or folder another command wrote, in its own order of preference, at most
    ``top`` of them: a ``cola prune --out`` JSON (m = 1, 2, ...), a ``cola search --static`` run (highest accuracy
    first), a ``cola router fit`` folder (its library) or a per-sample search run (the fixed menu's ranking: the
    chains right on the most samples first). The full chain is left out; a policy adds it where it belongs."""
    from ..prune import load_pruned
    from ..router import CONFIG, PREDICTOR
    from ..search.menu import ranked, right_samples
    from ..search.static import ranked_static
    from ..store import read_config, read_json, read_records

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"chain source not found: {path}")
    if path.is_file():
        chains = list(load_pruned(path).values())
    elif (path / PREDICTOR).exists():
        chains = read_json(path / CONFIG)["library"]
    else:
        config = read_config(path)
        records = read_records(path)
        if config.get("static"):
            chains = [r["chain"] for r in ranked_static(records)]
        else:
            chains = [str(c) for c in ranked(right_samples(records), sample_id="")]
        if config.get("depth") not in (None, depth):
            raise UsageError(f"{path} is a run of a {config['depth']}-layer model; this one has {depth}")
    full = str(Chain.full(depth))
    chains = [c for c in (str(Chain.parse(c, depth)) for c in chains) if c != full]
    return chains[:top] if top else chains


def make_spec(kind_or_file: str, depth: int, chains: Sequence[str] = (), source: str | None = None,
              top: int | None = None, thresholds: Sequence[float] = (), calibrating: bool = False,
              **settings) -> PolicySpec:
    """The spec ``cola eval --policy`` names: a JSON file (a spec, or an earlier evaluation's summary), or a kind
    with its chains: those given, then ``top`` of ``source``'s (:func:`chains_from`). A cascade's chains run
    cheapest first: a source's are sorted by length, and the full chain ends it when it is not last; while
    ``calibrating``, its thresholds are left to the calibration (1 until then). ``settings``: signal, norm, rule, k,
    temperature, seed, router."""
    if kind_or_file.endswith(".json"):
        if chains or source:
            raise UsageError("--policy FILE.json holds its chains; do not add --chain or --chains-from")
        return PolicySpec.load(kind_or_file)
    if kind_or_file not in KINDS:
        raise UsageError(f"unknown policy {kind_or_file!r}; policies: {', '.join(KINDS)}, or a spec FILE.json")
    named = [str(Chain.parse(c, depth)) for c in chains]
    found = chains_from(source, depth, top) if source else []
    full = str(Chain.full(depth))
    if kind_or_file == "cascade":
        found.sort(key=lambda c: len(Chain.parse(c)))
        named += found
        if not named or named[-1] != full:
            named.append(full)
        if calibrating and not thresholds:
            thresholds = (1.0,) * (len(named) - 1)
    else:
        named += found
    settings = {k: v for k, v in settings.items() if v is not None}
    if kind_or_file == "vote" and "k" not in settings:
        settings["k"] = len(named)
    return PolicySpec(kind_or_file, tuple(named or [full]), tuple(float(t) for t in thresholds), **settings)
