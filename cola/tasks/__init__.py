"""The task registry: every benchmark is a :class:`Task` registered by name. Adding one is one small module in this
package that lists its tasks in ``REGISTERED``: every module here is imported and its tasks registered."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import MissingFileError, UnknownNameError
from .base import DataError, Sample, Task, decoy, draw, parse_rows, read_jsonl, row_id, with_control
from .lmeval import PREFIX

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task to the registry (a name can be taken once)."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    for _task in getattr(importlib.import_module(f"{__name__}.{_module.name}"), "REGISTERED", ()):
        register(_task)


def get_task(name: str, include: str | None = None) -> Task:
    """The registered task ``name``, or for ``lm-eval:NAME`` lm-eval's task NAME (its own, or a YAML task under
    ``include``; :mod:`cola.tasks.lmeval`)."""
    if name.startswith(PREFIX):
        from .lmeval import lm_eval_task

        return lm_eval_task(name[len(PREFIX):], include)
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownNameError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def _hub_rows(task: Task, split: str) -> list[tuple[str, str, dict]]:
    try:
        import datasets

        dataset, config, hub_splits = task.hub
        rows = datasets.load_dataset(dataset, config, split=hub_splits[split])
    except Exception as err:  # offline, hub error, missing package: all end the same way for the user
        raise DataError(
            f"task {task.name!r}: no --data-dir given and the hub copy ({task.hub[0]}) could not be loaded ({err}). "
            f"Pass --data-dir DIR with {task.local_files.get(split, 'the split file')} under it (e.g. --data-dir ../shared/data)."
        ) from None
    return [(f"{task.hub[0]}[{i}]", row_id(row, f"{split}-{i}"), task.from_hub(dict(row)))
            for i, row in enumerate(rows)]


def _file_rows(path: Path) -> list[tuple[str, str, dict]]:
    return [(f"{path}:{lineno}", row_id(row, f"line-{lineno}"), row) for lineno, row in read_jsonl(path)]


def load_samples(
    task: Task | str,
    data_dir: str | Path | None = None,
    data_file: str | Path | None = None,
    n: int | None = None,
    seed: int = 0,
    level: int | None = None,
    skip_bad_rows: bool = False,
    split: str | None = None,
    ids: Sequence[str] | None = None,
) -> list[Sample]:
    """The seeded subset of ``n`` samples of a task (default: the task's ``default_n``; 0 or negative: all); with
    ``ids``, those samples, in that order (``n`` and ``seed`` then say nothing), each of which must be there.

    Rows come from ``data_file`` (any JSONL of the task's shape), else the task's own generator, else the ``split``
    (default: the task's, test or CSQA's dev) from the library that serves the task's documents (lm-eval), from
    ``data_dir`` or, without it, the HF hub. ``level`` keeps MATH
    problems of one difficulty level.
    """
    task = get_task(task) if isinstance(task, str) else task
    n = task.default_n if n is None else (None if n <= 0 else n)
    if split is not None and data_file is not None:
        raise DataError("--split picks a file under --data-dir (or a hub split); it does not apply to --data-file")
    if split is not None:
        task.split(split)  # a task without splits, or an unknown split: one clear error
    if data_file is not None:
        path = Path(data_file)
        if not path.is_file():
            raise MissingFileError(f"data file not found: {path}")
        rows, source = _file_rows(path), str(path)
    elif task.generator is not None:
        generated = task.generator(n or task.default_n, seed)
        rows, source = [(f"{task.name}[{i}]", row_id(r, f"{task.name}-{i}"), r) for i, r in enumerate(generated)], task.name
    elif task.documents is not None:
        split = task.split(split)
        rows, source = task.documents(split), f"{task.name} ({split} split)"
    elif not task.splits:
        raise DataError(f"task {task.name!r} reads a user file: pass --data-file FILE.jsonl")
    elif data_dir is not None:
        split = task.split(split)
        if split not in task.local_files:
            raise DataError(f"task {task.name!r} has no local file for its {split!r} split; it is read from the hub")
        path = Path(data_dir) / task.local_files[split]
        if not path.is_file() and path.with_name(path.name + ".gz").is_file():  # shipped compressed
            path = path.with_name(path.name + ".gz")
        if not path.is_file():
            raise MissingFileError(f"task {task.name!r} expects {task.local_files[split]} under --data-dir; not found: {path}")
        rows, source = _file_rows(path), str(path)
    else:
        split = task.split(split)
        rows, source = _hub_rows(task, split), f"{task.hub[0]} ({task.hub[2][split]} split)"
    samples = parse_rows(task, rows, skip_bad_rows)
    if not samples:
        raise DataError(f"task {task.name!r}: no samples in {source}" + (" (every row was skipped as bad)" if rows else ""))
    if ids is not None:
        by_id = {s.id: s for s in samples}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataError(f"task {task.name!r}: {len(missing)} sample id(s) are not in {source}, first: "
                            f"{missing[:3]}")
        return [by_id[i] for i in ids]
    if data_file is None and task.generator is not None:  # made to size already, in its seeded order
        return samples
    if level is not None:
        samples = [s for s in samples if s.meta.get("level") == level]
        if not samples:
            raise DataError(f"task {task.name!r} has no samples of level {level} in {source}")
    return draw(samples, n, seed)


@dataclass(frozen=True)
class Selection:
    """Which samples of which task a command reads, as one value: the task's name (``lm-eval:NAME`` for an lm-eval
    task, found under ``include``), where its rows come from (``data_dir`` in the layout of shared/data, else the HF
    hub; or a user's ``data_file``), the ``split`` (default: the task's), the seeded subset (``n``, ``seed``), MATH's
    ``level``, and whether malformed rows are skipped (counted) instead of failing."""

    task: str
    data_dir: str | None = None
    data_file: str | None = None
    split: str | None = None
    n: int | None = None
    seed: int = 0
    level: int | None = None
    skip_bad_rows: bool = False
    include: str | None = None
    ids: tuple[str, ...] | None = None  # these samples of the split, in this order (a split carved by `cola bench`)

    def get_task(self) -> Task:
        """The selected task (:func:`get_task`)."""
        return get_task(self.task, self.include)

    def load(self) -> list[Sample]:
        """The selected samples (:func:`load_samples`)."""
        return load_samples(self.get_task(), self.data_dir, self.data_file, self.n, self.seed, self.level,
                            self.skip_bad_rows, self.split, self.ids)

    def dev(self, n: int) -> Selection:
        """The same task's dev split, ``n`` samples of the same seed, from the same place (never a user's file)."""
        return replace(self, data_file=None, split="dev", n=n, ids=None)

    @property
    def split_name(self) -> str | None:
        """The split read, resolved (:meth:`Task.split_of`): None for a user's file or a task without splits."""
        return self.get_task().split_of(self.split, self.data_file)

    @property
    def source(self) -> str | None:
        """Where the rows come from, as results record it: the data file, else the data folder (None: the hub)."""
        return self.data_file or self.data_dir


__all__ = ["DataError", "Sample", "Selection", "TASKS", "Task", "decoy", "get_task", "load_samples", "register",
           "with_control"]
