"""A crash-safe results store: a run folder with ``config.json`` and ``records.jsonl``, one line per finished sample.

Each record is written as one line, flushed and fsync'ed, so a run killed at any moment (SIGKILL included) loses at
most the sample in flight; a torn last line is dropped when the run is opened again. Re-opening a folder with the
same config resumes it; a different config is refused rather than mixed in.

One writer at a time: a :class:`RunStore` holds an exclusive OS lock (``flock``) on ``.lock`` in its folder for as
long as it is open. The lock dies with its process, so a SIGKILLed run never blocks its own resume; a second writer
gets :class:`~cola.errors.RunLockedError` naming the process that holds it. Readers take no lock: they read whole
lines only, and count each sample id once.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import warnings
from pathlib import Path

from .errors import (
    ConfigMismatch,
    DataError,
    MissingFileError,
    RunLockedError,
    UsageError,
)

CONFIG = "config.json"
RECORDS = "records.jsonl"
LOCK = ".lock"
UNCOMPARED = ("version", "batch", "workers")  # recorded; a resume under another version, batch size or worker count may go on
WARNED = ("environment",)  # software and device: a resume under others goes on, with a warning listing them
PROVENANCE = ("weights", "environment", "split")  # runs made before these were recorded resume, with a warning


def read_json(path: str | Path) -> dict:
    """A JSON file's content; a file that is not JSON is a :class:`~cola.errors.DataError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
                        "restore or delete the file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text (UTF-8) file; restore or delete it") from None


def jsonl_rows(path: str | Path, lines: list[str]) -> list[tuple[int, dict]]:
    """(line number, object) of each non-blank line of ``lines``, read from ``path``: the one JSONL parser (data
    files, run records, eval outputs); a line that is not JSON is a :class:`~cola.errors.DataError` naming the file
    and the line."""
    rows = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    return rows


def check_folder(folder: str | Path, option: str = "--out") -> Path:
    """``folder`` as a path that is a folder or can become one (nothing there yet), else a one-line error."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder}: that is a file, not a folder; give a new folder (or an existing run "
                         "folder to resume)")
    return folder


class FolderLock:
    """The exclusive write lock of a run folder (created if need be), held until :meth:`release`, the end of a
    ``with`` block or the process; a folder locked by another process raises :class:`~cola.errors.RunLockedError`
    naming it. Take it before costly work (loading a model) so that a second writer stops at once."""

    def __init__(self, folder: str | Path) -> None:
        self._fd: int | None = None
        self.folder = check_folder(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            for _ in range(50):  # the holder writes its name just after it takes the lock
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                if holder:
                    break
                time.sleep(0.01)
            os.close(fd)
            holder = holder or "another process"
            raise RunLockedError(f"{self.folder} is being written by {holder}; wait for it to finish (or stop it), "
                                 "or give another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let another process write the folder."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


class RunStore:
    """Append-only record store of one search run, the only writer of its folder: it holds the folder's
    :class:`FolderLock` (its own, or ``lock`` taken earlier by the caller) until :meth:`close`, the end of a ``with``
    block, or the process."""

    def __init__(self, folder: str | Path, config: dict, lock: FolderLock | None = None) -> None:
        self.folder = check_folder(folder)
        if lock is not None and lock.folder.resolve() != self.folder.resolve():
            raise ValueError(f"the lock of {lock.folder} does not lock {self.folder}")
        self.lock = lock or FolderLock(self.folder)
        self.config = config
        path = self.folder / CONFIG
        if path.exists():
            stored = read_json(path)
            self._check(stored, config)
        else:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
        self._drop_torn_tail()

    def _check(self, stored: dict, config: dict) -> None:
        """Refuse to resume a run of another config; warn where only the software or device differ."""
        unverified = [k for k in PROVENANCE if k not in stored and k in config]
        diff = sorted(k for k in set(stored) | set(config)
                      if k not in UNCOMPARED + WARNED + tuple(unverified) and stored.get(k) != config.get(k))
        if diff:
            changes = ", ".join(f"{k}: {stored.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise ConfigMismatch(f"{self.folder} holds a run with another config ({changes}); use another --out")
        if unverified:
            warnings.warn(f"{self.folder} was made before CoLa recorded {' and '.join(unverified)}: resuming it "
                          "without checking that they are the same", stacklevel=3)
        for key in WARNED:
            old, new = stored.get(key) or {}, config.get(key) or {}
            changed = [f"{k}: {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            if key not in unverified and changed:
                warnings.warn(f"resuming {self.folder} in another environment ({', '.join(changed)}); its records so "
                              "far were computed in the first one", stacklevel=3)

    @property
    def records_path(self) -> Path:
        return self.folder / RECORDS

    def _drop_torn_tail(self) -> None:
        path = self.records_path
        if not path.exists():
            return
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):  # the process died inside a write: the partial line is the sample in flight
            with open(path, "r+b") as f:
                f.truncate(end)

    def close(self) -> None:
        """Release the folder's lock (another process may then write it)."""
        self.lock.release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def records(self) -> list[dict]:
        """Every finished record, in the order written (each sample id once)."""
        return read_records(self.folder)

    def finished_ids(self) -> set[str]:
        return {r["id"] for r in self.records()}

    def append(self, record: dict) -> None:
        """Write one finished record durably."""
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.records_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def read_records(folder: str | Path) -> list[dict]:
    """The complete records of a run folder, each sample id once: a torn last line is ignored, and a sample recorded
    twice (by two writers at once, in a folder written before runs were locked) is counted once, the first record
    kept, with a warning."""
    path = Path(folder) / RECORDS
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records, seen, repeated = [], set(), []
    for _, record in jsonl_rows(path, lines[:-1]):
        if record["id"] in seen:
            repeated.append(record["id"])
            continue
        seen.add(record["id"])
        records.append(record)
    if repeated:
        warnings.warn(f"{path}: {len(repeated)} record(s) repeat a sample id already recorded (first: "
                      f"{repeated[0]!r}); each sample is counted once, its first record kept", stacklevel=2)
    return records


def read_config(folder: str | Path) -> dict:
    """A run folder's ``config.json``."""
    path = Path(folder) / CONFIG
    if not path.exists():
        raise MissingFileError(f"not a run folder (no {CONFIG}): {folder}")
    return read_json(path)


def eval_summary_path(path: str | Path) -> Path:
    """The summary beside a ``cola eval --out F.jsonl`` file: ``F.json``."""
    path = Path(path)
    if path.suffix == ".json":
        raise UsageError(f"--out {path}: the per-sample lines need a name other than the summary's; use .jsonl")
    return path.with_suffix(".json")


def write_eval(path: str | Path, rows: list[dict], summary: dict) -> Path:
    """Write an evaluation: one JSON line per sample at ``path`` and its summary (what was evaluated, on what, the
    accuracy) beside it (:func:`eval_summary_path`); returns the summary's path."""
    summary_path = eval_summary_path(path)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary_path


def read_eval(path: str | Path) -> tuple[dict, list[dict]]:
    """An evaluation written by :func:`write_eval`: its summary and its per-sample rows."""
    path, summary_path = Path(path), eval_summary_path(path)
    if not path.is_file() or not summary_path.is_file():
        raise MissingFileError(f"not a cola eval output (it needs {path.name} and {summary_path.name} beside it, "
                                f"from `cola eval --out {path.name}`): {path}")
    rows = [row for _, row in jsonl_rows(path, path.read_text(encoding="utf-8").splitlines())]
    return read_json(summary_path), rows
