"""A real search on the embedded model: its best chains, re-run independently with `cola eval --chain`, give the
answers the search recorded."""

import json

from cola.cli import main
from cola.store import read_config, read_records


def test_best_chains_reproduce_under_cola_eval(smol, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--task", "arc_easy", "--data-dir", str(data_dir), "--n", "3", "--seed", "1", "--mode", "score"]
    assert main(["search", *common, "--sims", "12", "--out", str(run), "--quiet"]) == 0
    printed = capsys.readouterr().out
    records = read_records(run)
    assert len(records) == 3 and read_config(run)["task"] == "arc_easy"
    assert f"original accuracy: {sum(r['full']['correct'] for r in records) / 3:.4f}" in printed
    for record in records:
        assert record["unique_evaluations"] == 12 and len(record["evaluations"]) == 13
        assert record["full"]["chain"] == "0-29"
        fixed = record["best"]["correct"] and not record["full"]["correct"]
        out = tmp_path / f"{record['id']}.jsonl"
        assert main(["eval", *common, "--chain", record["best"]["chain"], "--out", str(out)]) == 0
        again = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}[record["id"]]
        assert again["answer"] == record["best"]["answer"], ("fixed" if fixed else "kept", record["best"])
        assert again["correct"] == record["best"]["correct"]
