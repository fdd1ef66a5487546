"""bench/gpu_study.py, the one script a GPU machine runs, runs end to end on a CPU with --tiny: every section, its
result files, and the agreements it reports (one-call attention and packed batches give the per-row answers)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_study.py"


@pytest.mark.slow  # every section of the GPU script end to end
def test_gpu_study_runs_tiny_on_cpu(tiny_folder, tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_study", SCRIPT)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    assert study.main(["--tiny", "--model", str(tiny_folder), "--out", str(tmp_path), "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert set(result["sections"]) == {"a", "b", "c", "d", "e", "f"}
    a = result["sections"]["a"]
    assert set(a) == {"float32", "bfloat16"} and all(r["finished"] == 3 for r in a.values())
    assert result["sections"]["b"]["finished"] == 3 and not result["sections"]["b"]["stopped_at_cap"]
    assert result["sections"]["c"]["identical_answers"] and result["sections"]["c"]["ratio"] > 0
    assert result["sections"]["e"]["same_chains_and_answers"] and result["sections"]["e"]["max_logit_diff"] < 1e-4
    assert all(d["samples"] == 3 for d in result["sections"]["d"].values())
    f = result["sections"]["f"]
    assert f["invariant-score"]["numbers_differ"] == 0 == f["invariant-generate"]["numbers_differ"]
    assert f["invariant-score"]["evaluations"] == 9
    assert "section f:" in (tmp_path / "result.txt").read_text()
