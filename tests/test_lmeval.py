"""`cola eval --mode score` against lm-evaluation-harness itself, per sample (the test set-up installs lm-eval).

The seeded ARC-Easy, ARC-Challenge and CommonsenseQA subsets `cola eval` draws are written to a temporary folder
with an lm-eval task file per set, in the format of lm-eval's own ARC task (``Question: {question}\\nAnswer:``
scored against `` {choice}``) or its ``commonsense_qa`` task (options listed, labels scored); lm-eval's HF backend
runs the embedded model's converted weights on them, and CoLa's evaluator the same rows. Every sample's ``acc`` and
``acc_norm`` must agree. ``COLA_LMEVAL_N`` sets the rows per set (default 6; docs/results/full-depth.md has every
row; tests/test_gemma.py compares Gemma 3). lm-eval through CoLa's own backend (``--model cola``) agrees with ``cola eval`` too, and its generate_until
writes what `cola generate` writes.
"""

import os

import pytest

lm_eval = pytest.importorskip("lm_eval")

from helpers import assert_lmeval_agrees, lmeval_agreement  # noqa: E402

from cola import Chain  # noqa: E402
from cola.core.loading import resolve  # noqa: E402

pytestmark = [pytest.mark.lmeval, pytest.mark.slow]

_write_sets = lmeval_agreement().write_sets


def test_score_mode_agrees_with_lm_eval_per_sample(smol, data_dir, tmp_path):
    sets = _write_sets(tmp_path, data_dir, int(os.environ.get("COLA_LMEVAL_N", "6")),
                       ("arc_easy", "arc_challenge", "csqa"))
    assert_lmeval_agrees(smol, Chain.full(smol.depth), sets, resolve(smol.name), tmp_path)


def test_an_exported_chain_agrees_with_cola_eval_of_the_chain(smol, data_dir, tmp_path):
    """lm-eval on the folder `cola export` writes scores what `cola eval --chain C --mode score` scores."""
    from cola.core.export import export_chain

    chain = Chain.parse("0-9,12-29")
    sets = _write_sets(tmp_path, data_dir, int(os.environ.get("COLA_LMEVAL_N", "6")), ("arc_easy",))
    assert_lmeval_agrees(smol, chain, sets, export_chain(smol, chain, tmp_path / "exported"), tmp_path)


def test_lm_eval_through_the_cola_backend_equals_cola_eval_per_sample(smol, data_dir, tmp_path):
    """`--model cola` with a chain (full depth, and one that skips and repeats) scores what `cola eval --chain`
    scores, sample by sample, on a local ARC-Easy task of 6 rows (the full test sets: bench/lmeval_agreement.py)."""
    from cola.lmeval import ColaLM

    sets = _write_sets(tmp_path, data_dir, 6, ("arc_easy",))
    for chain in (Chain.full(smol.depth), Chain.parse("0-13,13,14-25,28,29")):
        assert_lmeval_agrees(smol, chain, sets, ColaLM(cm=smol, chain=str(chain).replace(",", "+")), tmp_path)


def test_generate_until_through_the_backend_equals_cola_generate(smol, data_dir, tmp_path):
    """lm-eval's generate_until on a local GSM8K task (1 row) through `--model cola` writes what `cola generate`
    writes for the same context, cut at the task's first stop string."""
    import json

    from helpers import generate_task_yaml
    from lm_eval.tasks import TaskManager

    from cola.inference.generation import generate_text
    from cola.lmeval import ColaLM

    rows = (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:1]
    (tmp_path / "gsm8k.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "cola_gsm8k.yaml").write_text(generate_task_yaml(
        "cola_gsm8k", tmp_path / "gsm8k.jsonl", "Question: {{question}}\nAnswer:", ["\n\n", "Question:"], 16))
    chain = Chain.parse("0-13,13,14-29")
    output = lm_eval.simple_evaluate(model=ColaLM(cm=smol, chain="0-13+13+14-29"), tasks=["cola_gsm8k"],
                                     task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
                                     log_samples=True)  # lm-eval's own tasks: not indexed (seconds)
    logged = output["samples"]["cola_gsm8k"]
    assert len(logged) == 1
    for row in logged:
        context = f"Question: {row['doc']['question']}\nAnswer:"
        ours = generate_text(smol, chain, [context], chat=False, max_new_tokens=16, stop_strings=["\n\n", "Question:"])
        text = ours[0].text
        for stop in ("\n\n", "Question:"):
            text = text.split(stop)[0]
        assert row["resps"][0][0] == text, json.dumps(row["doc"]["id"])
