"""`cola eval --mode score` against lm-evaluation-harness's `hf` backend, sample by sample, in a chosen dtype.

    .venv/bin/pip install -e ".[lmeval]"
    .venv/bin/python bench/lmeval_agreement.py --data-dir ../shared/data --n 500 --dtype bfloat16

The seeded ARC-Easy (and with --sets, ARC-Challenge) subset `cola eval` draws is written to a temporary folder with an
lm-eval task file in the format of lm-eval's own ARC task (``Question: {question}\\nAnswer:`` scored against
`` {choice}``); lm-eval's HF backend runs the embedded model's converted weights on it in --dtype (batch size
--lm-eval-batch), and CoLa's evaluator the same rows in the same dtype, one at a time as `cola eval` asks them. It
prints, per set, each side's acc and acc_norm and the samples whose verdicts differ. tests/test_lmeval.py asserts
that none differ in float32.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

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


def write_sets(folder: Path, data_dir, n: int, names) -> dict:
    """The seeded subsets of ``names`` as JSONL files under ``folder``, each with an lm-eval task file
    ``cola_NAME.yaml``; returns name -> samples."""
    from cola.tasks import load_samples

    sets = {name: load_samples(name, data_dir, n=n, seed=0) for name in names}
    for name, samples in sets.items():
        with open(folder / f"{name}.jsonl", "w") as f:
            for s in samples:
                choices = {"label": s.labels, "text": [t for _, t in s.choices]}
                f.write(json.dumps({"id": s.id, "question": s.question, "choices": choices, "answerKey": s.gold}) + "\n")
        (folder / f"cola_{name}.yaml").write_text(TASK_YAML.format(name=f"cola_{name}", path=folder / f"{name}.jsonl"))
    return sets


def disagreements(cm, chain, sets: dict, pretrained, folder: Path, dtype: str = "float32",
                  batch_size: int = 8) -> dict:
    """lm-eval's HF backend on ``pretrained`` against CoLa's evaluator running ``chain`` of ``cm``, per sample: for
    each set, both sides' acc and acc_norm counts and the samples whose verdicts differ (id, CoLa acc, lm-eval acc,
    CoLa acc_norm, lm-eval acc_norm)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from cola.evaluate import Evaluator
    from cola.tasks import get_task

    output = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={pretrained},dtype={dtype}", tasks=[f"cola_{n}" for n in sets],
        task_manager=TaskManager(include_path=str(folder)), batch_size=batch_size, device=str(cm.device),
        log_samples=True)
    result = {}
    for name, samples in sets.items():
        theirs = {row["doc"]["id"]: row for row in output["samples"][f"cola_{name}"]}
        if len(theirs) != len(samples):
            raise RuntimeError(f"{name}: lm-eval scored {len(theirs)} of {len(samples)} samples")
        evaluator = Evaluator(cm, get_task(name), mode="score", score_style="lmeval")
        outcomes = [evaluator.evaluate_one(chain, s) for s in samples]
        differ = [(o.id, o.correct, theirs[o.id]["acc"], bool(o.correct_norm), theirs[o.id]["acc_norm"])
                  for o in outcomes
                  if (float(o.correct), float(bool(o.correct_norm))) != (theirs[o.id]["acc"], theirs[o.id]["acc_norm"])]
        result[name] = {"n": len(samples), "cola_acc": sum(o.correct for o in outcomes),
                        "cola_acc_norm": sum(bool(o.correct_norm) for o in outcomes),
                        "lmeval_acc": int(sum(r["acc"] for r in theirs.values())),
                        "lmeval_acc_norm": int(sum(r["acc_norm"] for r in theirs.values())), "differ": differ}
    return result


def main() -> None:
    from cola import Chain, load_model
    from cola.loading import resolve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--sets", default="arc_easy", help="comma-separated: arc_easy, arc_challenge")
    parser.add_argument("--lm-eval-batch", type=int, default=8, help="lm-eval's batch size (default 8)")
    args = parser.parse_args()
    cm = load_model(args.model, device="cpu", dtype=args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sets = write_sets(folder, args.data_dir, args.n, args.sets.split(","))
        result = disagreements(cm, Chain.full(cm.depth), sets, resolve(args.model), folder, args.dtype,
                               args.lm_eval_batch)
    for name, r in result.items():
        print(f"{name} ({r['n']} samples, {args.dtype}, lm-eval batch {args.lm_eval_batch}): cola acc {r['cola_acc']} "
              f"acc_norm {r['cola_acc_norm']}; lm-eval acc {r['lmeval_acc']} acc_norm {r['lmeval_acc_norm']}; "
              f"{len(r['differ'])} samples differ in a verdict: {r['differ'][:10]}")


if __name__ == "__main__":
    main()
