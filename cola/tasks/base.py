"""What a task is: a small declarative unit (loader, prompt, answer extraction, grader, mode) and its samples."""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import DataError
from ..storage import jsonl_rows


@dataclass(frozen=True)
class Sample:
    """One benchmark item. ``choices`` is empty for free-answer tasks; ``gold`` is a label or an answer string."""

    id: str
    question: str
    gold: str
    choices: tuple[tuple[str, str], ...] = ()  # (label, text)
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.choices]

    @property
    def gold_index(self) -> int:
        return self.labels.index(self.gold)


@dataclass(frozen=True)
class Task:
    """A benchmark: where its rows come from, how a row becomes a :class:`Sample`, how it is asked and graded.

    ``kind`` is ``"mc"`` (multiple choice: ``generate`` or ``score`` mode) or ``"qa"`` (free answer: ``generate``).
    ``extract`` pulls the answer out of generated text; ``is_done`` says a partial generation already holds its final
    answer (so decoding can stop early without changing it); ``grade`` compares an extracted answer with the gold.
    """

    name: str
    kind: str
    description: str
    parse_row: Callable[[dict, str], Sample]  # (row, sample id) -> sample
    prompt: Callable[[Sample], str]
    extract: Callable[[str, Sample], str | None]
    is_done: Callable[[str, Sample], bool]
    grade: Callable[[str | None, Sample], bool]
    max_new_tokens: int
    local_files: dict[str, str] = field(default_factory=dict)  # split -> path under --data-dir
    hub: tuple[str, str | None, dict[str, str]] | None = None  # (dataset, config, split -> hub split) for the hub
    default_split: str = "test"
    from_hub: Callable[[dict], dict] = lambda row: row
    generator: Callable[[int, int], list[dict]] | None = None  # (n, seed) -> rows, for tasks made by the package
    default_n: int = 500
    documents: Callable[[str], list[tuple[str, str, dict]]] | None = None  # split -> (where, id, row), from a library
    document_splits: tuple[str, ...] = ()  # the splits ``documents`` serves
    score_format: Callable[[Sample], tuple[str, list[str]]] = lambda s: (
        f"Question: {s.question}\nAnswer:", [text for _, text in s.choices])  # lmeval style: context, options
    target_delimiter: str = " "  # score mode: what comes between the context and each option
    verbatim: bool = False  # the prompt is the model's whole input as written (lm-eval's context): no chat template,
    # no question-answer wrapper, special tokens as the tokenizer adds them; a verbatim multiple-choice task is scored

    @property
    def modes(self) -> tuple[str, ...]:
        if self.kind != "mc":
            return ("generate",)
        return ("score",) if self.verbatim else ("generate", "score")

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this task reads (from --data-dir, the hub or its library); empty for user files and generated
        tasks."""
        return tuple(dict.fromkeys([*self.local_files, *(self.hub[2] if self.hub else ()), *self.document_splits]))

    def split(self, name: str | None) -> str:
        """``name`` checked against :attr:`splits` (None: the task's default split)."""
        name = name or self.default_split
        if name not in self.splits:
            have = f"splits {', '.join(self.splits)}" if self.splits else "no splits (its rows come from --data-file or are generated)"
            raise DataError(f"task {self.name!r} has {have}; not {name!r}")
        return name

    def split_of(self, name: str | None, data_file: str | None = None) -> str | None:
        """The split a run or an evaluation reads: ``name`` checked (:meth:`split`), or None when its rows come from
        a user's ``data_file`` or the task has no splits."""
        return None if data_file or not self.splits else self.split(name)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each non-empty line of a JSONL file, ``.jsonl.gz`` read as it is; a line that is not a
    JSON object, or a file that is not UTF-8 text, is a :class:`DataError` naming the file and the line
    (:func:`cola.storage.jsonl_rows`)."""
    return iter(jsonl_rows(path))


def row_id(row: dict, fallback: str) -> str:
    """A row's sample id: its own ``id`` field, else ``fallback`` (its line number or row index, unique per load)."""
    value = row.get("id")
    return fallback if value is None or str(value).strip() == "" else str(value)


def parse_rows(task: Task, rows: Iterable[tuple[str, str, dict]], skip_bad_rows: bool = False) -> list[Sample]:
    """Turn (where, sample id, row) triples into samples. A bad row raises one :class:`DataError` naming where it
    is, or, with ``skip_bad_rows``, is skipped and counted in a single warning. Sample ids must be unique: results
    are stored and looked up by id, so a repeated id is a :class:`DataError` naming the first repeats and where they
    are, whatever ``skip_bad_rows`` says."""
    samples, bad, seen, repeats = [], [], {}, {}
    for where, sample_id, row in rows:
        if sample_id in seen:
            repeats.setdefault(sample_id, [seen[sample_id]]).append(where)
            continue
        seen[sample_id] = where
        try:
            samples.append(task.parse_row(row, sample_id))
        except (KeyError, ValueError, TypeError) as err:
            message = f"{where}: {err.args[0] if isinstance(err, (ValueError, TypeError)) else f'missing field {err}'}"
            if not skip_bad_rows:
                raise DataError(message) from None
            bad.append(message)
    if repeats:
        first = "; ".join(f"{i!r} at {', '.join(places)}" for i, places in list(repeats.items())[:3])
        raise DataError(f"{task.name}: {len(repeats)} sample id(s) occur more than once ({first}). Results are kept by "
                        "id, so each row needs its own: fix the \"id\" fields, or drop them to use line numbers")
    if bad:
        warnings.warn(f"{task.name}: skipped {len(bad)} bad row(s), first: {bad[0]}", stacklevel=2)
    return samples


def draw(samples: list[Sample], n: int | None, seed: int) -> list[Sample]:
    """The study's fixed random subset: ``n`` samples drawn with ``seed`` (all of them, shuffled, when n is None or
    at least their number)."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    return [samples[i] for i in order[: n if n is not None else len(order)]]


def require(row: dict, *names: str) -> list:
    """The named fields of a row; a missing or empty one raises ``ValueError('missing field ...')``."""
    values = []
    for name in names:
        value = row.get(name)
        if value is None or (isinstance(value, (str, list)) and not value):
            raise ValueError(f"missing field {name!r}")
        values.append(value)
    return values


def decoy(sample: Sample) -> Sample:
    """The same sample with its gold replaced by a deterministic wrong answer (chance control): another option of a
    multiple-choice question, picked by the sample id; a number plus one; an answer of words with ``x`` appended to
    its last word (a grader that finds the gold as a whole phrase in an answer does not find it in the decoy); any
    other answer (an expression) with ``+1`` appended. The true gold is kept in ``meta["true_gold"]``."""
    if sample.choices:
        wrong = [label for label in sample.labels if label != sample.gold]
        gold = random.Random(f"decoy:{sample.id}").choice(wrong)
    elif re.fullmatch(r"-?\d+", sample.gold.strip()):
        gold = str(int(sample.gold) + 1)
    elif re.fullmatch(r"-?\d*\.\d+", sample.gold.strip()):
        gold = str(float(sample.gold) + 1)
    elif re.fullmatch(r"[A-Za-z][A-Za-z '-]*", sample.gold.strip()):
        gold = f"{sample.gold.strip()}x"
    else:
        gold = f"{sample.gold}+1"
    return replace(sample, gold=gold, meta={**sample.meta, "true_gold": sample.gold})


def with_control(samples: list[Sample], control: str | None) -> list[Sample]:
    """The samples as a run of ``control`` asks them: decoy golds (:func:`decoy`) for the decoy control, else as
    they are. Every place that reads or searches a decoy run's samples goes through here."""
    return [decoy(s) for s in samples] if control == "decoy" else list(samples)
