"""One evaluation as a value: a chain, a library router or a label-free policy asked on a task's samples (a policy with
full depth beside it), what is checked before any weight loads, its defaults, and its run. ``cola eval`` builds an
:class:`EvalJob` from its arguments and prints the :class:`EvalResult`; a Python program does the same::

    from cola.evaluation.evaluator import EvalConfig
    from cola.policies.job import EvalJob
    from cola.tasks import Selection

    result = EvalJob(Selection("arc_easy", data_dir="../shared/data", n=100), EvalConfig(mode="score"),
                     chains=("0-13,15-29",)).run()
    print(result.summary["acc"])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.chain import Chain, as_chain
from ..core import loading
from ..core.aliases import DEFAULT_MODEL
from ..errors import UsageError
from ..evaluation.evaluations import eval_header, evaluate_chain
from ..evaluation.evaluator import EvalConfig, Evaluator
from ..storage import EvalStore, FolderLock, eval_lock
from ..tasks import Sample, Selection
from .evaluation import evaluate_policy, evaluate_router
from .program_eval import best_of_k, oracle_summary, trusted_verdicts
from .sources import router_kind

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: ``done`` more samples of ``total`` finished in the named stage."""


@dataclass
class EvalResult:
    """What an evaluation gives back: its kind (``chain``, ``router`` or ``policy``), its summary and per-sample rows
    (:mod:`cola.evaluation.evaluations`, :mod:`cola.policies.evaluation`), whether its output file held it
    finished already (``reused``: nothing was run), the library router it asked (for its description), and, for a
    calibrated policy, what the calibration on dev saw and chose."""

    kind: str
    summary: dict
    rows: list[dict]
    reused: bool = False
    router: object | None = None
    calibration: dict | None = None
    summary_path: Path | None = None


@dataclass
class EvalJob:
    """``cola eval``: the samples (``selection``), how they are asked (``config``), the model, and what answers them:
    ``chains`` (one; or, for a cascade or vote, several in order), a library ``router`` folder, or a ``policy`` (a
    kind of :data:`cola.policies.KINDS`, or a spec file) with its ``settings`` (signal, norm, rule, k, temperature,
    seed, router), extra chains from ``chains_from`` (its ``top``), a cascade's ``thresholds``, an optional
    calibration on ``dev_n`` dev samples by the objective ``calibrate`` over ``ks``, ``rules`` and ``temperatures``,
    a ``sweep`` of that family on these samples (``replay``: the policy and full depth answered from it). For the
    ``program`` policy, ``top_k`` > 1 adds PoLar's own metric, an oracle (:mod:`cola.policies.program_eval`): right
    when any of the ``top_k`` best programs is right by the gold, run online, and, with ``trust_runs`` (search runs of
    these samples), as released. ``batch``: samples run together (default :attr:`batch_size`); ``out``: the JSONL file
    written, resumed when it exists."""

    selection: Selection
    config: EvalConfig = field(default_factory=EvalConfig)
    model: str = DEFAULT_MODEL
    device: str | None = None
    dtype: str | None = None
    allow_untested: bool = False
    chains: tuple[str, ...] = ()
    router: str | None = None
    policy: str | None = None
    settings: dict = field(default_factory=dict)
    chains_from: str | None = None
    top: int | None = None
    thresholds: tuple[float, ...] = ()
    calibrate: str | None = None
    dev_n: int = 300
    ks: tuple[int, ...] = ()
    rules: tuple[str, ...] = ()
    temperatures: tuple[float, ...] = ()
    sweep: bool = False
    replay: bool = False
    top_k: int = 1
    trust_runs: tuple[str, ...] = ()
    dev: Selection | None = None  # the dev samples calibration reads, where not dev_n of the task's dev split
    batch: int | None = None
    name: str | None = None
    out: str | None = None
    store: EvalStore | None = field(default=None, init=False, repr=False)

    @property
    def kind(self) -> str:
        """``policy``, ``router`` (a library router, one chain per input) or ``chain``."""
        return "policy" if self.policy is not None else "router" if self.router is not None else "chain"

    @property
    def batch_size(self) -> int:
        """Samples run together: as given, else 16 for a policy, a router or generate mode, else 1 (score mode, each
        sample alone, exactly as lm-eval)."""
        if self.batch is not None:
            return self.batch
        return 16 if self.kind != "chain" or self.config.mode == "generate" else 1

    def check(self) -> None:
        """Every option checked against the others, and a chain or a policy against the model's depth read from its
        config: a bad job fails here, before any weight loads."""
        if self.kind == "policy":
            self._policy_spec(loading.model_depth(self.model))
            return
        if self.router is not None and self.chains:
            raise UsageError("--router picks each input's chain; it does not take --chain")
        if self.router is not None and (kind := router_kind(self.router)) != "router":
            raise UsageError(f"{self.router} holds a {kind} router: pass --policy {kind} --router {self.router}")
        if len(self.chains) > 1:
            raise UsageError("several --chain need a policy that asks them: --policy cascade or --policy vote")
        depth = loading.model_depth(self.model)
        if self.router is None and depth is not None:
            as_chain(self._chain, depth)

    def kept(self) -> str:
        """What an interrupted run has kept, and how it resumes."""
        if self.store is None:
            return "nothing was written"
        return f"{self.store.kept()}; run the same command again to resume" if self.out else self.store.kept()

    def run(self, progress: Progress | None = None) -> EvalResult:
        """Check the job, load the samples, then the model, and answer them, each finished batch recorded in ``out``
        (and read back when it resumes); the rows and summary are written whole at the end."""
        lock = eval_lock(self.out) if self.out else None  # a bad out or a second writer fails before any work
        self.check()
        samples = self.selection.load()
        evaluator = Evaluator(loading.load_model(self.model, device=self.device, dtype=self.dtype,
                                                 allow_untested=self.allow_untested), self.selection.get_task(),
                              self.config)
        evaluator.check(samples)  # an input too long for the model fails before any work
        header = eval_header(evaluator, samples, self.batch_size, data=self.selection.source,
                             seed=self.selection.seed, level=self.selection.level, split=self.selection.split_name,
                             carved=self.selection.ids is not None)

        def stage(name: str) -> Callable[[int], None] | None:
            return None if progress is None else (lambda done: progress(name, done, len(samples)))

        if self.kind == "policy":
            result = self._run_policy(evaluator, samples, header, lock, progress)
        elif self.kind == "router":
            from .library_router import Router

            router = Router.load(self.router, evaluator.cm)
            store = self._open(lock, {**header, "kind": "router", "router": str(router.folder),
                                      "library": [str(c) for c in router.library], "setting": router.setting.__dict__})
            summary, rows = store.finished or evaluate_router(
                router, evaluator, samples, self.batch_size, header, self.name, self.selection.seed,
                None if progress is None else (lambda name, done: progress(name, done, len(samples))), store)
            result = EvalResult("router", summary, rows, router=router)
        else:
            chain = as_chain(self._chain, evaluator.cm.depth)
            store = self._open(lock, {**header, "kind": "chain", "chain": str(chain)})
            summary, rows = store.finished or evaluate_chain(evaluator, chain, samples, self.batch_size, header,
                                                             self.name, stage(str(chain)), store)
            result = EvalResult("chain", summary, rows)
        result.reused = self.store.finished is not None
        if not result.reused:
            self.store.finish(result.rows, result.summary)
        result.summary_path = self.store.summary_path if self.out else None
        return result

    @property
    def _chain(self) -> str | Chain:
        return self.chains[0] if self.chains else "full"

    def _open(self, lock: FolderLock | None, config: dict) -> EvalStore:
        """The output (in memory without ``out``): a finished one of the same config is handed back, not recomputed."""
        self.store = EvalStore(self.out, config, lock) if self.out else EvalStore(None, config)
        return self.store

    def _policy_spec(self, depth: int | None):
        """The policy's spec for a model of ``depth`` layers, checked with the options that go with it (None while
        the depth is unknown: the checks of the spec itself then wait for the weights)."""
        from .calibrate import parse_objective
        from .sources import make_spec
        from .spec import KINDS

        routed = self.policy in KINDS and KINDS[self.policy].routed
        if self.calibrate:
            parse_objective(self.calibrate)
            if self.dev is None and (self.selection.data_file or not self.selection.get_task().splits):
                raise UsageError(f"--calibrate chooses on the dev split; {self.selection.task}"
                                 + (" read from a data file" if self.selection.data_file else "") + " has none")
        if self.router is not None and not routed:
            raise UsageError("--router belongs to --policy router or layer-router (or to a plain `cola eval --router`)")
        if self.replay and not self.sweep:
            raise UsageError("--replay answers from the sweep's table: it needs --sweep")
        if (self.top_k > 1 or self.trust_runs) and self.policy != "program":
            raise UsageError("--top-k and --trust-runs belong to --policy program (PoLar's best-of-k, an oracle)")
        if self.trust_runs and self.top_k < 2:
            raise UsageError("--trust-runs reads PoLar's released best-of-k: it needs --top-k (PoLar's: 5)")
        if routed and (self.calibrate or self.sweep):
            raise UsageError(f"a {self.policy} policy has no setting to calibrate or sweep; its router was selected "
                             "on dev when it was fitted")
        if depth is None:
            return None
        spec = make_spec(self.policy, depth, self.chains, self.chains_from, self.top, self.thresholds,
                         calibrating=bool(self.calibrate), **self.settings, router=self.router)
        spec.check(depth, self.config.mode)
        return spec

    def _run_policy(self, evaluator: Evaluator, samples: list[Sample], header: dict, lock: FolderLock | None,
                    progress: Progress | None) -> EvalResult:
        """The policy (calibrated on dev first, with ``calibrate``) and full depth on ``samples``, side by side."""
        from .calibrate import calibrate

        spec = self._policy_spec(evaluator.cm.depth)
        store = self._open(lock, {
            **header, "kind": "policy", "policy": spec.to_dict(), "calibrate": self.calibrate,
            "dev_n": self.dev_n if self.calibrate else None, "ks": list(self.ks), "rules": list(self.rules),
            "temperatures": list(self.temperatures), "sweep": self.sweep, "replay": self.replay,
            **({"top_k": self.top_k, "trust_runs": list(self.trust_runs)} if self.top_k > 1 else {})})
        if store.finished is not None:
            return EvalResult("policy", *store.finished)
        router = spec.load_router(evaluator.cm, evaluator.config) if spec.routed else None
        calibration = None
        if self.calibrate:
            dev_selection = self.dev or self.selection.dev(self.dev_n)
            dev = dev_selection.load()
            evaluator.check(dev)
            spec, calibration = calibrate(
                spec, evaluator, dev, self.calibrate, self.batch_size, self.ks, self.rules, self.temperatures,
                dev_selection.split_name, None if progress is None else
                (lambda done: progress("calibrate on dev", done, len(dev))), store)
        family = spec.family(self.ks, self.rules, self.temperatures) if self.sweep else []
        # a search that lacks some of the samples is refused before any work
        trusted = trusted_verdicts(self.trust_runs, header, [s.id for s in samples]) if self.trust_runs else None
        summary, rows = evaluate_policy(
            spec, evaluator, samples, self.batch_size, header, self.name, router, calibration, family, self.replay,
            None if progress is None else (lambda name, done: progress(name, done, len(samples))), store)
        if self.top_k > 1:
            oracle = best_of_k(router, evaluator, samples, self.top_k, trusted, self.batch_size,
                               None if progress is None else (lambda done: progress("oracle", done, len(samples))),
                               store)
            for row, o in zip(rows, oracle):
                row["oracle"] = o
            summary["oracle"] = oracle_summary(oracle, self.top_k, self.trust_runs)
        return EvalResult("policy", summary, rows, calibration=calibration)
