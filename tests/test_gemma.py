"""The executor on the second real model, Gemma 3 270M (base; 18 layers: five sliding-window layers, then one global,
three times): chains that skip, repeat and re-order across the sliding/global pattern give the logits and greedy
tokens of the model with its layer list physically rebuilt in chain order, `cola eval` scores as the library does, and
as lm-evaluation-harness's HF backend scores on the converted weights. (Every Gemma test is in this file: the suite's
two test processes take a file each, so Gemma loads once.)"""

import os

import pytest
import torch
from helpers import assert_lmeval_agrees, lmeval_agreement, reference_model

from cola import Chain
from cola.cli import main
from cola.core.executor import forward
from cola.core.loading import resolve
from cola.inference.generation import generate

PROMPT = "Question: What is the capital of France?\nAnswer:"


def test_gemma_is_sliding_and_global(gemma):
    assert gemma.depth == 18 and gemma.config.model_type == "gemma3_text"
    assert [i for i, t in enumerate(gemma.layer_types) if t == "full_attention"] == [5, 11, 17]


def test_gemma_chains_equal_the_physically_rebuilt_model(gemma):
    ids, _ = gemma.encode([PROMPT], chat=False)
    full = generate(gemma, Chain.full(gemma.depth), ids, max_new_tokens=6)[0]
    assert "Paris" in full.text
    chains = ["0-4,6-17",                     # a global layer skipped
              "0-3,5,4,5,6-11,9-11,12-16"]    # a global layer moved before a sliding one and run again (two
    #                                           positions, two cache slots), a block across the pattern repeated,
    #                                           the last global layer dropped
    for text in chains:
        chain = Chain.parse(text, gemma.depth)
        ref = reference_model(gemma.model, chain)
        with torch.inference_mode():
            expected = ref(ids).logits
        scale = max(1.0, float(expected.abs().max()))
        assert (forward(gemma, chain, ids) - expected).abs().max().item() <= 1e-4 * scale, text
        expected_tokens = ref.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:].tolist()
        assert generate(gemma, chain, ids, max_new_tokens=8)[0].tokens == expected_tokens, text
        del ref


def test_gemma_cola_eval_in_score_mode(gemma, data_dir, tmp_path, capsys):
    from cola.evaluation.evaluations import eval_header, evaluate_chain
    from cola.evaluation.evaluator import EvalConfig, Evaluator
    from cola.storage import read_eval
    from cola.tasks import get_task, load_samples

    out = tmp_path / "g.jsonl"
    assert main(["eval", "--model", "gemma3-270m", "--task", "arc_easy", "--data-dir", str(data_dir), "--n", "3",
                 "--mode", "score", "--out", str(out)]) == 0
    summary, rows = read_eval(out)
    samples = load_samples("arc_easy", data_dir, n=3, seed=0)
    evaluator = Evaluator(gemma, get_task("arc_easy"), config=EvalConfig(mode="score"))
    direct, direct_rows = evaluate_chain(evaluator, Chain.full(18), samples, 1, eval_header(evaluator, samples, 1))
    assert [r["answer"] for r in rows] == [r["answer"] for r in direct_rows]
    assert summary["acc"] == direct["acc"] and summary["model"] == "gemma3-270m" and summary["depth"] == 18


@pytest.mark.lmeval
def test_gemma_score_mode_agrees_with_lm_eval_per_sample(gemma, data_dir, tmp_path):
    """The second real architecture (sliding and global attention, BOS before the context): lm-eval's HF backend on
    its converted weights, as a user would point lm-eval at them."""
    pytest.importorskip("lm_eval")
    sets = lmeval_agreement().write_sets(tmp_path, data_dir, int(os.environ.get("COLA_LMEVAL_N", "3")), ("arc_easy",))
    assert_lmeval_agrees(gemma, Chain.full(gemma.depth), sets, resolve(gemma.name), tmp_path)
