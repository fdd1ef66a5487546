"""Label-free depth adaptation: a small library of chains found by train-split searches, and a router that picks
one of them for an unseen input from the model's own hidden states, without its answer.

- **Library** (:func:`candidates`, :func:`chain_library`): the chains the searches found right most often are
  candidates; each is then asked on *every* searched sample (a search tries most chains on one sample only, so
  its records cannot say how often a chain is right), and a greedy cover of those verdicts picks the library, the
  full chain first. A sample's value under a library is ``1 + w * (depth - length) / depth`` for its shortest right
  library chain (0 if none), so a chain is added for the samples it fixes and for the layers it saves on samples
  already right. A chain must be right on at least ``min_support`` samples: on four options a chain right on one
  sample is what a couple of hundred tries give by luck.
- **Features** (:func:`prompt_features`): the prompt's hidden states after the first ``f`` positions of the full
  chain, averaged over its tokens. They are computed through the sample's prefix cache, so a routed chain that
  starts with those layers reuses them: the layers computed per input are the feature layers plus the routed
  chain's positions after its shared prefix.
- **Predictor** (:class:`Predictor`): per library chain, a logistic regression (scikit-learn) of "this chain
  answers right" on the standardised features; an input goes to the chain of highest
  ``P(right) - mu * layers / depth``. The feature layer, the regularisation, class weighting (the guard against
  collapsing onto the chain right most often, usually the full one) and ``mu`` are chosen on the dev split only.

A router folder holds ``config.json`` (model, weights hash, depth, task, mode, the library in chain notation, the
chosen setting and the dev table) and ``predictor.safetensors`` (the standardiser and the coefficients): no pickle.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..core import prefix_cache
from ..core.chain import Chain, as_chain
from ..core.executor import prompt_hidden
from ..core.models import ColaModel
from ..core.prefix_cache import PrefixCache
from ..errors import RouterError, UsageError
from ..evaluation.evaluator import EvalConfig, Evaluator
from ..storage import read_json, save_tensors_atomic, write_atomic
from ..tasks import Sample, Selection

CONFIG, PREDICTOR = "config.json", "predictor.safetensors"
FEATURE_LAYERS = (2, 4, 8)
C_GRID = (0.01, 0.1, 1.0)
MU_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
WEIGHTS = ("none", "balanced")


def candidates(records: Sequence[dict], depth: int, most: int = 24) -> list[Chain]:
    """The chains the search records found right on any sample (the full chain aside), those right on the most
    samples first, then the shorter: at most ``most`` of them."""
    right: dict[Chain, int] = {}
    for record in records:
        for e in record["evaluations"]:
            if e["correct"]:
                chain = Chain.parse(e["chain"])
                right[chain] = right.get(chain, 0) + 1
    right.pop(Chain.full(depth), None)
    return sorted(right, key=lambda c: (-right[c], len(c), c.layers))[:most]


def chain_library(right: dict[Chain, set[str]], depth: int, size: int = 8, min_support: int = 3,
                  length_weight: float = 0.5) -> list[Chain]:
    """Up to ``size`` chains, the full chain first, covering greedily the samples each chain answers right
    (``right``: chain -> ids of the samples it got right, each chain asked on every sample; module doc)."""
    if size < 1:
        raise UsageError(f"a library holds at least the full chain; size {size}")
    full = Chain.full(depth)
    pool = {c: ids for c, ids in right.items() if len(ids) >= min_support and c != full}

    def value(chain: Chain) -> float:
        return 1 + length_weight * (depth - len(chain)) / depth

    best = {sample_id: value(full) for sample_id in right.get(full, ())}
    library = [full]
    while len(library) < size and pool:
        def gain(chain: Chain) -> float:
            return sum(max(0.0, value(chain) - best.get(i, 0.0)) for i in pool[chain])

        chain = min(pool, key=lambda c: (-gain(c), len(c), c.layers))
        if gain(chain) <= 0:
            break
        for i in pool.pop(chain):
            best[i] = max(best.get(i, 0.0), value(chain))
        library.append(chain)
    return library


def layers_computed(chain: Chain, features: int) -> int:
    """Chain positions run over an input: the ``features`` layers of the full chain, then the chain's positions
    after the prefix it shares with them."""
    return prefix_cache.layers_computed([range(features), chain])


@torch.inference_mode()
def prompt_features(cm: ColaModel, ids: torch.Tensor, layers: int, prefix: PrefixCache | None = None) -> torch.Tensor:
    """The prompt ``ids`` (1, length)'s hidden states after the first ``layers`` positions of the full chain,
    averaged over its tokens (float32, (hidden,)); computed through ``prefix`` (this prompt's cache) when given."""
    return prompt_hidden(cm, Chain(tuple(range(layers))), ids, prefix)[0].float().mean(0).cpu()


@dataclass
class Predictor:
    """Per library chain a logistic model of "right" on standardised features: ``sigmoid(((x - mean) / scale) @
    coef.T + intercept)``."""

    mean: torch.Tensor  # (dim,)
    scale: torch.Tensor  # (dim,)
    coef: torch.Tensor  # (chains, dim)
    intercept: torch.Tensor  # (chains,)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """P(right) of each chain for each input: (inputs, chains) for features (inputs, dim)."""
        return torch.sigmoid(((x.double() - self.mean) / self.scale) @ self.coef.T + self.intercept)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept}


def fit_predictor(x: torch.Tensor, right: torch.Tensor, c: float, weight: str) -> Predictor:
    """Fit one logistic regression per column of ``right`` (inputs, chains; bool) on features ``x`` (inputs,
    dim); a column that is all right or all wrong gets the constant model of its (clipped) rate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x.double().numpy())
    xs = scaler.transform(x.double().numpy())
    coef = torch.zeros(right.shape[1], x.shape[1], dtype=torch.float64)
    intercept = torch.zeros(right.shape[1], dtype=torch.float64)
    for k in range(right.shape[1]):
        y = right[:, k].numpy()
        if y.all() or not y.any():
            rate = min(max(float(y.mean()), 1e-3), 1 - 1e-3)
            intercept[k] = math.log(rate / (1 - rate))
            continue
        model = LogisticRegression(C=c, class_weight=None if weight == "none" else weight, max_iter=2000)
        model.fit(xs, y)
        coef[k] = torch.from_numpy(model.coef_[0])
        intercept[k] = float(model.intercept_[0])
    scale = torch.from_numpy(scaler.scale_).double()
    return Predictor(torch.from_numpy(scaler.mean_).double(), scale, coef, intercept)


def choose(probabilities: torch.Tensor, costs: Sequence[int], depth: int, mu: float) -> torch.Tensor:
    """The library index each input goes to: the highest ``P(right) - mu * layers / depth`` (the earlier chain,
    the full one first, among equals)."""
    penalty = mu * torch.tensor(costs, dtype=torch.float64) / depth
    return torch.argmax(probabilities - penalty, dim=1)


@dataclass
class Setting:
    """One point of the dev grid: the feature layers, the inverse regularisation ``c``, class weighting and the
    length penalty ``mu``."""

    features: int
    c: float
    weight: str
    mu: float


def select(
    train_x: dict[int, torch.Tensor], train_right: torch.Tensor,
    dev_x: dict[int, torch.Tensor], dev_right: torch.Tensor,
    library: Sequence[Chain], depth: int, budget: float,
    c_grid: Sequence[float] = C_GRID, mu_grid: Sequence[float] = MU_GRID, weights: Sequence[str] = WEIGHTS,
) -> tuple[Setting, Predictor, list[dict]]:
    """Fit on train every setting of the grid and keep the one of highest dev accuracy among those that compute at
    most ``budget * depth`` layers per dev input on average (fewer layers first among equals; if none is within the
    budget, the cheapest). ``*_x`` map a feature layer count to features (inputs, dim); ``*_right`` are (inputs,
    chains) verdicts of the library's chains. Returns the setting, its predictor and the dev table (a row per
    setting)."""
    table: list[dict] = []
    fitted: dict[tuple, Predictor] = {}
    for features, c, weight in itertools.product(sorted(train_x), c_grid, weights):
        predictor = fitted[(features, c, weight)] = fit_predictor(train_x[features], train_right, c, weight)
        probabilities = predictor.probabilities(dev_x[features])
        costs = [layers_computed(chain, features) for chain in library]
        for mu in mu_grid:
            picks = choose(probabilities, costs, depth, mu)
            right = dev_right[torch.arange(len(picks)), picks]
            table.append({"features": features, "c": c, "weight": weight, "mu": mu,
                          "dev_accuracy": float(right.double().mean()),
                          "dev_layers": float(torch.tensor([costs[i] for i in picks]).double().mean()),
                          "dev_full_share": float((picks == 0).double().mean())})
    within = [row for row in table if row["dev_layers"] <= budget * depth + 1e-9]
    best = (min(within, key=lambda r: (-r["dev_accuracy"], r["dev_layers"])) if within
            else min(table, key=lambda r: (r["dev_layers"], -r["dev_accuracy"])))
    setting = Setting(best["features"], best["c"], best["weight"], best["mu"])
    return setting, fitted[(setting.features, setting.c, setting.weight)], table


@dataclass
class Router:
    """A fitted router: its library, setting and predictor, and what it was fitted for (``config``)."""

    config: dict
    library: list[Chain]
    setting: Setting
    predictor: Predictor
    folder: Path | None = None  # where it was loaded from

    @property
    def costs(self) -> list[int]:
        """Layers computed per input for each library chain, the feature layers included."""
        return [layers_computed(chain, self.setting.features) for chain in self.library]

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``predictor.safetensors`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_tensors_atomic(folder / PREDICTOR, self.predictor.tensors())
        config = {**self.config, "library": [str(c) for c in self.library], "setting": self.setting.__dict__}
        write_atomic(folder / CONFIG, json.dumps(config, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, cm: ColaModel | None = None) -> Router:
        """Read a router folder; with ``cm``, check that it was fitted for this model (name, weights, depth)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG).is_file() or not (folder / PREDICTOR).is_file():
            raise RouterError(f"{folder} is not a router folder (it needs {CONFIG} and {PREDICTOR}; "
                              "make one with `cola router fit`)")
        config = read_json(folder / CONFIG)
        try:
            library = [Chain.parse(c) for c in config["library"]]
            setting = Setting(**config["setting"])
        except (ValueError, KeyError, TypeError) as err:
            raise RouterError(f"{folder / CONFIG} is not a router config: {err}") from None
        try:
            tensors = load_file(str(folder / PREDICTOR))
            predictor = Predictor(tensors["mean"], tensors["scale"], tensors["coef"], tensors["intercept"])
        except (SafetensorError, OSError, KeyError, RuntimeError) as err:
            raise RouterError(f"{folder / PREDICTOR} is not a readable predictor ({type(err).__name__}: {err}); "
                              "re-fit the router") from None
        dim, chains = predictor.mean.shape[0], len(library)
        shapes = {"scale": (dim,), "coef": (chains, dim), "intercept": (chains,)}
        if any(tuple(predictor.tensors()[k].shape) != s for k, s in shapes.items()):
            raise RouterError(f"{folder / PREDICTOR} does not fit its config ({chains} chains, {dim} features)")
        if cm is not None:
            from ..core.hashes import weights_hash

            if config["model"] != cm.name or config["depth"] != cm.depth:
                raise RouterError(f"{folder} was fitted for {config['model']} ({config['depth']} layers), not "
                                  f"{cm.name} ({cm.depth} layers)")
            if config.get("weights") != weights_hash(cm):
                raise RouterError(f"{folder} was fitted on other weights of {cm.name} ({config.get('weights')}, "
                                  f"these are {weights_hash(cm)})")
            if dim != cm.config.hidden_size:
                raise RouterError(f"{folder} expects {dim} features; {cm.name} has hidden size {cm.config.hidden_size}")
        return cls(config, library, setting, predictor, folder)

    def route(self, cm: ColaModel, features: torch.Tensor) -> list[Chain]:
        """The library chain for each input's features (inputs, dim)."""
        picks = choose(self.predictor.probabilities(features), self.costs, cm.depth, self.setting.mu)
        return [self.library[int(i)] for i in picks]


def route_inputs(router: Router, evaluator: Evaluator, samples: Sequence[Sample],
                 prefixes: Sequence[PrefixCache]) -> list[Chain]:
    """The chain ``router`` picks for each sample, from its features computed through its prefix cache (so the
    routed chain reuses the feature layers it starts with)."""
    cm = evaluator.cm
    features = torch.stack([prompt_features(cm, evaluator.prompt_ids(s), router.setting.features, p)
                            for s, p in zip(samples, prefixes)])
    return router.route(cm, features)


def routed_outcomes(router: Router, evaluator: Evaluator, samples: Sequence[Sample], batch: int = 16,
                    progress: Callable[[int], None] | None = None) -> list[tuple[Chain, int, object]]:
    """Route and answer ``samples``, ``batch`` at a time: each sample's features through its prefix cache, its
    routed chain then run with the samples routed alike (reusing the feature layers it shares). Returns (chain,
    layers computed, outcome) per sample, in order; ``progress(done)`` after each batch."""
    results = []
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        prefixes = [PrefixCache() for _ in chunk]
        chains = route_inputs(router, evaluator, chunk, prefixes)
        outcomes = evaluator.evaluate_assigned(chains, chunk, len(chunk), prefixes)
        results += list(zip(chains, [p.layers_computed for p in prefixes], outcomes))
        if progress is not None:
            progress(len(chunk))
    return results


def library_verdicts(evaluator: Evaluator, library: Sequence[Chain], samples: Sequence[Sample], batch: int = 16,
                     progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """(samples, chains) bool: whether each library chain answers each sample right."""
    columns = [[o.correct for o in evaluator.evaluate_many(chain, samples, batch,
                                                           progress=progress and (lambda d: progress(len(d))))]
               for chain in library]
    return torch.tensor(columns, dtype=torch.bool).T.reshape(len(samples), len(library))


def sample_features(evaluator: Evaluator, samples: Sequence[Sample], layers: Sequence[int],
                    progress: Callable[[int], None] | None = None) -> dict[int, torch.Tensor]:
    """For each feature layer count, the features (samples, hidden) of every sample (one pass of the deepest per
    sample: the shallower reuse it through the prompt's prefix cache)."""
    rows: dict[int, list[torch.Tensor]] = {f: [] for f in layers}
    for sample in samples:
        prefix, ids = PrefixCache(), evaluator.prompt_ids(sample)
        for f in sorted(layers, reverse=True):
            rows[f].append(prompt_features(evaluator.cm, ids, f, prefix))
        if progress is not None:
            progress(1)
    return {f: torch.stack(r) for f, r in rows.items()}


def fit_router(evaluator: Evaluator, library: Sequence[Chain], train: Sequence[Sample], dev: Sequence[Sample],
               budget: float, feature_layers: Sequence[int] = FEATURE_LAYERS, batch: int = 16,
               config: dict | None = None, progress: bool = True,
               known: torch.Tensor | None = None) -> tuple[Router, dict]:
    """Evaluate the library on the train and dev samples, compute their features, fit on train and select on dev
    (:func:`select`). Returns the router (its ``config``: the given one, plus the fit's counts and dev table) and a
    summary: each library chain's train and dev accuracy, the chosen setting's dev accuracy, layers and full share.
    ``known``: the library's verdicts (:func:`library_verdicts`) on the first ``len(known)`` train samples, already
    computed (the searched samples, asked while building the library); only the rest are evaluated."""
    cm = evaluator.cm
    if set(s.id for s in train) & set(s.id for s in dev):
        raise UsageError("train and dev samples share ids: select on samples the fit has not seen")
    if any(not 1 <= f <= cm.depth for f in feature_layers):
        raise UsageError(f"feature layers must be within 1..{cm.depth}, not {list(feature_layers)}")
    done = 0 if known is None else len(known)
    if known is not None and (known.shape[1] != len(library) or done > len(train)):
        raise ValueError(f"known verdicts of shape {tuple(known.shape)} do not fit {len(library)} chains and "
                         f"{len(train)} train samples")
    total = len(library) * (len(train) - done + len(dev)) + len(train) + len(dev)
    with tqdm(total=total, desc="router fit", unit="eval", disable=not progress, dynamic_ncols=True) as bar:
        train_right = library_verdicts(evaluator, library, train[done:], batch, bar.update)
        if known is not None:
            train_right = torch.cat([known.to(torch.bool), train_right])
        dev_right = library_verdicts(evaluator, library, dev, batch, bar.update)
        train_x = sample_features(evaluator, train, feature_layers, bar.update)
        dev_x = sample_features(evaluator, dev, feature_layers, bar.update)
    setting, predictor, table = select(train_x, train_right, dev_x, dev_right, library, cm.depth, budget)
    chosen = next(r for r in table if (r["features"], r["c"], r["weight"], r["mu"]) ==
                  (setting.features, setting.c, setting.weight, setting.mu))
    summary = {
        "chains": [{"chain": str(c), "length": len(c), "train_accuracy": float(train_right[:, k].double().mean()),
                    "dev_accuracy": float(dev_right[:, k].double().mean())} for k, c in enumerate(library)],
        "dev": chosen,
    }
    config = {**(config or {}), "train_samples": len(train), "dev_samples": len(dev), "budget": budget,
              "train_ids": [s.id for s in train], "dev_ids": [s.id for s in dev],
              "feature_layers": list(feature_layers), "library_accuracy": summary["chains"], "dev_table": table}
    return Router(config, list(library), setting, predictor), summary


RUN_KEYS = ("model", "weights", "dtype", "depth", "task", "mode", "chat", "score_style", "control")


def untrained_router(cm: ColaModel, folder: str | Path, seed: int = 0) -> Path:
    """A router for ``cm`` over full depth and two shorter chains whose predictor has seeded random weights (reading
    the 2-layer features), written to ``folder``: the stand-in the policy contract tests run (:meth:`~cola.policies.
    spec.PolicySpec.example`)."""
    from ..core.hashes import weights_hash

    generator = torch.Generator().manual_seed(seed)
    dim, depth = cm.config.hidden_size, cm.depth
    library = [Chain.full(depth), Chain(tuple(range(depth - 1))), Chain(tuple(range(depth // 2)))]
    predictor = Predictor(torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64),
                          torch.randn(len(library), dim, generator=generator, dtype=torch.float64),
                          torch.zeros(len(library), dtype=torch.float64))
    config = {"model": cm.name, "depth": depth, "weights": weights_hash(cm), "untrained": True}
    return Router(config, library, Setting(2, 1.0, "none", 0.0), predictor).save(folder)


@dataclass(frozen=True)
class LibraryFit:
    """How ``cola router fit`` fits a library router, its settings as one value. The library is ``library`` (chains
    in notation; the full chain is put first), else the greedy cover (:func:`chain_library`) of ``size`` chains, each
    right on at least ``min_support`` searched samples, from the ``most`` candidates (:func:`candidates`) asked on
    every searched sample; the router's features (after one of ``feature_layers``) and setting are chosen on dev
    within ``budget`` x depth layers (:func:`select`). Train samples are the runs' samples, then up to ``fit_n`` of
    the same split in the runs' seeded order; dev samples are ``dev_n`` of the task's dev split (seed ``seed``) or of
    ``dev_file`` (or the samples ``dev`` selects); ``data`` / ``data_file`` say where the runs' data is when not where
    they recorded it."""

    size: int = 8
    most: int = 24
    min_support: int = 3
    library: tuple[str, ...] | None = None
    budget: float = 0.85
    feature_layers: tuple[int, ...] = tuple(FEATURE_LAYERS)
    fit_n: int | None = None
    dev_n: int = 200
    seed: int = 0
    data: str | None = None
    data_file: str | None = None
    dev_file: str | None = None
    dev: Selection | None = None  # the dev samples as a selection, instead of dev_n of the task's dev split


def fit_from_runs(runs: Sequence[str | Path], fit: LibraryFit = LibraryFit(), batch: int = 16,
                  device: str | None = None, allow_untested: bool = False, progress: bool = True) -> tuple[Router, dict]:
    """A router fitted on the samples of train-split search ``runs`` (of one model, task and prompt format) and
    selected on dev samples, as ``cola router fit`` does, by the settings ``fit`` (:class:`LibraryFit`). Decoy runs
    give a router of decoy golds (the chance control). Returns the router and the summary of :func:`fit_router`, with
    ``library_search`` (candidates asked, how many were right on ``min_support`` samples) when the library was chosen
    here."""
    from ..core.loading import load_model
    from ..evaluation.provenance import fit_environment
    from ..search.run import run_samples
    from ..storage import read_config, read_records
    from ..tasks import DataError, get_task, load_samples, with_control

    configs = [read_config(folder) for folder in runs]
    for folder, config in zip(runs, configs):
        if config.get("static") or "mcts" not in config:
            raise RouterError(f"{folder} is not a per-sample search run; a router is fitted on those")
        if config.get("split") in ("dev", "test"):
            raise RouterError(f"{folder} searched the {config['split']} split: fit a router on train runs (select on "
                              "dev, report on test)")
    for folder, config in zip(runs[1:], configs[1:]):
        differ = [k for k in RUN_KEYS if config.get(k) != configs[0].get(k)]
        if differ:
            raise RouterError(f"{folder} differs from {runs[0]} in {', '.join(differ)}: fit one router per model, "
                              "task and prompt format")
    first = configs[0]
    # a given library is checked against the runs' depth before the model loads
    library = None if fit.library is None else [as_chain(c, first["depth"]) for c in fit.library]
    per_run = [read_records(folder) for folder in runs]
    records = [r for run in per_run for r in run]
    if not records:
        raise RouterError(f"no finished records in {', '.join(map(str, runs))}")
    searched, seen = [], set()  # the samples with a finished search, each once
    for run, config in zip(per_run, configs):
        done = {r["id"] for r in run}
        for sample in run_samples(config, fit.data or fit.data_file):
            if sample.id in done and sample.id not in seen:
                seen.add(sample.id)
                searched.append(sample)
    train = list(searched)
    task = get_task(first["task"], first.get("lm_eval_include"))
    if fit.fit_n is not None and len(train) < fit.fit_n:  # more samples of the runs' data, never searched
        more = [s for s in load_samples(task, None if fit.data_file else fit.data or first.get("data"), fit.data_file,
                                        0, first["seed"], first.get("level"),
                                        split=None if fit.data_file else first.get("split"))
                if s.id not in seen][: fit.fit_n - len(train)]
        train += with_control(more, first.get("control"))
    if fit.dev is not None:  # named samples (a dev split `cola bench` carved)
        dev = with_control(fit.dev.load(), first.get("control"))
    elif fit.dev_file is None and "dev" not in task.splits:
        raise DataError(f"task {task.name!r} has no dev split: pass --dev-file FILE.jsonl (held-out samples of its "
                        "shape) to select the router on")
    else:
        dev = with_control(load_samples(task, None if fit.dev_file else fit.data or first.get("data"), fit.dev_file,
                                        fit.dev_n, fit.seed, first.get("level"),
                                        split=None if fit.dev_file else "dev"), first.get("control"))
    cm = load_model(first["model"], device=device, dtype=first["dtype"], allow_untested=allow_untested)
    if cm.depth != first["depth"]:
        raise RouterError(f"{first['model']} has {cm.depth} layers here; the runs were made with {first['depth']}")
    evaluator = Evaluator(cm, task, EvalConfig(mode=first["mode"], chat=first["chat"], score_style=first["score_style"],
                                               max_new_tokens=first.get("max_new_tokens")))
    full, known, search_info = Chain.full(cm.depth), None, None
    if library is None:  # the candidates asked on every searched sample, then covered greedily
        pool = [full] + candidates(records, cm.depth, fit.most)
        with tqdm(total=len(pool) * len(searched), desc="library candidates", unit="eval", disable=not progress,
                  dynamic_ncols=True) as bar:
            verdicts = library_verdicts(evaluator, pool, searched, batch, bar.update)
        right = {c: {s.id for s, v in zip(searched, verdicts[:, k].tolist()) if v} for k, c in enumerate(pool)}
        chosen = chain_library(right, cm.depth, fit.size, fit.min_support)
        search_info = {"candidates": len(pool) - 1, "searched": len(searched),
                       "supported": sum(len(ids) >= fit.min_support for c, ids in right.items() if c != full)}
    else:
        chosen = list(library)
    chosen = [full] + [c for c in dict.fromkeys(chosen) if c != full]
    if library is None:  # the searched samples open the train set: their verdicts are known from the candidates
        known = verdicts[:, [pool.index(c) for c in chosen]]
    config = {key: first.get(key) for key in RUN_KEYS + ("split", "data", "max_new_tokens")}
    config.update(runs=[str(f) for f in runs], library_from="--library" if library is not None else "greedy cover",
                  min_support=fit.min_support, dev_split=fit.dev_file or "dev", dev_seed=fit.seed,
                  environment=fit_environment(cm))  # the software, device and threads the features were computed on
    router, summary = fit_router(evaluator, chosen, train, dev, fit.budget, fit.feature_layers, batch, config,
                                 progress=progress, known=known)
    summary.update(library_search=search_info, runs=len(runs), depth=cm.depth, task=task.name, mode=first["mode"])
    return router, summary
