"""Crash-safe results: a search's run folder and an evaluation's output, resumable, one writer each.

A run folder holds ``config.json`` and ``records.jsonl``, one line per finished sample. Each record is written as one
line, flushed and fsync'ed (Ctrl-C held back meanwhile), so a run killed at any moment (SIGKILL included) loses at
most the sample in flight; a torn last line is dropped when the run is opened again. Re-opening a folder with the
same config resumes it; a different config is refused rather than mixed in. An evaluation (:class:`EvalStore`)
journals every finished batch the same way and writes its rows and summary whole at the end.

One writer at a time: a :class:`RunStore` holds an exclusive OS lock (``flock``) on ``.lock`` in its folder for as
long as it is open, an evaluation on ``.F.jsonl.lock`` beside its output. The lock dies with its process, so a
SIGKILLed run never blocks its own resume; a second writer gets :class:`~cola.errors.RunLockedError` naming the
process that holds it. Readers take no lock: they read whole lines only, and count each sample id once. Every file
is read through :func:`read_text`, so bytes that are not UTF-8 text are one error naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import ConfigMismatch, DataError, DiskFullError, MissingFileError, RunLockedError, UsageError

CONFIG = "config.json"
RECORDS = "records.jsonl"
LOCK = ".lock"
UNCOMPARED = ("version", "batch", "workers")  # recorded; a resume under another version, batch size or worker count may go on
WARNED = ("environment",)  # software and device: a resume under others goes on, with a warning listing them
PROVENANCE = ("weights", "loaded_weights", "batch_invariant", "environment", "split")  # runs made before these were recorded resume, with a warning


COMPRESSED = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz",
              b"\x28\xb5\x2f\xfd": "zstd"}  # leading bytes -> format


def read_text(path: str | Path) -> str:
    """A text file's content as UTF-8 (a ``.gz`` file decompressed first); anything else (compressed, UTF-16, binary)
    is one :class:`~cola.errors.DataError` naming the file, the line where it applies and what was expected."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, where a file was expected") from None
    if path.suffix == ".gz" and data[:2] == b"\x1f\x8b":
        import gzip

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: a damaged gzip file ({err}); restore it") from None
    else:
        kind = next((name for magic, name in COMPRESSED.items() if data.startswith(magic)), None)
        if kind is not None:
            hint = " (name it .jsonl.gz to have it read as it is)" if kind == "gzip" else ""
            raise DataError(f"{path}: a {kind}-compressed file; expected UTF-8 text: decompress it{hint}")
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise DataError(f"{path}: UTF-16 text; expected UTF-8: convert it (e.g. iconv -f UTF-16 -t UTF-8)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); expected "
                        "a UTF-8 text file, not a binary one") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(f"{path}:{line}: holds NUL bytes; expected UTF-8 text, not a binary file")
    return text.removeprefix("\ufeff")


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def read_json(path: str | Path, expect: type = dict) -> dict | list:
    """A JSON file's content, checked to be of the shape ``expect`` (an object, or a list); a file that is not
    JSON text of that shape is a :class:`~cola.errors.DataError` naming it."""
    path = Path(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
                        "restore or delete the file") from None
    if not isinstance(data, expect):
        raise DataError(f"{path}: holds {_kind(data)}; expected a JSON {'object' if expect is dict else 'list'}")
    return data


def jsonl_rows(path: str | Path, lines: list[str] | None = None) -> list[tuple[int, dict]]:
    """(line number, object) of each non-blank line of ``lines`` (default: the file's, :func:`read_text`), read from
    ``path``: the one JSONL parser (data files, run records, eval outputs); a line that is not a JSON object is a
    :class:`~cola.errors.DataError` naming the file and the line."""
    if lines is None:
        lines = read_text(path).splitlines()
    rows = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: holds {_kind(row)}; expected a JSON object (one per line)")
            rows.append((lineno, row))
    return rows


def check_folder(folder: str | Path, option: str = "--out") -> Path:
    """``folder`` as a path that is a folder or can become one (nothing there yet), else a one-line error."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder}: that is a file, not a folder; give a new folder (or an existing run "
                         "folder to resume)")
    _check_parent(folder, option)
    return folder


def check_out_file(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a file that can be written: not a folder, in a folder that exists or can be made; else a
    one-line :class:`~cola.errors.UsageError`. Called before any costly work (loading a model)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: that is a folder; give a file name in it (e.g. {path / 'out.jsonl'})")
    _check_parent(path, option)
    return path


def _check_parent(path: Path, option: str) -> None:
    """The nearest existing folder above ``path`` must be a writable folder (the rest is made when written)."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is a file, so no folder can be made there")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {parent} is not writable by this user; give another path")


@contextlib.contextmanager
def no_interrupts():
    """Hold Ctrl-C (SIGINT) and SIGTERM back while a durable write completes, so that an interrupted command never
    leaves a half-written line or file: a stop that arrives meanwhile is recorded and handled, by the handler it would
    have met, as soon as the block ends. (Python runs signal handlers in the main thread, whichever thread the signal
    reaches, so a handler is what holds it back, not a thread's signal mask. Main thread only: elsewhere nothing is
    held back.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, object]] = []
    # a handler set in C reads as None: left as it is
    previous = {number: handler for number in STOPS if (handler := signal.getsignal(number)) is not None}
    for number in previous:
        signal.signal(number, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if caught:
            signum, frame = caught[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


STOPS = {signal.SIGINT, signal.SIGTERM}  # what a user or a scheduler stops a command with


FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, a full quota


@contextlib.contextmanager
def disk_full(path: str | Path):
    """Within it, a write that finds the disk full or the quota reached (``ENOSPC``, ``EDQUOT``) raises
    :class:`~cola.errors.DiskFullError` naming ``path``; every other error passes as it is."""
    try:
        yield
    except OSError as err:
        if err.errno in FULL and not isinstance(err, DiskFullError):
            raise DiskFullError(f"the disk is full: cannot write {path} ({os.strerror(err.errno)})") from None
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def append_line(path: Path, line: str) -> None:
    """Append one line durably: written whole, fsync'ed, with Ctrl-C held back until it is on disk. A write that
    fails (a full disk: :class:`~cola.errors.DiskFullError`) cuts the file back to where it ended, so no torn line
    is left."""
    data = (line if line.endswith("\n") else line + "\n").encode()
    with no_interrupts(), disk_full(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            end = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
            except OSError:
                os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary file beside it, fsync'ed, then renamed over it (on a failed write,
    a full disk included, the temporary file is removed and ``path`` is as it was)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with no_interrupts(), disk_full(path):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                _write_all(fd, text.encode())
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise


def save_tensors_atomic(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write torch ``tensors`` (and text ``metadata`` in its header) as a safetensors file, whole or not at all (as
    :func:`write_atomic`)."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with no_interrupts(), disk_full(path):
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise


def drop_torn_tail(path: Path) -> None:
    """Cut a file back to its last complete line (a process killed inside a write leaves a partial one)."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)


def config_differences(stored: dict, config: dict, uncompared: tuple[str, ...] = UNCOMPARED) -> list[str]:
    """The keys that decide results in which a ``stored`` config differs from ``config``: all but ``uncompared``,
    the software and device (:data:`WARNED`), and a provenance key the stored config predates."""
    unverified = tuple(k for k in PROVENANCE if k not in stored and k in config)
    return sorted(k for k in set(stored) | set(config)
                  if k not in uncompared + WARNED + unverified and stored.get(k) != config.get(k))


def check_config(where: Path, stored: dict, config: dict, uncompared: tuple[str, ...] = UNCOMPARED) -> None:
    """Refuse to resume ``where`` when its ``stored`` config differs from ``config`` (:func:`config_differences`);
    warn where only the software or device differ, or where it was made before a provenance key was recorded."""
    unverified = [k for k in PROVENANCE if k not in stored and k in config]
    diff = config_differences(stored, config, uncompared)
    if diff:
        changes = ", ".join(f"{k}: {stored.get(k)!r} -> {config.get(k)!r}" for k in diff)
        raise ConfigMismatch(f"{where} holds results of another config ({changes}); use another --out")
    if unverified:
        warnings.warn(f"{where} was made before CoLa recorded {' and '.join(unverified)}: resuming it without "
                      "checking that they are the same", stacklevel=3)
    for key in WARNED:
        old, new = stored.get(key) or {}, config.get(key) or {}
        changed = [f"{k}: {old[k]} -> {new.get(k)}" for k in sorted(old) if old[k] != new.get(k)]  # what it recorded
        if key not in unverified and changed:
            warnings.warn(f"resuming {where} in another environment ({', '.join(changed)}); its results so far were "
                          "computed in the first one", stacklevel=3)


class FolderLock:
    """The exclusive write lock of a run folder (created if need be), held until :meth:`release`, the end of a
    ``with`` block or the process; a folder locked by another process raises :class:`~cola.errors.RunLockedError`
    naming it. Take it before costly work (loading a model) so that a second writer stops at once. ``lock_file``
    locks one file's output instead (an evaluation's ``--out``, :func:`eval_lock`)."""

    def __init__(self, folder: str | Path, lock_file: str | Path | None = None) -> None:
        self._fd: int | None = None
        if lock_file is None:
            self.folder = check_folder(folder)
            self.folder.mkdir(parents=True, exist_ok=True)
            lock_file = self.folder / LOCK
        else:
            self.folder = Path(folder)
            Path(lock_file).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
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
            check_config(self.folder, stored, config)
        else:
            write_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
        drop_torn_tail(self.records_path)

    @property
    def records_path(self) -> Path:
        return self.folder / RECORDS

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
        append_line(self.records_path, json.dumps(record, sort_keys=True))


def read_records(folder: str | Path) -> list[dict]:
    """The complete records of a run folder, each sample id once: a torn last line is ignored, and a sample recorded
    twice (by two writers at once, in a folder written before runs were locked) is counted once, the first record
    kept, with a warning."""
    path = Path(folder) / RECORDS
    if not path.exists():
        return []
    lines = read_text(path).split("\n")
    records, seen, repeated = [], set(), []
    for lineno, record in jsonl_rows(path, lines[:-1]):
        if "id" not in record:
            raise DataError(f"{path}:{lineno}: a record without an 'id'; expected a search record")
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


def eval_lock(path: str | Path) -> FolderLock:
    """The one-writer lock of an evaluation's ``--out`` file (on ``.F.jsonl.lock`` beside it): take it before the model
    loads, so that a second evaluation writing the same file stops at once."""
    path = check_out_file(path)
    eval_summary_path(path)
    return FolderLock(path, path.with_name(f".{path.name}.lock"))


def chunks(samples: Sequence, batch: int) -> list[list]:
    """``samples`` cut into consecutive units of ``batch``: how an evaluation runs and records them."""
    return [list(samples[i : i + batch]) for i in range(0, len(samples), batch)]


class EvalStore:
    """An evaluation's output (``cola eval --out F.jsonl``), written as it runs and resumable, as a run folder is.

    While it runs, each finished unit of work (a batch of one stage: the chain, the policy, full depth beside it, the
    sweep's table, the calibration's table on dev, ...) is appended to the journal ``F.partial.jsonl`` as one line,
    fsync'ed; its first line is the evaluation's config. Killed at any moment, it loses at most the batches in flight;
    the same command again finds the journal, refuses it if the config differs, and runs only the missing batches
    (cut exactly as before, so the rows are those of an uninterrupted run). At the end, the per-sample rows
    (``F.jsonl``) and the summary (``F.json``) are each written whole (a temporary file renamed), and the journal is
    removed. A finished output of the same config is handed back (:attr:`finished`) instead of being computed again;
    one of another config is refused. It holds ``F``'s lock (:func:`eval_lock`) while open. With ``path`` None (no
    ``--out``) nothing is written and every unit runs."""

    def __init__(self, path: str | Path | None = None, config: dict | None = None,
                 lock: FolderLock | None = None) -> None:
        self.config, self.path, self.lock = config or {}, None if path is None else Path(path), lock
        self.finished: tuple[dict, list[dict]] | None = None
        self._units: dict[tuple[str, int], dict] = {}
        self._process = f"{os.getpid()}@{socket.gethostname()}:{time.time():.6f}"
        if self.path is None:
            return
        self.summary_path = eval_summary_path(self.path)
        self.lock = lock or eval_lock(self.path)
        self.journal = self.path.with_name(self.path.name.removesuffix(".jsonl") + ".partial.jsonl")
        if self.journal.exists():
            drop_torn_tail(self.journal)
            rows = [row for _, row in jsonl_rows(self.journal)]
            if not rows or "config" not in rows[0]:
                raise DataError(f"{self.journal}:1: expected the evaluation's config line; delete the file to start "
                                "over")
            check_config(self.path, rows[0]["config"], self.config, uncompared=("version",))
            self._units = {(r["stage"], r["unit"]): r for r in rows[1:]}
        elif self.summary_path.exists():
            summary, rows = read_eval(self.path)
            if "config" not in summary:
                raise ConfigMismatch(f"{self.path} holds a finished evaluation made before CoLa recorded its config; "
                                     "give another --out, or delete it to evaluate again")
            check_config(self.path, summary["config"], self.config, uncompared=("version",))
            self.finished = summary, rows
        else:
            append_line(self.journal, json.dumps({"config": self.config}, sort_keys=True))

    def stage(self, name: str, units: Sequence[Sequence], compute: Callable[[Sequence], list],
              progress: Callable[[int], None] | None = None) -> tuple[list[list], float]:
        """Stage ``name`` over ``units`` (lists of samples, each run as one batch): ``compute(unit)`` gives a unit's
        JSON-ready results (one per sample), recorded as the unit finishes; units recorded earlier are read back, not
        run. Returns the results per unit and the seconds their computation took (summed over the processes that ran
        them, :meth:`processes`); ``progress(n)`` after each unit."""
        results, seconds = [], 0.0
        for index, unit in enumerate(units):
            ids = [s.id for s in unit]
            done = self._units.get((name, index))
            if done is not None and done["ids"] != ids:
                raise ConfigMismatch(f"{self.journal}: its {name} batch {index} holds other samples; delete the file "
                                     "to start over")
            if done is None:
                start = time.perf_counter()
                out = compute(unit)
                line = json.dumps({"stage": name, "unit": index, "ids": ids, "rows": out,
                                   "wall_s": time.perf_counter() - start, "process": self._process}, sort_keys=True)
                done = json.loads(line)  # as a resume reads it back: the same values either way
                if self.path is not None:
                    append_line(self.journal, line)
                self._units[(name, index)] = done
            results.append(done["rows"])
            seconds += done["wall_s"]
            if progress is not None:
                progress(len(unit))
        return results, seconds

    def seconds(self, *stages: str) -> float:
        """The seconds the units of ``stages`` took to compute, summed (over every process that ran them)."""
        return sum(u["wall_s"] for (stage, _), u in self._units.items() if stage in stages)

    def processes(self, *stages: str) -> int:
        """How many processes ran the units of ``stages`` (1: uninterrupted; more: resumed, and wall times are sums
        of each batch's time)."""
        return len({u["process"] for (stage, _), u in self._units.items() if stage in stages}) or 1

    def kept(self) -> str:
        """What is kept so far, in words (for an interrupted command's last line)."""
        if self.path is None:
            return "nothing kept (no --out)"
        results = sum(len(u["ids"]) for u in self._units.values())
        return f"{results} results in {len(self._units)} batch(es) kept in {self.journal}"

    def finish(self, rows: list[dict], summary: dict) -> Path:
        """Write the rows and the summary (with this evaluation's config), each whole, drop the journal and the lock;
        returns the summary's path (None without ``--out``)."""
        summary["config"] = self.config
        if self.path is None:
            return None
        write_atomic(self.path, "".join(json.dumps(row) + "\n" for row in rows))
        write_atomic(self.summary_path, json.dumps(summary, indent=2) + "\n")
        self.journal.unlink(missing_ok=True)
        self.close()
        return self.summary_path

    def close(self) -> None:
        """Release the output's lock."""
        if self.lock is not None:
            self.lock.release()


def read_eval(path: str | Path) -> tuple[dict, list[dict]]:
    """An evaluation written by :class:`EvalStore`: its summary and its per-sample rows."""
    path, summary_path = Path(path), eval_summary_path(path)
    if not path.is_file() or not summary_path.is_file():
        raise MissingFileError(f"not a cola eval output (it needs {path.name} and {summary_path.name} beside it, "
                                f"from `cola eval --out {path.name}`): {path}")
    return read_json(summary_path), [row for _, row in jsonl_rows(path)]
