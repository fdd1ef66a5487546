"""`cola eval --mode score` against lm-evaluation-harness itself, per sample (opt-in: needs `pip install -e .[lmeval]`).

The seeded ARC-Easy and ARC-Challenge subsets `cola eval` draws are written to a temporary folder with an lm-eval
task file per set in the format of lm-eval's own ARC task (``Question: {question}\\nAnswer:`` scored against
`` {choice}``); lm-eval's HF backend runs the embedded model's converted weights on them, and CoLa's evaluator the
same rows. Every sample's ``acc`` and ``acc_norm`` must agree. ``COLA_LMEVAL_N`` sets the rows per set (default 50;
the README's figure is 500).
"""

import importlib.util
import os
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")

from cola import Chain  # noqa: E402
from cola.loading import resolve  # noqa: E402

pytestmark = [pytest.mark.lmeval, pytest.mark.slow]

_SPEC = importlib.util.spec_from_file_location(
    "lmeval_agreement", Path(__file__).resolve().parents[1] / "bench" / "lmeval_agreement.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)
_write_sets = bench.write_sets


def _agree(cm, chain, sets, pretrained, folder):
    """lm-eval's HF backend on ``pretrained`` against CoLa's evaluator running ``chain`` of ``cm``: no sample's
    verdicts differ (float32)."""
    for name, result in bench.disagreements(cm, chain, sets, pretrained, folder).items():
        assert not result["differ"], (f"{name}: {len(result['differ'])} of {result['n']} samples differ (id, cola "
                                      f"acc, lm-eval acc, ...): {result['differ'][:5]}")


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
