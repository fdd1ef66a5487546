"""One search run over many Ray workers: each worker loads the model once and searches the samples it is handed;
the driver alone writes the run folder.

Samples are dispatched dynamically: a worker that returns its samples' records gets the next ``job.batch`` samples
(one at ``--batch 1``). The driver appends each record as it arrives (fsync'ed by :class:`~cola.storage.RunStore`),
so a record is written exactly once, and a resume skips the recorded ids whatever the worker count was. A worker whose
process dies is restarted by Ray (the model is loaded again) and the call in flight is retried; a sample that fails
for a reason in its data is reported, not recorded, and the run goes on. At ``--batch 1`` every sample is searched
as :func:`~cola.search.run.search_samples` searches it alone, so the records equal a single process's.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Sequence

from ..errors import ColaError, ModelLoadError, RayMissing
from ..tasks import Sample
from .run import SearchJob, resume
from ..storage import FolderLock, RunStore

WORKER_PREFIX = "cola-search-"  # Ray actor names: cola-search-<run token>-<index>


def require_ray():
    """The ``ray`` module, or :class:`~cola.errors.RayMissing` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayMissing("--workers and --ray-address run the search on Ray, which is not installed: "
                         "pip install -e .[ray]  (or: pip install 'ray>=2.40')") from None
    return ray


class SearchWorker:
    """A Ray actor: the model loaded once, searching the samples it is handed with the job's settings."""

    def __init__(self, job: SearchJob) -> None:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        self.job = job
        self.evaluator = job.evaluator()

    def run_config(self, samples: list[Sample]) -> dict:
        """The run's config as this worker computes it (weights hash, dtype, environment)."""
        return self.job.run_config(self.evaluator, samples)

    def depth(self) -> int:
        return self.evaluator.cm.depth

    def search(self, samples: list[Sample]) -> list[dict]:
        """The records of ``samples`` (searched together, ``job.batch`` at once)."""
        return list(self.job.search(self.evaluator, samples))

    def pid(self) -> int:
        """The worker's process id (to watch or kill it)."""
        return os.getpid()


def _init(ray, **kwargs) -> None:
    """``ray.init``, quiet but for errors, keeping the driver's SIGTERM handler: Ray sets one that exits at once
    (``sys.exit``), so a command stopped by SIGTERM would end with no word of what it kept (``cola`` says it in one
    line)."""
    import logging

    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    ray.init(logging_level=logging.ERROR, **kwargs)  # its start-up notes are not the command's to print
    if before is not None:
        signal.signal(signal.SIGTERM, before)


def start_local_cluster(ray, cpus: int) -> None:
    """Start a Ray cluster on this machine with ``cpus`` CPUs. Its workers run at the driver's priority: Ray's default
    (niceness 15) starves them, the searches themselves, behind any other job on the machine."""
    _init(ray, num_cpus=cpus, include_dashboard=False, log_to_driver=False, _system_config={"worker_niceness": 0})


def _connect(ray, workers: int | None, address: str | None, gpus_per_worker: float | None):
    """Start a local cluster or join ``address``; returns (workers, gpus per worker, cpus per worker)."""
    if not ray.is_initialized():
        if address is not None:
            _init(ray, address=address, log_to_driver=False)
        else:
            start_local_cluster(ray, max(workers or 1, os.cpu_count() or 1))
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus else 0.0
    if workers is None:
        workers = max(1, int(gpus // gpus_per_worker)) if gpus_per_worker else 1
    cpus = max(1, int(resources.get("CPU", 1) // workers))
    return workers, gpus_per_worker, cpus


def run_search_ray(
    job: SearchJob,
    samples: Sequence[Sample],
    folder: str,
    workers: int | None = None,
    address: str | None = None,
    gpus_per_worker: float | None = None,
    progress: bool = True,
    lock: FolderLock | None = None,
) -> tuple[list[dict], list[tuple[str, str]], int]:
    """Search every sample not yet recorded in ``folder`` on Ray workers; returns the records of ``samples`` (in
    their order), the failed samples as (id, error), and the model's depth.

    ``workers`` Ray actors (default: one per GPU of the cluster, else 1) each hold ``gpus_per_worker`` GPUs and an
    equal share of the CPUs. ``address`` joins an existing cluster (``auto``: the one Ray finds); without it a local
    cluster is started (or the one this process already started is used). The driver holds the folder's lock
    (``lock``, or its own) while it writes."""
    ray = require_ray()
    lock = lock or FolderLock(folder)
    workers, gpus_per_worker, cpus = _connect(ray, workers, address, gpus_per_worker)
    token = uuid.uuid4().hex[:8]
    actor = ray.remote(SearchWorker)
    pool = [actor.options(name=f"{WORKER_PREFIX}{token}-{i}", num_cpus=cpus, num_gpus=gpus_per_worker, max_restarts=3,
                          max_task_retries=3).remote(job) for i in range(workers)]
    try:
        try:
            config, depth = ray.get([pool[0].run_config.remote(list(samples)), pool[0].depth.remote()])
        except ray.exceptions.RayActorError as err:  # the worker could not load the model (or died at once)
            raise ModelLoadError(f"a Ray worker could not start: {_cause(err)}") from None
        except ray.exceptions.RayTaskError as err:  # a bad input the worker found (a sample too long, say)
            if isinstance(err.cause, ColaError):
                raise err.cause from None
            raise
        failures: list[tuple[str, str]] = []
        with RunStore(folder, {**config, "workers": workers}, lock) as store:
            records = resume(store, samples, lambda todo, _: _dispatch(ray, pool, todo, job.batch, failures),
                             progress, desc=f"samples ({workers} workers)")
        return records, failures, depth
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the workers are killed mid-task, which Ray reports on stdout
        _silence_task_retry_notes(ray)  # ("Task ... failed ... will be retried") after the command's one line
        raise
    finally:
        for worker in pool:
            ray.kill(worker)


def _silence_task_retry_notes(ray) -> None:
    """Stop Ray printing its driver-side notes (what a killed actor's pending task will do). Ray has no public switch
    for them (``log_to_driver=False`` covers the workers' own output only), so this sets the flag its printer reads,
    where there is one."""
    private = getattr(getattr(ray, "_private", None), "worker", None)
    if hasattr(private, "_worker_logs_enabled"):
        private._worker_logs_enabled = False


def _dispatch(ray, pool: list, todo: list[Sample], batch: int, failures: list[tuple[str, str]]) -> Iterator[dict]:
    """The records of ``todo`` as the workers return them: each free worker takes the next ``batch`` samples. A chunk
    whose search raised is searched again one sample at a time, to find the sample at fault, which goes to
    ``failures`` as (id, error) and is not recorded."""
    chunks = deque(list(todo[i : i + batch]) for i in range(0, len(todo), batch))
    pending: dict = {}

    def hand(worker) -> None:
        if chunks:
            chunk = chunks.popleft()
            pending[worker.search.remote(chunk)] = (worker, chunk)

    for worker in pool:
        hand(worker)
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        worker, chunk = pending.pop(ref)
        try:
            records = ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # an error raised by the search: in the data
            if len(chunk) > 1:  # searched together: search each alone to find the sample at fault
                chunks.extendleft([s] for s in reversed(chunk))
            else:
                failures.append((chunk[0].id, _cause(err)))
            hand(worker)
            continue
        hand(worker)
        yield from records


def _cause(err: Exception) -> str:
    """The message of the exception a Ray task (or an actor's constructor) raised."""
    cause = getattr(err, "cause", None)
    while getattr(cause, "cause", None) is not None:  # an actor's death wraps its constructor's error
        cause = cause.cause
    if cause is not None and not isinstance(cause, Exception):  # a death context, not an exception
        return str(err).strip().splitlines()[-1]
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(err).strip().splitlines()[-1]
