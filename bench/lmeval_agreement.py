"""`cola eval --mode score` against lm-evaluation-harness, sample by sample, in a chosen dtype.

    .venv/bin/pip install -e ".[lmeval]"
    .venv/bin/python bench/lmeval_agreement.py --data-dir ../shared/data --n 500 --dtype bfloat16
    .venv/bin/python bench/lmeval_agreement.py --data-dir ../shared/data --n 0 --sets arc_easy,arc_challenge --dtype float32
    .venv/bin/python bench/lmeval_agreement.py --data-dir ../shared/data --n 0 --sets arc_easy --backend cola --dtype float32

The seeded subsets (`--n 0`: every row) of the sets `cola eval` draws are written to a temporary folder with an
lm-eval task file each: lm-eval's own ARC format (``Question: {question}\nAnswer:`` scored against `` {choice}``) for
ARC, its ``commonsense_qa`` format (the options listed, the labels scored) for CSQA. lm-eval runs them through its
``hf`` backend on the embedded model's converted weights (or through CoLa's own backend, ``--backend cola``) in
--dtype (batch size --lm-eval-batch), and CoLa's evaluator the same rows in the same dtype, one at a time as `cola
eval` asks them. It prints, per set, each side's acc and acc_norm and the samples whose verdicts differ.
tests/test_lmeval.py asserts that none differ in float32.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

CSQA_FIELDS = {  # lm-eval's own commonsense_qa task, over rows of CoLa's multiple-choice shape
    "doc_to_text": "Question: {{ question.strip() }}"
                   + "".join(f"\n{x}. {{{{choices[{i}].text}}}}" for i, x in enumerate("ABCDE")) + "\nAnswer:",
    "doc_to_target": "answerKey", "doc_to_choice": list("ABCDE")}


def write_sets(folder: Path, data_dir, n: int, names) -> dict:
    """The seeded subsets of ``names`` as JSONL files under ``folder``, each with an lm-eval task file
    ``cola_NAME.yaml``; returns name -> samples."""
    from cola.tasks import load_samples
    from cola.tasks.lmeval import ARC_FIELDS, task_yaml

    sets = {name: load_samples(name, data_dir, n=n, seed=0) for name in names}
    for name, samples in sets.items():
        with open(folder / f"{name}.jsonl", "w") as f:
            for s in samples:
                choices = [{"label": label, "text": text} for label, text in s.choices]
                f.write(json.dumps({"id": s.id, "question": s.question, "choices": choices, "answerKey": s.gold}) + "\n")
        path = folder / f"{name}.jsonl"
        fields = {**ARC_FIELDS, **CSQA_FIELDS} if name == "csqa" else ARC_FIELDS
        task_file = task_yaml(f"cola_{name}", path, **fields)
        (folder / f"cola_{name}.yaml").write_text(task_file)
    return sets


def disagreements(cm, chain, sets: dict, pretrained, folder: Path, dtype: str = "float32",
                  batch_size: int = 8, cola_batch: int = 1) -> dict:
    """lm-eval on ``pretrained`` against CoLa's evaluator running ``chain`` of ``cm``, per sample: for each set, both
    sides' acc and acc_norm counts and the samples whose verdicts differ (id, CoLa acc, lm-eval acc, CoLa acc_norm,
    lm-eval acc_norm). ``pretrained`` is what lm-eval's ``hf`` backend loads (a folder), or an lm-eval model object
    (CoLa's own backend, :class:`cola.lmeval.ColaLM`). CoLa asks ``cola_batch`` samples together (1: one at a time, as
    `cola eval` does in score mode; on a CPU any batch gives the same numbers, :mod:`cola.core.invariant`)."""
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    from cola.evaluation.evaluator import EvalConfig, Evaluator
    from cola.tasks import get_task

    backend = {"model": pretrained} if isinstance(pretrained, LM) else {
        "model": "hf", "model_args": f"pretrained={pretrained},dtype={dtype}"}
    output = lm_eval.simple_evaluate(
        **backend, tasks=[f"cola_{n}" for n in sets],
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        batch_size=batch_size, device=str(cm.device), log_samples=True)
    result = {}
    for name, samples in sets.items():
        theirs = {row["doc"]["id"]: row for row in output["samples"][f"cola_{name}"]}
        if len(theirs) != len(samples):
            raise RuntimeError(f"{name}: lm-eval scored {len(theirs)} of {len(samples)} samples")
        evaluator = Evaluator(cm, get_task(name), config=EvalConfig(mode="score", score_style="lmeval"))
        outcomes = evaluator.evaluate_many(chain, samples, cola_batch)
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
    from cola.core.loading import resolve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=500, help="seeded rows per set (0: all)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--sets", default="arc_easy", help="comma-separated: arc_easy, arc_challenge, csqa")
    parser.add_argument("--lm-eval-batch", type=int, default=8, help="lm-eval's batch size (default 8)")
    parser.add_argument("--backend", default="hf", choices=("hf", "cola"),
                        help="lm-eval's model: its hf backend on the converted weights, or CoLa's own backend (full "
                             "depth) (default hf)")
    parser.add_argument("--cola-batch", type=int, default=1,
                        help="samples CoLa asks together (default 1, as `cola eval` in score mode; on a CPU every batch "
                             "gives the same numbers)")
    args = parser.parse_args()
    cm = load_model(args.model, device="cpu", dtype=args.dtype)
    if args.backend == "cola":
        from cola.lmeval import ColaLM

        pretrained = ColaLM(cm=cm, batch_size=args.lm_eval_batch)
    else:
        pretrained = resolve(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sets = write_sets(folder, args.data_dir, args.n, args.sets.split(","))
        result = disagreements(cm, Chain.full(cm.depth), sets, pretrained, folder, args.dtype, args.lm_eval_batch,
                               args.cola_batch)
    for name, r in result.items():
        print(f"{name} ({r['n']} samples, {args.dtype}, lm-eval's {args.backend} backend, batch {args.lm_eval_batch}): "
              f"cola acc {r['cola_acc']} "
              f"acc_norm {r['cola_acc_norm']}; lm-eval acc {r['lmeval_acc']} acc_norm {r['lmeval_acc_norm']}; "
              f"{len(r['differ'])} samples differ in a verdict: {r['differ'][:10]}")


if __name__ == "__main__":
    main()
