"""Launching a search run: the job's run folder, locked, searched in this process or on Ray workers; what
``cola search`` calls, and what a Python program calls to do the same."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..tasks import Sample, Task, get_task
from .run import SearchJob, run_search
from ..storage import FolderLock, RunStore


def default_folder(job: SearchJob, n: int, static: bool = False) -> str:
    """The run folder of a job when none is given:
    ``runs/MODEL-TASK[-SPLIT]-MODE-ACTIONS[-CONTROL|-static][-DTYPE]-nN-sSEED`` (the split only when it is not the
    task's default, the dtype only when it is not the device's default, so that a bf16 run on a CPU has a folder of
    its own)."""
    from ..core.loading import default_dtype, parse_device, resolve_dtype

    control = f"-{job.control}" if job.control != "none" else "-static" if static else ""
    split = f"-{job.split}" if job.split not in (None, get_task(job.task, job.lm_eval_include).default_split) else ""
    device = parse_device(job.device)
    dtype = resolve_dtype(job.dtype, device)
    kind = f"-{str(dtype).removeprefix('torch.')}" if dtype != default_dtype(device) else ""
    return (f"runs/{job.model.replace('/', '_')}-{job.task.replace(':', '-')}{split}-{job.eval_config.mode}-"
            f"{job.actions}{control}{kind}-n{n}-s{job.seed}")


def check_launch(task: Task, control: str, menu: str | None, static: bool = False, distributed: bool = False) -> None:
    """A search's options checked together, before its model loads: ``--control menu`` goes with a ``menu`` run; a
    ``static`` search takes neither workers (``distributed``) nor a control; a decoy gold needs options to pick
    from."""
    if (control == "menu") != (menu is not None):
        raise UsageError("--control menu needs --menu RUN_DIR (a per-sample search run to take the chains from), "
                         "and --menu goes with --control menu")
    if static and distributed:
        raise UsageError("--static searches one chain over all samples in one process; it does not take --workers")
    if static and control != "none":
        raise UsageError("--static takes no --control: its reward is an accuracy, not one sample's verdict")
    if control == "decoy" and task.verbatim and task.kind == "qa":
        raise UsageError(f"{task.name} is graded by lm-eval against each document's own target, so a decoy gold "
                         "cannot replace it: the decoy control takes lm-eval's multiple_choice tasks")


@dataclass
class RunResult:
    """What a search run left: its folder, the records of its samples (in their order), the samples that failed as
    (id, error) (Ray only; a single process raises), and the model's depth."""

    folder: str
    records: list[dict]
    failures: list[tuple[str, str]]
    depth: int


def candidate_runs(job: SearchJob, samples: Sequence[Sample],
                   roots: Sequence[str | Path]) -> list[tuple[Path, dict, int]]:
    """The runs among ``roots`` (run folders, or folders of run folders, as ``results/runs``) whose config agrees with
    ``job`` on all it says without loading its model (the model's name, the dtype, the task and mode, the samples in
    order, the control, the search space, budget, seed and reward), each with its config and how many of ``samples``
    it has recorded, most recorded first."""
    from dataclasses import asdict

    from ..core.loading import parse_device, resolve_dtype
    from ..storage import CONFIG, read_json, read_records

    ids = [s.id for s in samples]
    dtype = str(resolve_dtype(job.dtype, parse_device(job.device)))
    mine = {"model": job.model, "dtype": dtype.removeprefix("torch."), "task": job.task, "mode": job.eval_config.mode,
            "sample_ids": ids, "control": job.control, "mcts": job.mcts.to_config(), "seed": job.seed,
            "reward": job.reward}
    found = []
    for root in map(Path, roots):
        for path in (root / CONFIG, *sorted(root.glob(f"*/{CONFIG}"))):
            stored = read_json(path) if path.is_file() else {}
            space = {k: v for k, v in asdict(job.space(stored.get("depth", 1))).items() if k != "depth"}
            if stored and all(stored.get(k) == v for k, v in mine.items()) and stored.get("space") == space:
                found.append((path.parent, stored, len(set(ids) & {r["id"] for r in read_records(path.parent)})))
    return sorted(found, key=lambda f: -f[2])


def find_run(job: SearchJob, samples: Sequence[Sample], roots: Sequence[str | Path]) -> tuple[Path, int] | None:
    """A run of ``job`` among ``roots`` and how many of ``samples`` it has recorded: of the :func:`candidate_runs`
    whose config.json is the one the job would write for ``samples`` (:func:`~cola.storage.config_differences`: all
    but the batch size, version, software and device; the weights by their hash), the one that has recorded most.
    What ``cola bench --adopt`` takes instead of searching again. The job's model loads only when there is a
    candidate."""
    from ..storage import config_differences

    config = None
    for folder, stored, recorded in candidate_runs(job, samples, roots):
        config = config or job.run_config(job.evaluator(), samples)
        if not config_differences(stored, config):
            return folder, recorded
    return None


def run_job(job: SearchJob, samples: Sequence[Sample], folder: str, workers: int | None = None,
            ray_address: str | None = None, gpus_per_worker: float | None = None, progress: bool = True,
            lock: FolderLock | None = None) -> RunResult:
    """``cola search``: search (or run the job's control on) every sample not yet recorded in ``folder``, in this
    process, or on Ray workers when ``workers`` or ``ray_address`` is given
    (:func:`cola.search.distributed.run_search_ray`). The folder is locked while it is written (``lock``, taken earlier
    by the caller, or here)."""
    if workers is not None or ray_address is not None:
        from .distributed import run_search_ray  # Ray is imported only when asked for

        records, failures, depth = run_search_ray(job, samples, folder, workers, ray_address, gpus_per_worker,
                                                  progress, lock)
        return RunResult(folder, records, failures, depth)
    lock = lock or FolderLock(folder)
    evaluator = job.evaluator()
    with RunStore(folder, job.run_config(evaluator, samples), lock) as store:
        return RunResult(folder, run_search(job, evaluator, samples, store, progress), [], evaluator.cm.depth)
