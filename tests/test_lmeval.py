"""`cola eval --mode score` against lm-evaluation-harness itself, per sample (opt-in: needs `pip install -e .[lmeval]`).

The seeded ARC-Easy and ARC-Challenge subsets `cola eval` draws are written to a temporary folder with an lm-eval
task file per set in the format of lm-eval's own ARC task (``Question: {question}\\nAnswer:`` scored against
`` {choice}``); lm-eval's HF backend runs the embedded model's converted weights on them, and CoLa's evaluator the
same rows. Every sample's ``acc`` and ``acc_norm`` must agree. ``COLA_LMEVAL_N`` sets the rows per set (default 50;
the README's figure is 500).
"""

import json
import os

import pytest

lm_eval = pytest.importorskip("lm_eval")

from cola import Chain  # noqa: E402
from cola.evaluate import Evaluator  # noqa: E402
from cola.loading import resolve  # noqa: E402
from cola.tasks import get_task, load_samples  # noqa: E402

pytestmark = [pytest.mark.lmeval, pytest.mark.slow]

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def _write_sets(folder, data_dir, n, names):
    sets = {name: load_samples(name, data_dir, n=n, seed=0) for name in names}
    for name, samples in sets.items():
        with open(folder / f"{name}.jsonl", "w") as f:
            for s in samples:
                choices = {"label": s.labels, "text": [t for _, t in s.choices]}
                f.write(json.dumps({"id": s.id, "question": s.question, "choices": choices, "answerKey": s.gold}) + "\n")
        (folder / f"cola_{name}.yaml").write_text(TASK_YAML.format(name=f"cola_{name}", path=folder / f"{name}.jsonl"))
    return sets


def _agree(cm, chain, sets, pretrained, folder):
    """lm-eval's HF backend on ``pretrained`` against CoLa's evaluator running ``chain`` of ``cm``, per sample."""
    from lm_eval.tasks import TaskManager

    output = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={pretrained},dtype=float32", tasks=[f"cola_{n}" for n in sets],
        task_manager=TaskManager(include_path=str(folder)), batch_size=8, device="cpu", log_samples=True,
    )
    for name, samples in sets.items():
        theirs = {row["doc"]["id"]: row for row in output["samples"][f"cola_{name}"]}
        assert len(theirs) == len(samples)
        evaluator = Evaluator(cm, get_task(name), mode="score", score_style="lmeval")
        outcomes = [evaluator.evaluate_one(chain, s) for s in samples]  # one at a time, as `cola eval` asks them
        differ = [(o.id, o.correct, theirs[o.id]["acc"], bool(o.correct_norm), theirs[o.id]["acc_norm"])
                  for o in outcomes
                  if (float(o.correct), float(bool(o.correct_norm))) != (theirs[o.id]["acc"], theirs[o.id]["acc_norm"])]
        assert not differ, f"{name}: {len(differ)} of {len(samples)} samples differ (id, cola acc, lm-eval acc, ...): {differ[:5]}"


def test_score_mode_agrees_with_lm_eval_per_sample(smol, data_dir, tmp_path):
    sets = _write_sets(tmp_path, data_dir, int(os.environ.get("COLA_LMEVAL_N", "50")), ("arc_easy", "arc_challenge"))
    _agree(smol, Chain.full(smol.depth), sets, resolve(smol.name), tmp_path)


def test_an_exported_chain_agrees_with_cola_eval_of_the_chain(smol, data_dir, tmp_path):
    """lm-eval on the folder `cola export` writes scores what `cola eval --chain C --mode score` scores."""
    from cola.export import export_chain

    chain = Chain.parse("0-9,12-29")
    sets = _write_sets(tmp_path, data_dir, int(os.environ.get("COLA_LMEVAL_N", "50")), ("arc_easy",))
    _agree(smol, chain, sets, export_chain(smol, chain, tmp_path / "exported"), tmp_path)


def test_gemma_score_mode_agrees_with_lm_eval_per_sample(gemma, data_dir, tmp_path):
    """The second real architecture (sliding and global attention, BOS before the context): lm-eval's HF backend on
    its converted weights, as a user would point lm-eval at them."""
    sets = _write_sets(tmp_path, data_dir, int(os.environ.get("COLA_LMEVAL_N", "20")), ("arc_easy",))
    _agree(gemma, Chain.full(gemma.depth), sets, resolve(gemma.name), tmp_path)
