"""Task loading: real rows from the local data, seeded subsets, bad rows, the offline synthetic task, `cola eval`."""

import json

import pytest

from cola.cli import main
from cola.tasks import TASKS, DataError, get_task, load_samples


def test_real_rows_load_with_all_label_kinds(data_dir):
    easy = load_samples("arc_easy", data_dir, n=0)
    assert len(easy) == 2376
    numeric = [s for s in easy if s.labels[0] == "1"]
    assert len(numeric) == 97 and all(s.gold in s.labels for s in numeric)
    assert {len(s.choices) for s in easy} >= {3, 4, 5}
    assert len(load_samples("arc_challenge", data_dir, n=0)) == 1172
    assert len(load_samples("csqa", data_dir, n=0)) == 1221
    assert len(load_samples("gsm8k", data_dir, n=0)) == 1319
    level5 = load_samples("math", data_dir, n=0, level=5)
    assert level5 and all(s.meta["level"] == 5 for s in level5)


def test_seeded_subset_is_fixed(data_dir):
    a = [s.id for s in load_samples("arc_challenge", data_dir, n=20, seed=3)]
    assert a == [s.id for s in load_samples("arc_challenge", data_dir, n=20, seed=3)]
    assert a != [s.id for s in load_samples("arc_challenge", data_dir, n=20, seed=4)]
    assert len(set(a)) == 20


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "q", "choices": [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}]}, "missing field 'answerKey'"),
        ({"question": "q", "choices": [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}], "answerKey": "E"}, "answerKey 'E' is not one of"),
        ({"question": "q", "choices": [], "answerKey": "A"}, "missing field 'choices'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "mc.jsonl"
    good = {"question": "q", "choices": [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}], "answerKey": "A"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=f"mc.jsonl:2: {message}"):
        load_samples("mc_jsonl", data_file=path, n=0)
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        assert len(load_samples("mc_jsonl", data_file=path, n=0, skip_bad_rows=True)) == 1


def test_offline_without_data_dir_says_what_to_pass():
    with pytest.raises(DataError, match="Pass --data-dir DIR with gsm8k/test.jsonl"):
        load_samples("gsm8k")


def test_every_task_is_registered():
    assert {"gsm8k", "math", "arc_easy", "arc_challenge", "csqa", "mc_jsonl", "qa_jsonl", "synthetic", "synthetic_mc"} <= set(TASKS)


def test_eval_synthetic_offline_writes_records(smol, tmp_path, capsys):
    out = tmp_path / "eval.jsonl"
    assert main(["eval", "--task", "synthetic", "--n", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 8
    assert {"id", "prompt", "output", "answer", "gold", "correct", "chain"} <= set(records[0])
    k = sum(r["correct"] for r in records)
    assert f"synthetic acc: {k / 8:.4f} ({k}/8)" in printed
    assert all(r["correct"] == (r["answer"] is not None and float(r["answer"]) == float(r["gold"])) for r in records)


def test_eval_qa_jsonl_user_file(smol, tmp_path, capsys):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "What is the capital of France?", "answer": "Paris"}\n')
    assert main(["eval", "--task", "qa_jsonl", "--data-file", str(path), "--n", "0"]) == 0
    assert "qa_jsonl acc: 1.0000 (1/1)" in capsys.readouterr().out


def test_decoy_is_a_deterministic_wrong_answer(data_dir):
    from cola.tasks import decoy

    for name in ("arc_challenge", "gsm8k", "math"):
        for sample in load_samples(name, data_dir, n=30, seed=2):
            fake = decoy(sample)
            assert fake == decoy(sample) and fake.meta["true_gold"] == sample.gold and fake.id == sample.id
            task = TASKS[name]
            assert not task.grade(fake.gold, sample), (name, sample.gold, fake.gold)  # wrong for the real gold
            assert task.grade(fake.gold, fake)  # and right for itself
            if sample.choices:
                assert fake.gold in sample.labels


def test_splits_read_their_own_files(data_dir):
    sizes = {("arc_easy", "train"): 2251, ("arc_easy", "dev"): 570, ("arc_easy", "test"): 2376,
             ("arc_challenge", "train"): 1119, ("arc_challenge", "dev"): 299, ("csqa", "train"): 9741,
             ("csqa", "dev"): 1221}
    ids = {}
    for (task, split), size in sizes.items():
        samples = load_samples(task, data_dir, n=0, split=split)
        assert len(samples) == size
        ids[task, split] = {s.id for s in samples}
    assert len(load_samples("csqa", data_dir, n=0)) == 1221  # CSQA's default stays its dev file
    assert not ids["arc_easy", "train"] & ids["arc_easy", "test"] and not ids["arc_easy", "dev"] & ids["arc_easy", "test"]


@pytest.mark.parametrize("task, split, message", [
    ("csqa", "test", "task 'csqa' has splits dev, train; not 'test'"),
    ("math", "train", "task 'math' has splits test; not 'train'"),
    ("synthetic", "dev", "task 'synthetic' has no splits"),
])
def test_a_split_the_task_lacks_is_one_clear_error(data_dir, task, split, message):
    with pytest.raises(DataError, match=message):
        load_samples(task, data_dir, split=split)
    if get_task(task).splits:  # a task without splits reads no split: nothing to refuse
        with pytest.raises(DataError, match=message):
            get_task(task).split_of(split)


def test_the_split_a_run_reads_is_none_for_a_user_file_or_a_task_without_splits():
    assert get_task("arc_easy").split_of(None) == "test" and get_task("arc_easy").split_of("dev") == "dev"
    assert get_task("arc_easy").split_of("dev", data_file="mine.jsonl") is None
    assert get_task("synthetic").split_of(None) is None and get_task("csqa").split_of(None) == "dev"


def test_cli_split_and_bad_split(smol, data_dir, capsys, tmp_path):
    assert main(["eval", "--task", "arc_easy", "--split", "train", "--n", "3", "--data-dir", str(data_dir),
                 "--mode", "score", "--out", str(tmp_path / "e.jsonl")]) == 0
    train_ids = {json.loads(line)["id"] for line in (tmp_path / "e.jsonl").read_text().splitlines()}
    assert train_ids <= {s.id for s in load_samples("arc_easy", data_dir, n=0, split="train")}
    assert main(["eval", "--task", "csqa", "--split", "test", "--data-dir", str(data_dir)]) == 2
    assert "has splits dev, train" in capsys.readouterr().err
    assert main(["eval", "--task", "arc_easy", "--split", "validation"]) == 2  # the task's own splits, named
    assert "task 'arc_easy' has splits test, dev, train; not 'validation'" in capsys.readouterr().err
    path = tmp_path / "mc.jsonl"
    path.write_text('{"question": "q", "choices": [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}], '
                    '"answerKey": "A"}\n')
    assert main(["eval", "--task", "mc_jsonl", "--data-file", str(path), "--split", "dev"]) == 2
    assert "does not apply to --data-file" in capsys.readouterr().err


def test_search_records_the_split(smol, data_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--task", "arc_easy", "--split", "dev", "--n", "1", "--sims", "2", "--mode", "score",
                 "--data-dir", str(data_dir), "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["split"] == "dev"
    assert set(config["sample_ids"]) <= {s.id for s in load_samples("arc_easy", data_dir, n=0, split="dev")}
