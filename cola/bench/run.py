"""Running a bench's stages: each one the library job its command runs (:class:`~cola.policies.job.EvalJob`,
:func:`~cola.search.launch.run_job`, the static search, block influence, the router fits and their controls), its
output under ``stages/``. A stage whose output is there is taken as it is (a search resumes to its size), so an
interrupted bench resumes and a finished one only rebuilds its page; a fit whose weights are not there (a bench
folder from git) is fitted again, and checked against its record, when a stage that reads it is still to be made.
A search stage may instead adopt a run of the same config from elsewhere (``--adopt``: the committed study's runs):
a finished one linked in its place, an unfinished one copied and resumed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ..core.chain import Chain
from ..evaluation.config import EvalConfig
from ..tasks import Selection
from .plan import Bench, Stage

FINISHED = "finished.json"  # written in a static search's folder when the search ends (its records do not say so)
SKIPPED = "skipped.json"  # in stages/: the stages that could not be made from what they read, and why
TIMES = "times.jsonl"  # in stages/: one line per sitting of a stage the bench ran (an adopted output took none)


class StageSkipped(Exception):
    """A stage that cannot be made from what its inputs hold (a control with no sample to train on): the bench goes
    on without it and the stages that read it, and says why."""


def output(bench: Bench, stage: Stage) -> Path:
    """Where a stage writes: an evaluation's ``NAME.jsonl`` (its summary ``NAME.json`` beside it), a prune file, or
    a folder (a search run, a router)."""
    path = bench.stage_path(stage.name)
    if stage.kind == "eval":
        return path.with_suffix(".jsonl")
    return path.with_suffix(".json") if stage.kind == "prune" else path


def done(bench: Bench, stage: Stage, splits: dict[str, Selection]) -> bool:
    """Whether a stage's output is whole: an evaluation's summary, a search's every sample (or its static chains),
    a prune file, a router folder's config."""
    path = output(bench, stage)
    if stage.kind == "eval":
        return path.with_suffix(".json").is_file()
    if stage.kind == "search":
        from ..storage import read_records

        if not (path / "config.json").is_file():
            return False
        if stage.settings.get("static"):
            return (path / FINISHED).is_file()
        return len(read_records(path)) >= len(_samples(bench, stage, splits))
    return path.is_file() if stage.kind == "prune" else (path / "config.json").is_file()


def fitted_weights(stage: Stage) -> str | None:
    """The file a fit stage writes its weights to (None: a stage that keeps no weights). A bench folder in git keeps
    its fits' configs without their weights: such a fit is done, and is fitted again (:func:`_refit`) only when a
    stage that reads it is still to be made (:func:`weights_wanted`)."""
    if stage.kind == "fit-library":
        from ..policies.library_router import PREDICTOR

        return PREDICTOR
    if stage.kind == "fit-layers":
        from ..policies.layer_router import ROUTERS

        return ROUTERS
    if stage.kind == "fit-program":
        from ..policies.program import WEIGHTS

        return WEIGHTS
    return None


def _selection(bench: Bench, stage: Stage, splits: dict[str, Selection]) -> Selection:
    return bench.sized(splits[stage.settings["split"]], stage.settings["n"])


def _samples(bench: Bench, stage: Stage, splits: dict[str, Selection]):
    return _selection(bench, stage, splits).load()


def _config(bench: Bench) -> EvalConfig:
    return EvalConfig(mode=bench.mode, chat=True)


Progress = Callable[[str, int, int], None]  # an evaluation's progress(stage, done, total)


def run_stage(bench: Bench, stage: Stage, splits: dict[str, Selection], bars: Progress | None = None) -> None:
    """Run one stage (the stages it reads are done); ``bars``: the progress of its evaluations (searches and fits
    draw their own bars when it is given). An unfinished output of other settings (another CoLa version's stage) is
    refused with the bench's remedy: delete it."""
    from ..errors import ConfigMismatch

    try:
        if fitted_weights(stage) is not None and (output(bench, stage) / "config.json").is_file():
            _refit(bench, stage, splits, bars)
        else:
            RUNNERS[stage.kind](bench, stage, splits, bars)
    except ConfigMismatch as err:
        files = f"{bench.stage_path(stage.name)}*"
        raise ConfigMismatch(f"{str(err).removesuffix('; use another --out')}: this bench's stage {stage.name} is "
                             f"set otherwise now; delete {files} and run the same command to compute it "
                             "again") from None


def weights_wanted(bench: Bench, stage: Stage, stages: list[Stage], splits: dict[str, Selection]) -> bool:
    """Whether ``stage`` is a fit whose weights are not in the folder while one of ``stages`` that reads it is not
    done: then it is fitted again first (a finished bench from git only rebuilds its page)."""
    weights = fitted_weights(stage)
    return (weights is not None and not (output(bench, stage) / weights).is_file()
            and any(stage.name in s.needs and not done(bench, s, splits) for s in stages))


REFIT = ".refit"  # a fit made again beside its recorded config, in stages/NAME.refit until it is compared
WHERE = ("environment", "runs", "dev_runs", "same_samples_as", "data")  # a fit config's fields that say where it ran


def _refit(bench: Bench, stage: Stage, splits: dict[str, Selection], bars: Progress | None) -> None:
    """Fit a stage again whose config is recorded but whose weights are not here (a bench folder from git), on the
    thread count it was recorded with, in a folder beside it; take its weights only when every field the recorded
    config holds is the same in the new one (but those that say where it ran, :data:`WHERE`), so that the stages
    already made from the recorded fit read the same fit. Otherwise nothing is taken, and the error names what
    differs and what to delete."""
    from ..errors import RouterError
    from ..storage import read_json
    from .plan import torch_threads, upstream

    folder, weights = output(bench, stage), fitted_weights(stage)
    refit = folder.with_name(folder.name + REFIT)
    recorded = read_json(folder / "config.json")
    threads = (recorded.get("environment") or {}).get("threads")
    if not (refit / "config.json").is_file() or not (refit / weights).is_file():
        with torch_threads(threads) if threads else contextlib.nullcontext():
            RUNNERS[stage.kind](bench, dataclasses.replace(stage, name=stage.name + REFIT), splits, bars)
    again = read_json(refit / "config.json")
    differ = [k for k in recorded if k not in WHERE and recorded[k] != again.get(k)]
    if not differ:
        os.replace(refit / weights, folder / weights)
        shutil.rmtree(refit)
        return
    shutil.rmtree(refit)
    stages = {s.name: s for s in bench.stages()}
    made_from = [s.name for s in stages.values() if stage.name in upstream(stages, s.needs) and done(bench, s, splits)]
    raise RouterError(
        f"{stage.name}'s weights are not in {folder} (a bench folder in git keeps its fits' configs, not their "
        f"weights), and fitting it again here gives another fit than the recorded one ({', '.join(differ)} differ; "
        f"recorded on {_machine(recorded)}, here {_machine(again)}); "
        + (f"the stages made from the recorded fit ({', '.join(made_from)}) would be read beside this one's. "
           if made_from else "")
        + f"Fit it where it was recorded, or delete {folder}"
        + (" and those stages' outputs" if made_from else "") + " and run the same command to make them again")


def _machine(config: dict) -> str:
    """Where a fit was made, as its config records it."""
    environment = config.get("environment") or {}
    return f"{environment.get('processor', 'a machine not recorded')}, {environment.get('threads', '?')} thread(s)"


def _eval(bench: Bench, stage: Stage, splits: dict[str, Selection], progress) -> None:
    from ..policies.job import EvalJob

    s, path = stage.settings, output(bench, stage)
    job = dict(model=bench.model, device=bench.device, dtype=bench.dtype, batch=16, name=stage.name, out=str(path))
    if "chain" in s:
        job["chains"] = (_chain(bench, s["chain"]),)
    elif "policy_from" in s:  # a policy as it was calibrated in another stage, replayed from that stage's summary
        job["policy"] = str(bench.stage_path(s["policy_from"]).with_suffix(".json"))
    elif "policy" in s:
        settings = {"router": str(bench.stage_path(s["router"]))} if "router" in s else {}
        job.update(policy=s["policy"], router=settings.get("router"), top_k=s.get("top_k", 1),
                   chains=tuple(_chain(bench, c) for c in s.get("chains", ())), top=s.get("top"),
                   calibrate=s.get("calibrate"),
                   ks=tuple(s.get("ks", ())), rules=tuple(s.get("rules", ())),
                   temperatures=tuple(s.get("temperatures", ())),
                   dev=bench.sized(splits["dev"], s["dev_n"]) if "dev_n" in s else None)
        if "chains_from" in s:
            job["chains_from"] = str(_source(bench, s["chains_from"]))
    else:
        job["router"] = str(bench.stage_path(s["router"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    EvalJob(_selection(bench, stage, splits), _config(bench), **job).run(progress)


def _source(bench: Bench, name: str) -> Path:
    path = bench.stage_path(name)
    return path.with_suffix(".json") if name == "prune" else path


def _chain(bench: Bench, spec: str) -> str:
    """A chain setting (a stage's ``chain``, or one of a policy's ``chains``): ``full``; ``prune:m`` (without the m
    least influential layers); ``drop-last:k``; or ``static:best`` (the static search's best chain)."""
    if spec == "full":
        return "full"
    kind, _, arg = spec.partition(":")
    if kind == "prune":
        from ..search.prune import load_pruned

        return load_pruned(_source(bench, "prune"))[int(arg)]
    if kind == "drop-last":
        from ..core.loading import model_depth

        return str(Chain(tuple(range(model_depth(bench.model) - int(arg)))))
    from ..search.static import best_static
    from ..storage import read_records

    return best_static(read_records(bench.stage_path("static-search")))["chain"]


def search_job(bench: Bench, stage: Stage, splits: dict[str, Selection]):
    """A search stage's :class:`~cola.search.run.SearchJob` and its samples (decoy golds for a decoy control)."""
    from ..search.menu import load_menu
    from ..search.presets import search_settings
    from ..search.run import SearchJob
    from ..tasks import with_control

    s, selection = stage.settings, _selection(bench, stage, splits)
    control = s.get("control", "none")
    space, mcts = search_settings(s["preset"], sims=s["sims"])
    menu = load_menu(bench.stage_path(s["menu"]), bench.model) if control == "menu" else None
    job = SearchJob(model=bench.model, task=bench.task, eval_config=_config(bench), device=bench.device,
                    dtype=bench.dtype, **space, mcts=mcts, seed=bench.seed, control=control, menu=menu,
                    split=selection.split_name, data=selection.source, batch=4 if s.get("static") else 8,
                    lm_eval_include=bench.include,
                    generated_n=selection.n if selection.ids is not None and selection.source is None else None)
    return job, with_control(selection.load(), control)


def _search(bench: Bench, stage: Stage, splits: dict[str, Selection], progress) -> None:
    from ..search.launch import run_job
    from ..search.static import run_static
    from ..storage import FolderLock, read_records, write_atomic

    s = stage.settings
    job, samples = search_job(bench, stage, splits)
    folder = output(bench, stage)
    if bench.adopt and not s.get("static") and not folder.exists():
        from ..search.launch import find_run

        found = find_run(job, samples, bench.adopt)
        if found is not None:
            _adopt(bench, stage.name, folder, *found, len(samples))
            if found[1] == len(samples):
                return
    with FolderLock(folder) as lock:
        if s.get("static"):
            run_static(job, samples, folder, progress=progress is not None, lock=lock)
            write_atomic(folder / FINISHED, json.dumps({"chains": len(read_records(folder))}) + "\n")
        else:
            run_job(job, samples, str(folder), bench.workers, progress=progress is not None, lock=lock)


def adoptable(bench: Bench, stages: list[Stage], splits: dict[str, Selection]) -> dict[str, tuple[Path, int, int]]:
    """For ``--dry-run``, without loading weights: the search stages not yet run that a run in ``bench.adopt`` agrees
    with (:func:`~cola.search.launch.candidate_runs`; its weights are compared when the bench runs), each with that
    run's folder, the samples it has recorded and the stage's samples. A menu control's stage is not looked for (its
    menu is a stage's output)."""
    from ..search.launch import candidate_runs

    found = {}
    for stage in stages:
        s = stage.settings
        if stage.kind != "search" or s.get("static") or s.get("control") == "menu" or output(bench, stage).exists():
            continue
        job, samples = search_job(bench, stage, splits)
        runs = candidate_runs(job, samples, bench.adopt)
        if runs:
            found[stage.name] = (runs[0][0], runs[0][2], len(samples))
    return found


def made(bench: Bench, stages: list[Stage], splits: dict[str, Selection]
         ) -> dict[str, tuple[int, int, str] | None]:
    """For ``--dry-run``, without loading weights: the stages this folder holds an output of, each with what is
    kept of it (the samples a search has recorded, the epochs a fit has kept), of how many and of what (None: the
    stage is done; a fit to make again for its weights is not)."""
    from ..policies.program import CHECKPOINT
    from ..policies.program_fit import Checkpoint
    from ..policies.recipes import ProgramRecipe
    from ..storage import read_records

    found: dict[str, tuple[int, int, str] | None] = {}
    for stage in stages:
        path = output(bench, stage)
        if stage.kind == "search" and not stage.settings.get("static") and (path / "config.json").is_file():
            recorded, n = len(read_records(path)), len(_samples(bench, stage, splits))  # read once: runs are long
            found[stage.name] = None if recorded >= n else (recorded, n, "samples recorded")
        elif done(bench, stage, splits) and not weights_wanted(bench, stage, stages, splits):
            found[stage.name] = None
        elif stage.kind == "fit-program" and (epochs := Checkpoint(path / CHECKPOINT, "").epochs()):
            found[stage.name] = (epochs, ProgramRecipe().epochs, "epochs kept")
    return found


ADOPTED = "adopted.json"  # in stages/: what each adopting stage took, and from where


def _adopt(bench: Bench, name: str, folder: Path, run: Path, recorded: int, n: int) -> None:
    """Put the run found for stage ``name`` in its place: a finished one linked (what reads the stage reads it, and
    nothing writes it), an unfinished one copied (the copy resumes; the adopted folder is never written); noted in
    ``stages/adopted.json``."""
    from ..storage import read_json, write_atomic

    folder.parent.mkdir(parents=True, exist_ok=True)
    if recorded == n:
        folder.symlink_to(os.path.relpath(run.resolve(), folder.parent.resolve()), target_is_directory=True)
    else:
        shutil.copytree(run, folder, ignore=shutil.ignore_patterns("*.lock", ".lock"))
    notes = folder.parent / ADOPTED
    taken = read_json(notes) if notes.is_file() else {}
    taken[name] = {"from": str(run), "recorded": recorded, "of": n}
    write_atomic(notes, json.dumps(taken, indent=1) + "\n")


def adopted(bench: Bench) -> dict[str, dict]:
    """What each stage took with ``--adopt``: the run's folder, the samples it had recorded, and of how many."""
    from ..storage import read_json

    notes = bench.folder / "stages" / ADOPTED
    return read_json(notes) if notes.is_file() else {}


def _prune(bench: Bench, stage: Stage, splits: dict[str, Selection], progress) -> None:
    from ..search.prune import prune

    prune(bench.model, _selection(bench, stage, splits), _config(bench), output(bench, stage), bench.device,
          bench.dtype, progress=progress is not None)


def _fit_library(bench: Bench, stage: Stage, splits: dict[str, Selection], progress) -> None:
    from ..policies.library_router import LibraryFit, fit_from_runs

    layers = tuple(f for f in LibraryFit().feature_layers if f < bench.depth) or (1,)  # a shallow model's too
    fit = LibraryFit(dev=bench.sized(splits["dev"], stage.settings["dev_n"]), feature_layers=layers)
    router, _ = fit_from_runs([bench.stage_path(n) for n in stage.needs], fit, 16, bench.device,
                              progress=progress is not None)
    router.save(output(bench, stage))


def _fit_layers(bench: Bench, stage: Stage, splits: dict[str, Selection], progress) -> None:
    from ..policies.layer_router import fit_from_runs, kept_ids, save_routers

    s = stage.settings
    if "same_as" in s and not kept_ids([bench.stage_path(s["runs"])]) & kept_ids([bench.stage_path(s["same_as"])]):
        raise StageSkipped(f"no train sample has a right path in both {s['runs']} and {s['same_as']}")
    routers, config = fit_from_runs([bench.stage_path(s["runs"])], [bench.stage_path(s["dev"])],
                                    progress=progress is not None,
                                    same_samples_as=[bench.stage_path(s["same_as"])] if "same_as" in s else ())
    save_routers(routers, output(bench, stage), config)


def _control_layers(bench: Bench, stage: Stage, splits: dict[str, Selection], progress) -> None:
    from ..policies.layer_router import random_control

    random_control(bench.stage_path(stage.settings["of"]), output(bench, stage))


def _fit_program(bench: Bench, stage: Stage, splits: dict[str, Selection], progress) -> None:
    from ..policies.program_fit import fit_from_runs

    router, _ = fit_from_runs([str(bench.stage_path(stage.settings["runs"]))], device=bench.device,
                              progress=progress is not None, out=output(bench, stage))
    router.save(output(bench, stage))


def _control_program(bench: Bench, stage: Stage, splits: dict[str, Selection], progress) -> None:
    from ..policies.program_fit import program_control

    s = stage.settings
    program_control(str(bench.stage_path(s["of"])), s["kind"], s["with_full"], bench.seed).save(output(bench, stage))


RUNNERS: dict[str, Callable] = {"eval": _eval, "search": _search, "prune": _prune, "fit-library": _fit_library,
                                "fit-layers": _fit_layers, "control-layers": _control_layers,
                                "fit-program": _fit_program, "control-program": _control_program}


@contextlib.contextmanager
def one_model():
    """Within it, every job that loads a model through :func:`cola.core.loading.load_model` with the same arguments
    gets the same loaded model: a bench runs dozens of jobs on one model, each of which loads it by name."""
    from ..core import loading

    original, loaded = loading.load_model, {}

    def shared(spec, device=None, dtype=None, attn_implementation=None, allow_untested=False):
        place = loading.parse_device(device)
        key = (spec, str(place), str(loading.resolve_dtype(dtype, place)), attn_implementation, allow_untested)
        if key not in loaded:
            loaded[key] = original(spec, device, dtype, attn_implementation, allow_untested)
        return loaded[key]

    loading.load_model = shared
    try:
        yield
    finally:
        loading.load_model = original



def run_bench(bench: Bench, stages: list[Stage], splits: dict[str, Selection], plan: dict,
              bars: Progress | None = None, overall: Callable[[Stage, bool], None] | None = None) -> dict[str, str]:
    """Run every stage not done, in order, under one loaded model; ``plan.json`` is written first and must match
    the plan of a bench folder that holds one (another plan's outputs are not mixed in); ``overall(stage, ran)``
    after each stage. A stage that cannot be made (:class:`StageSkipped`) is left out with the stages that read it;
    returns those, each with why (also in ``stages/skipped.json``, which the page lists)."""
    from ..errors import ConfigMismatch
    from ..storage import read_json, write_atomic

    bench.folder.mkdir(parents=True, exist_ok=True)
    path = bench.folder / "plan.json"
    if path.is_file():
        old = read_json(path)
        keys = ("model", "task", "sizes", "mode", "dtype", "seed", "splits", "data_dir", "data_file", "include")
        differ = [k for k in keys if old.get(k) != plan.get(k)]
        if differ:
            raise ConfigMismatch(f"{bench.folder} holds a bench of another plan ({', '.join(differ)} differ); give "
                                 "another --out")
        # the stages of both, in the whole plan's order (an --only or --skip run names a part of it)
        ours = {s["name"] for s in plan["stages"]}
        order = {s.name: i for i, s in enumerate(bench.stages())}
        plan = {**plan, "stages": sorted(plan["stages"] + [s for s in old["stages"] if s["name"] not in ours],
                                         key=lambda s: order.get(s["name"], len(order)))}
    write_atomic(path, json.dumps(plan, indent=1) + "\n")
    left_out: dict[str, str] = {}
    with one_model():
        for stage in stages:
            blocked = next((need for need in stage.needs if need in left_out), None)
            ran = blocked is None and (not done(bench, stage, splits) or weights_wanted(bench, stage, stages, splits))
            if blocked is not None:
                left_out[stage.name] = f"it reads {blocked}, which was skipped"
            elif ran:
                start, finished = time.perf_counter(), False
                try:  # each stage's evaluations on bars of their own, named by the stage
                    run_stage(bench, stage, splits, None if bars is None else
                              lambda what, k, n, name=stage.name: bars(f"{name}: {what}", k, n))
                    finished = True
                except StageSkipped as why:
                    left_out[stage.name], ran = str(why), False
                finally:  # an interrupted sitting counts too: a stage resumed over several sittings sums them
                    if stage.name not in left_out:
                        _timed(bench, stage, time.perf_counter() - start, finished)
            if overall is not None:
                overall(stage, ran)
    notes, before = bench.folder / "stages" / SKIPPED, skipped(bench)
    now = {**{k: v for k, v in before.items() if k not in {s.name for s in stages}}, **left_out}  # --only's too
    if now != before:  # a finished bench run again writes nothing
        notes.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(notes, json.dumps(now, indent=1) + "\n")
    return left_out


def _timed(bench: Bench, stage: Stage, seconds: float, finished: bool) -> None:
    import torch

    from ..storage import append_line

    (bench.folder / "stages").mkdir(parents=True, exist_ok=True)
    append_line(bench.folder / "stages" / TIMES, json.dumps(
        {"stage": stage.name, "seconds": round(seconds, 1), "finished": finished, "workers": bench.workers,
         "threads": torch.get_num_threads(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))


def stage_times(bench: Bench) -> dict[str, float]:
    """The wall time each stage took in this folder, in seconds, summed over the sittings it ran in
    (``stages/times.jsonl``); a stage adopted or made before the bench timed its stages has none."""
    from ..storage import jsonl_rows

    path = bench.folder / "stages" / TIMES
    times: dict[str, float] = {}
    for _, line in jsonl_rows(path) if path.is_file() else []:
        times[line["stage"]] = times.get(line["stage"], 0.0) + line["seconds"]
    return times


def skipped(bench: Bench) -> dict[str, str]:
    """The stages the last run of the bench left out, each with why (:class:`StageSkipped`)."""
    from ..storage import read_json

    notes = bench.folder / "stages" / SKIPPED
    return read_json(notes) if notes.is_file() else {}
