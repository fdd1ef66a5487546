"""The contract every registered task keeps, run for each one the registry holds: a new task module is tested here
with no edit, given its test data in ``tests/fixtures/tasks/NAME.json`` (``rows`` in the shape its files take, and
``answers``: outputs a model might write, each with whether it is right for the first row)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import DATA_DIR

from cola.tasks import TASKS, DataError, Selection, decoy, get_task, load_samples

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"


def _fixture(name: str) -> dict:
    path = FIXTURES / f"{name}.json"
    assert path.is_file(), (f"task {name!r} has no test data: add {path} with 'rows' (two or more rows in the shape "
                            "its files take) and 'answers' ([output, right?] pairs graded against the first row)")
    return json.loads(path.read_text())


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_tiny_file_loads_into_samples_that_can_be_asked(name, tmp_path):
    task, rows = get_task(name), _fixture(name)["rows"]
    samples = load_samples(task, data_file=_write(tmp_path, rows), n=0)
    assert sorted(s.id for s in samples) == sorted(str(r["id"]) for r in rows)  # every row, by its id
    assert task.kind in ("mc", "qa") and "generate" in task.modes or task.verbatim
    for sample in samples:
        assert sample.question and sample.gold and isinstance(task.prompt(sample), str) and task.prompt(sample)
        if task.kind == "mc":
            assert len(sample.choices) >= 2 and sample.gold in sample.labels and "score" in task.modes
            context, options = task.score_format(sample)
            assert context and len(options) == len(sample.choices)
    assert task.max_new_tokens > 0


@pytest.mark.parametrize("name", sorted(TASKS))
def test_grading_takes_right_wrong_and_unreadable_answers(name, tmp_path):
    task, fixture = get_task(name), _fixture(name)
    sample = load_samples(task, data_file=_write(tmp_path, fixture["rows"][:1]), n=0)[0]
    assert any(right for _, right in fixture["answers"]) and not all(right for _, right in fixture["answers"])
    for text, right in fixture["answers"]:
        assert task.grade(task.extract(text, sample), sample) is right, (text, sample.gold)
        assert task.is_done(text, sample) in (True, False)
    assert not task.grade(None, sample)  # no answer found is never right
    fake = decoy(sample)  # the chance control's gold: a deterministic wrong answer
    assert fake.gold != sample.gold and not task.grade(fake.gold, sample) and task.grade(fake.gold, fake)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_an_empty_file_and_a_repeated_id_are_one_clear_error(name, tmp_path):
    task, rows = get_task(name), _fixture(name)["rows"]
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no samples"):
        load_samples(task, data_file=tmp_path / "empty.jsonl", n=0)
    with pytest.raises(DataError, match="occur more than once"):
        load_samples(task, data_file=_write(tmp_path, [rows[0], rows[1] | {"id": rows[0]["id"]}]), n=0)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_are_the_tasks_own_and_an_unknown_one_is_refused(name, tmp_path):
    task = get_task(name)
    with pytest.raises(DataError, match=f"task {name!r} has"):
        task.split("no-such-split")
    if not task.splits:  # a user's file or generated rows: no split to read
        assert task.split_of(None) is None
        return
    assert task.default_split in task.splits and task.split_of(None) == task.default_split
    assert set(task.local_files) <= set(task.splits)
    if task.generator is None and DATA_DIR.is_dir():  # the local copies the README lists exist for every split
        for split, file in task.local_files.items():
            assert (DATA_DIR / file).is_file() or (DATA_DIR / (file + ".gz")).is_file(), (split, file)
        one = Selection(name, str(DATA_DIR), split=task.default_split, n=3).load()
        assert len(one) == 3 and len({s.id for s in one}) == 3


@pytest.mark.parametrize("name", sorted(t for t in TASKS if TASKS[t].generator is not None))
def test_a_generated_task_is_the_same_for_the_same_seed(name):
    a, b = load_samples(name, n=5, seed=1), load_samples(name, n=5, seed=1)
    assert [(s.id, s.gold) for s in a] == [(s.id, s.gold) for s in b] and len(a) == 5
    assert [s.id for s in load_samples(name, n=5, seed=2)] != [s.id for s in a]
