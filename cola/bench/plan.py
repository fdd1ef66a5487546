"""What ``cola bench`` runs: the splits it reads (fit on train, choose on dev, report on test; carved with a recorded
seed where the task has none) and its stages, each a library job with its settings, its output and its size, in the
order they depend on each other. Nothing here loads weights: the plan and its estimate come before any model.

Stages by family:

- reference: ``full`` (full depth on test);
- static: ``prune`` (block influence on train) and the chains without the m least influential layers; the chains
  without the last k layers; ``static-search`` (one chain searched on dev) and the best static chain;
- oracle (every number labelled ORACLE): a per-sample search on test beside its decoy, menu and sampling controls
  at the same budget;
- learned from search labels: the library router (``search-train``, ``router-fit``), Dr.LLM's per-layer routers
  (``drllm-*``), PoLar's predictor (``polar-*``), each beside its random control and a decoy-trained twin;
- label-free: a confidence cascade over the block-influence chain and a vote over chains, calibrated on dev;
  self-consistency in generate mode;
- transfer (``--transfer TASK``): each deployable method and its controls, as chosen on the bench's task (its
  chains, routers and calibrated policies unchanged), on another task's reported split.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UsageError
from ..tasks import Selection, get_task, load_samples
from .presets import PRESETS, Preset

FAMILIES = ("reference", "static", "oracle", "learned", "label-free", "supervision", "transfer")


@dataclass(frozen=True)
class Stage:
    """One job of the bench: its ``name`` (its output's name under ``stages/``), ``family``, ``kind`` (which library
    job runs it), the ``settings`` that decide its output, the stages whose outputs it reads (``needs``) and its size
    in chain evaluations (for the estimate)."""

    name: str
    family: str
    kind: str
    settings: dict
    needs: tuple[str, ...] = ()
    size: int = 0


@dataclass
class Bench:
    """One ``cola bench``: the model and task (a registered task, ``mc_jsonl``/``qa_jsonl`` with ``data_file``, or
    ``lm-eval:NAME``), how the task is asked, the preset's sizes, where it writes (``out``), the folders of search
    runs it may ``adopt`` (:func:`cola.search.launch.find_run`) and the tasks its methods ``transfer`` to."""

    model: str
    task: str
    out: str
    preset: str = "quick"
    data_dir: str | None = None
    data_file: str | None = None
    include: str | None = None
    mode: str = "score"
    dtype: str | None = "auto"
    device: str | None = None
    seed: int = 0
    workers: int | None = None
    adopt: tuple[str, ...] = ()  # folders of search runs to take (or finish) instead of searching again
    transfer: tuple[str, ...] = ()  # other tasks the methods chosen here are reported on, each on its own split
    sizes: Preset = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}; presets: {', '.join(PRESETS)}")
        self.sizes = self.sizes or PRESETS[self.preset]
        missing = [a for a in self.adopt if not Path(a).is_dir()]
        if missing:
            raise UsageError(f"--adopt {' '.join(missing)}: no such folder (give run folders or folders of them)")
        task = get_task(self.task, self.include)
        if self.mode not in task.modes:
            raise UsageError(f"task {self.task} is asked in {' or '.join(task.modes)} mode, not {self.mode}")
        for name in self.transfer:
            other = get_task(name, self.include)
            if name == self.task or not (other.splits or other.generator) or self.mode not in other.modes:
                why = ("is the bench's own task" if name == self.task else "reads a --data-file"
                       if not (other.splits or other.generator) else f"is not asked in {self.mode} mode")
                raise UsageError(f"--transfer {name}: that task {why}; give a task with its own splits, asked in "
                                 f"{self.mode} mode")

    @property
    def folder(self) -> Path:
        return Path(self.out)

    @property
    def depth(self) -> int:
        """The model's depth, read from its config (no weights)."""
        from ..core.loading import model_config

        return model_config(self.model).num_hidden_layers

    def stage_path(self, name: str) -> Path:
        return self.folder / "stages" / name

    # --- the splits -------------------------------------------------------------------------------------------

    def splits(self) -> dict[str, Selection]:
        """train, dev and test as selections (:meth:`own_splits`), and each ``--transfer`` task's reported split
        (:meth:`transfer_splits`)."""
        return {**self.own_splits(), **self.transfer_splits()}

    def own_splits(self) -> dict[str, Selection]:
        """train, dev and test as selections: the task's own splits where it has all three; else carved, with the
        bench's seed, from what it has (a dev split out of train; train, dev and test out of a file, a generated
        task or a single split), recorded by id. Test gets ``sizes.test`` samples, dev ``sizes.dev``; train the
        rest."""
        task = get_task(self.task, self.include)
        base = Selection(self.task, self.data_dir, self.data_file, include=self.include, seed=self.seed)
        if self.data_file is None and {"train", "dev", "test"} <= set(task.splits):
            return {s: replace(base, split=s) for s in ("train", "dev", "test")}
        if self.data_file is None and {"train", "test"} <= set(task.splits):  # dev carved from train
            train = load_samples(task, self.data_dir, n=0, seed=self.seed, split="train")
            dev_ids, train_ids = _carve([s.id for s in train], self.seed, self.sizes.dev)
            return {"train": replace(base, split="train", ids=tuple(train_ids)),
                    "dev": replace(base, split="train", ids=tuple(dev_ids)), "test": replace(base, split="test")}
        if self.data_file is None and task.generator is not None:
            total = self.sizes.test + self.sizes.dev + max(self.sizes.train, self.sizes.prune) + self.sizes.test
            pool = [s.id for s in load_samples(task, n=total, seed=self.seed)]
            base = replace(base, n=total)
        else:
            split = None if self.data_file else task.split(None)
            pool = [s.id for s in load_samples(task, self.data_dir, self.data_file, n=0, seed=self.seed, split=split)]
            base = replace(base, split=split)
        test_ids, rest = _carve(pool, self.seed, self.sizes.test)
        dev_ids, train_ids = _carve(rest, self.seed + 1, self.sizes.dev)
        return {"train": replace(base, ids=tuple(train_ids)), "dev": replace(base, ids=tuple(dev_ids)),
                "test": replace(base, ids=tuple(test_ids))}

    def transfer_splits(self) -> dict[str, Selection]:
        """Each ``--transfer`` task's reported split (its default one: ARC's test, CommonsenseQA's labelled dev), as
        ``TASK/test``; the samples a generated task draws with the bench's seed. Read here, so that a missing file
        fails before any weight loads."""
        out = {}
        for name in self.transfer:
            out[f"{name}/test"] = Selection(name, self.data_dir, include=self.include, seed=self.seed,
                                            split=self.transfer_split(name))
            self.sized(out[f"{name}/test"], self.sizes.transfer or self.sizes.test).load()
        return out

    def transfer_split(self, name: str) -> str | None:
        """The split a ``--transfer`` task is reported on: its default one (None: a generated task)."""
        task = get_task(name, self.include)
        return task.split(None) if task.splits else None

    def sized(self, selection: Selection, n: int) -> Selection:
        """``n`` samples of a split: a carved split's first ``n`` ids, else the seeded subset of ``n``."""
        if selection.ids is not None:
            return replace(selection, ids=selection.ids[:n])
        return replace(selection, n=n)

    # --- the stages -------------------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        """Every stage of the plan, in an order that runs each after the stages it reads."""
        from ..search.prune import most_dropped

        z = self.sizes
        most = most_dropped(self.depth)  # as `cola prune`: a quarter of the layers, at least one
        if most < 1:
            raise UsageError(f"{self.model} has {self.depth} layer: no chain of it skips or repeats a layer to compare")
        z = replace(z, bi=min(z.bi, most), drop=min(z.drop, most))
        test = lambda n=z.test: {"split": "test", "n": n}  # noqa: E731
        out: list[Stage] = [Stage("full", "reference", "eval", {**test(), "chain": "full"}, size=z.test)]
        out.append(Stage("prune", "supervision", "prune", {"split": "train", "n": z.prune}, size=z.prune))
        # the chains without m = 1..bi least influential layers, and without `most`: the cascade's cheap chain
        out += [Stage(f"bi{m}", "static", "eval", {**test(), "chain": f"prune:{m}"}, ("prune",), z.test)
                for m in sorted({*range(1, z.bi + 1), most})]
        out += [Stage(f"drop-last{k}", "static", "eval", {**test(), "chain": f"drop-last:{k}"}, size=z.test)
                for k in range(1, z.drop + 1)]
        out.append(Stage("static-search", "supervision", "search",
                         {"split": "dev", "n": z.static_dev or z.dev, "static": True, "preset": "study",
                          "sims": z.static_sims}, size=(z.static_dev or z.dev) * (z.static_sims + 1)))
        out.append(Stage("static-best", "static", "eval", {**test(), "chain": "static:best"}, ("static-search",),
                         z.test))
        # the oracle family: per-sample search on test, and its chance controls at the same budget
        search = {"split": "test", "n": z.search, "preset": "study", "sims": z.sims}
        out.append(Stage("search-test", "oracle", "search", search, size=z.search * (z.sims + 1)))
        out.append(Stage("search-test-decoy", "oracle", "search", {**search, "control": "decoy"},
                         size=z.search * (z.sims + 1)))
        out.append(Stage("search-test-sample", "oracle", "search", {**search, "control": "sample"},
                         size=z.search * (z.sims + 1)))
        library_n, library_sims = z.library_train or z.train, z.library_sims or z.train_sims
        train_search = {"split": "train", "n": library_n, "preset": "study", "sims": library_sims}
        out.append(Stage("search-train", "supervision", "search", train_search, size=library_n * (library_sims + 1)))
        out.append(Stage("search-test-menu", "oracle", "search", {**search, "control": "menu", "menu": "search-train"},
                         ("search-train",), z.search * (z.sims + 1)))
        # the library router
        out.append(Stage("router-fit", "supervision", "fit-library", {"dev_n": z.dev}, ("search-train",),
                         library_n * 24 + z.dev * 8))
        out.append(Stage("router", "learned", "eval", {**test(), "router": "router-fit"}, ("router-fit",),
                         3 * z.test))
        # Dr.LLM's per-layer routers, real and decoy supervision, and their random control
        drllm = {"preset": "drllm", "sims": z.drllm_sims}
        out.append(Stage("drllm-train", "supervision", "search", {**drllm, "split": "train", "n": z.train},
                         size=z.train * min(10, z.drllm_sims)))
        out.append(Stage("drllm-train-decoy", "supervision", "search",
                         {**drllm, "split": "train", "n": z.train, "control": "decoy"},
                         size=z.train * min(10, z.drllm_sims)))
        out.append(Stage("drllm-dev", "supervision", "search", {**drllm, "split": "dev", "n": z.dev},
                         size=z.dev * min(10, z.drllm_sims)))
        out.append(Stage("layers-fit", "supervision", "fit-layers", {"runs": "drllm-train", "dev": "drllm-dev"},
                         ("drllm-train", "drllm-dev"), z.train))
        out.append(Stage("layers-fit-decoy", "supervision", "fit-layers",
                         {"runs": "drllm-train-decoy", "dev": "drllm-dev"}, ("drllm-train-decoy", "drllm-dev"),
                         z.train))
        # real and decoy routers refitted on the same inputs, the samples both searches keep (the study's pair; left
        # out where no sample is kept by both)
        both = ("drllm-train", "drllm-train-decoy", "drllm-dev")
        out.append(Stage("layers-fit-matched", "supervision", "fit-layers",
                         {"runs": "drllm-train", "dev": "drllm-dev", "same_as": "drllm-train-decoy"}, both, z.train))
        out.append(Stage("layers-fit-decoy-matched", "supervision", "fit-layers",
                         {"runs": "drllm-train-decoy", "dev": "drllm-dev", "same_as": "drllm-train"}, both, z.train))
        out.append(Stage("layers-random", "supervision", "control-layers", {"of": "layers-fit"}, ("layers-fit",)))
        for name, routers in (("layer-router", "layers-fit"), ("layer-router-random", "layers-random"),
                              ("layer-router-decoy", "layers-fit-decoy"),
                              ("layer-router-matched", "layers-fit-matched"),
                              ("layer-router-decoy-matched", "layers-fit-decoy-matched")):
            out.append(Stage(name, "learned", "eval", {**test(), "policy": "layer-router", "router": routers},
                             (routers,), 2 * z.test))
        # PoLar's predictor, real and decoy supervision, its controls
        polar_n = z.polar_train or z.train
        polar = {"preset": "polar", "sims": z.train_sims, "split": "train", "n": polar_n}
        out.append(Stage("polar-train", "supervision", "search", polar, size=polar_n * (z.train_sims + 1)))
        out.append(Stage("polar-train-decoy", "supervision", "search", {**polar, "control": "decoy"},
                         size=polar_n * (z.train_sims + 1)))
        out.append(Stage("program-fit", "supervision", "fit-program", {"runs": "polar-train"}, ("polar-train",),
                         polar_n))
        out.append(Stage("program-fit-decoy", "supervision", "fit-program", {"runs": "polar-train-decoy"},
                         ("polar-train-decoy",), polar_n))
        for name, kind, full in (("program-random", "random", False), ("program-random-full", "random", True),
                                 ("program-menu", "menu", False)):
            out.append(Stage(name, "supervision", "control-program", {"of": "program-fit", "kind": kind,
                                                                       "with_full": full}, ("program-fit",)))
        k = {"top_k": z.top_k}
        for name, router, extra in (("program", "program-fit", k), ("program-random", "program-random", {}),
                                    ("program-random-full", "program-random-full", k),
                                    ("program-menu", "program-menu", k), ("program-decoy", "program-fit-decoy", k)):
            out.append(Stage(f"eval-{name}", "learned", "eval",
                             {**test(), "policy": "program", "router": router, **extra}, (router,),
                             (2 + extra.get("top_k", 0)) * z.test))
        # label-free policies, calibrated on dev
        # the cascade escalates from the most pruned block-influence chain (as the study's), within 0.85 x depth
        # layers, or the least budget that chain allows on a shallow model (where it alone exceeds 0.85 x depth)
        budget = max(0.85, math.ceil(1000 * (1 - most / self.depth)) / 1000)
        out.append(Stage("cascade", "label-free", "eval",
                         {**test(), "policy": "cascade", "chains": [f"prune:{most}"],
                          "calibrate": f"budget={budget:g}", "dev_n": z.dev}, ("prune",), 3 * z.test + 2 * z.dev))
        # the same cascade at the fewest layers whose answers agree with full depth's on 95% of dev
        out.append(Stage("cascade-consistency", "label-free", "eval",
                         {**test(), "policy": "cascade", "chains": [f"prune:{most}"],
                          "calibrate": "consistency=0.95", "dev_n": z.dev}, ("prune",), 3 * z.test + 2 * z.dev))
        vote = {"top": z.vote_top or 2, "ks": list(z.vote_ks or (3,))}
        if z.vote_rules:
            vote["rules"] = list(z.vote_rules)
        out.append(Stage("vote", "label-free", "eval",
                         {**test(), "policy": "vote", "chains": ["full"], "chains_from": "search-train", **vote,
                          "calibrate": "accuracy", "dev_n": z.dev}, ("search-train",),
                         (1 + vote["top"]) * z.test + vote["top"] * z.dev))
        if self.mode == "generate":
            out.append(Stage("self-consistency", "label-free", "eval",
                             {**test(), "policy": "self-consistency", "calibrate": "accuracy", "ks": [3, 5],
                              "temperatures": [0.7], "dev_n": z.dev}, (), 6 * z.test + 5 * z.dev))
        return out + [t for name in self.transfer for t in _transferred(out, name, z.transfer or z.test)]

    def select(self, only: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> list[Stage]:
        """The stages ``--only`` and ``--skip`` leave (by name or family), with every stage one of them reads and the
        full-depth stage of its task (every row is read against it) unless that is skipped by name."""
        stages = {s.name: s for s in self.stages()}
        unknown = [u for u in (*only, *skip) if u not in stages and u not in FAMILIES]
        if unknown:
            raise UsageError(f"unknown stage or family {', '.join(unknown)}; stages: {', '.join(stages)}; families: "
                             f"{', '.join(FAMILIES)}")
        chosen = [s for s in stages.values() if not only or s.name in only or s.family in only]
        chosen = [s for s in chosen if s.name not in skip and s.family not in skip]
        references = {s.name.rpartition("/")[0] + "/full" if "/" in s.name else "full" for s in chosen}
        chosen += [stages[r] for r in references if r not in skip and stages[r] not in chosen]
        wanted = upstream(stages, (s.name for s in chosen))
        return [s for s in stages.values() if s.name in wanted]

    def plan(self, stages: list[Stage], splits: dict[str, Selection]) -> dict:
        """plan.json: the bench's settings, the splits (a carved one by its ids), the stages and their sizes."""
        from .._version import __version__

        return {"model": self.model, "task": self.task, "preset": self.preset, "sizes": self.sizes.to_dict(),
                "mode": self.mode, "dtype": self.dtype, "device": self.device, "seed": self.seed,
                "data_dir": self.data_dir, "data_file": self.data_file, "include": self.include,
                "version": __version__,
                "splits": {name: {"split": s.split, "n": s.n, "ids": list(s.ids) if s.ids is not None else None}
                           for name, s in splits.items() if "/" not in name},
                "transfer": {name.removesuffix("/test"): s.split for name, s in splits.items() if "/" in name},
                "stages": [{"name": s.name, "family": s.family, "kind": s.kind, "settings": s.settings,
                            "needs": list(s.needs), "size": s.size} for s in stages]}


def upstream(stages: dict[str, Stage], names: Iterable[str]) -> set[str]:
    """``names`` and every stage they read, directly or through others (``stages``: the bench's, by name)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(stages[name].needs)
    return seen


def _transferred(stages: list[Stage], task: str, n: int) -> list[Stage]:
    """The evaluations on test of ``stages`` (every deployable method and its controls) again on ``n`` samples of
    ``task``'s reported split, named ``TASK/NAME``: the same chains, routers and predictors, and a calibrated policy as
    it was chosen on the bench's dev (read from its evaluation there, not calibrated again)."""
    out = []
    for s in stages:
        if s.kind != "eval" or s.settings.get("split") != "test":
            continue
        settings, needs = {**s.settings, "split": f"{task}/test", "n": n}, s.needs
        if "calibrate" in settings:
            settings, needs = {"split": f"{task}/test", "n": n, "policy_from": s.name}, (s.name,)
        out.append(Stage(f"{task}/{s.name}", "transfer", "eval", settings, needs, s.size * n // s.settings["n"]))
    return out


def _carve(ids: list[str], seed: int, n: int) -> tuple[list[str], list[str]]:
    """``n`` of ``ids`` drawn with ``seed``, and the rest (in their order)."""
    order = list(ids)
    random.Random(f"bench:{seed}").shuffle(order)
    taken = set(order[:n])
    return order[:n], [i for i in ids if i not in taken]



def estimate_seconds(bench: Bench, stages: list[Stage]) -> dict[str, float]:
    """Each stage's estimated seconds, from its size in chain evaluations and a short timing probe of this machine: the
    products of one layer of the model (its config's sizes, read without its weights) over a typical prompt's
    tokens, timed with random numbers in the dtype the bench runs in (bf16 on a processor with native bf16, under
    ``--dtype auto``). An estimate, not a measurement: docs/bench.md has the measured times."""
    import time

    import torch

    from ..core.loading import model_config, parse_device, resolve_dtype

    config = model_config(bench.model)
    device = parse_device(bench.device)
    dtype = resolve_dtype(bench.dtype, device) if device.type == "cpu" else torch.float32  # a GPU: timed on the CPU
    hidden = config.hidden_size
    inner = getattr(config, "intermediate_size", 4 * hidden)
    tokens = 64  # a typical prompt's tokens beyond what a chain shares with the one before
    randn = lambda *shape: torch.randn(*shape, dtype=dtype)  # noqa: E731
    x, h = randn(tokens, hidden), randn(tokens, inner)
    products = [(x, randn(hidden, hidden)) for _ in range(4)] + [(x, randn(hidden, inner))] * 2
    products.append((h, randn(inner, hidden)))
    with torch_threads() as threads:
        for a, b in products:  # warm up
            a @ b
        start = time.perf_counter()
        for _ in range(5):
            for a, b in products:
                a @ b
        seconds = (time.perf_counter() - start) / 5
    per_chain = seconds * config.num_hidden_layers * 1.5 / threads  # and attention, norms, the head; every core
    estimate = {s.name: s.size * per_chain for s in stages}
    fits = [s for s in stages if s.kind == "fit-program"]
    if fits:  # PoLar's training: minutes a sample, not a chain evaluation (its inputs' encoding is the size above)
        from ..policies.program_fit import right_programs
        from ..storage import read_records

        sizes = {s.name: s.settings.get("n", 0) for s in stages}
        step = program_step_seconds(config.num_hidden_layers, hidden)
        for s in fits:
            run = bench.stage_path(s.settings["runs"])
            found = [len(right_programs(r)) for r in read_records(run)] if (run / "config.json").is_file() else []
            estimate[s.name] += step * program_fit_steps(sizes.get(s.settings["runs"], 0), found)
    return estimate


def program_fit_steps(samples: int, found: list[int] = ()) -> int:
    """The training steps of PoLar's fit on a search of ``samples``: the right programs ``found`` in the samples it
    has recorded, at most its recipe's ``max_paths`` a sample, and that many in each sample not searched yet (an upper
    bound); the held-out share left out, each epoch in batches."""
    from ..policies.recipes import ProgramRecipe

    recipe = ProgramRecipe()
    programs = sum(min(k, recipe.max_paths) for k in found) + max(0, samples - len(found)) * recipe.max_paths
    examples = round(programs * (1 - recipe.val_share))
    return recipe.epochs * -(-examples // recipe.batch)


def program_step_seconds(depth: int, q_dim: int, tokens: int = 128, probe: int = 16) -> float:
    """One training step of PoLar's predictor at its recipe's sizes (a batch of questions of ``tokens`` token states
    of ``q_dim``), timed on one thread with random numbers on ``probe`` questions and scaled to the recipe's batch
    (every product is linear in it), and shared out over the cores as the fit's is."""
    import time

    import torch

    from ..policies.program import ProgramPredictor
    from ..policies.recipes import ProgramRecipe

    recipe = ProgramRecipe()
    with torch_threads() as threads, torch.random.fork_rng():
        predictor = ProgramPredictor(depth, q_dim, recipe.d_model, recipe.heads, recipe.blocks)
        states = torch.randn(probe, tokens, q_dim)
        padding = torch.zeros(probe, tokens, dtype=torch.bool)
        times = []
        for _ in range(2):  # the first warms up
            start = time.perf_counter()
            boundary, ops = predictor(states, padding)
            (boundary.sum() + ops.sum()).backward()
            times.append(time.perf_counter() - start)
    return times[-1] * recipe.batch / probe / threads


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Torch on ``n`` threads inside (one: one core's speed, less sensitive to what else runs now); yields the thread
    count it runs on outside, which the timings are shared out over."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)
