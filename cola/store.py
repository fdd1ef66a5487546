"""A crash-safe results store: a run folder with ``config.json`` and ``records.jsonl``, one line per finished sample.

Each record is written as one line, flushed and fsync'ed, so a run killed at any moment (SIGKILL included) loses at
most the sample in flight; a torn last line is dropped when the run is opened again. Re-opening a folder with the
same config resumes it; a different config is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

CONFIG = "config.json"
RECORDS = "records.jsonl"
UNCOMPARED = ("version", "batch", "workers")  # recorded; a resume under another version, batch size or worker count may go on
WARNED = ("environment",)  # software and device: a resume under others goes on, with a warning listing them
PROVENANCE = ("weights", "environment", "split")  # runs made before these were recorded resume, with a warning


class ConfigMismatch(ValueError):
    """The run folder holds results of another configuration."""


class RunStore:
    """Append-only record store of one search run."""

    def __init__(self, folder: str | Path, config: dict) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config = config
        path = self.folder / CONFIG
        if path.exists():
            stored = json.loads(path.read_text())
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

    def records(self) -> list[dict]:
        """Every finished record, in the order written."""
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
    """The complete records of a run folder (a torn last line is ignored)."""
    path = Path(folder) / RECORDS
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"not a run folder (no {CONFIG}): {folder}")
    return json.loads(path.read_text())


def eval_summary_path(path: str | Path) -> Path:
    """The summary beside a ``cola eval --out F.jsonl`` file: ``F.json``."""
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"--out {path}: the per-sample lines need a name other than the summary's; use .jsonl")
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
        raise FileNotFoundError(f"not a cola eval output (it needs {path.name} and {summary_path.name} beside it, "
                                f"from `cola eval --out {path.name}`): {path}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return json.loads(summary_path.read_text()), rows
