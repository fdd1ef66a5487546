"""Check `cola eval --mode score --score-style lmeval` against lm-evaluation-harness itself on the same samples.

    .venv/bin/pip install lm-eval
    .venv/bin/python bench/lm_eval_check.py --data-dir ../shared/data [--n 500] [--seed 0]

Writes the seeded ARC-Easy / ARC-Challenge subsets that `cola eval` draws to a temporary folder, with an lm-eval task
file per set in the format of lm-eval's own ARC task (``Question: {question}\\nAnswer:`` scored against
`` {choice}``), runs lm-eval's HF backend on the embedded model's converted weights, then CoLa's evaluator on the same
rows, and prints both side by side.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from cola import Chain, load_model
from cola.evaluate import Evaluator
from cola.models import resolve
from cola.tasks import get_task, load_samples

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import lm_eval
    from lm_eval.tasks import TaskManager

    folder = Path(tempfile.mkdtemp(prefix="cola-lmeval-"))
    cm = load_model(args.model, device="cpu")
    rows = {}
    for name in ("arc_easy", "arc_challenge"):
        samples = load_samples(name, args.data_dir, n=args.n, seed=args.seed)
        rows[name] = samples
        with open(folder / f"{name}.jsonl", "w") as f:
            for s in samples:
                choices = {"label": s.labels, "text": [t for _, t in s.choices]}
                f.write(json.dumps({"id": s.id, "question": s.question, "choices": choices, "answerKey": s.gold}) + "\n")
        (folder / f"cola_{name}.yaml").write_text(TASK_YAML.format(name=f"cola_{name}", path=folder / f"{name}.jsonl"))
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={resolve(args.model)},dtype=float32", tasks=[f"cola_{n}" for n in rows],
        task_manager=TaskManager(include_path=str(folder)), batch_size=8, device="cpu",
    )["results"]
    print(f"\n{'task':15s} {'metric':9s} {'lm-eval':>8s} {'cola':>8s} {'diff (points)':>14s}")
    for name, samples in rows.items():
        evaluator = Evaluator(cm, get_task(name), mode="score", score_style="lmeval")
        outcomes = evaluator.evaluate(Chain.full(cm.depth), samples)
        ours = {"acc": sum(o.correct for o in outcomes) / len(outcomes),
                "acc_norm": sum(bool(o.correct_norm) for o in outcomes) / len(outcomes)}
        for metric in ("acc", "acc_norm"):
            theirs = results[f"cola_{name}"][f"{metric},none"]
            print(f"{name:15s} {metric:9s} {theirs:8.4f} {ours[metric]:8.4f} {100 * (ours[metric] - theirs):14.2f}")


if __name__ == "__main__":
    main()
