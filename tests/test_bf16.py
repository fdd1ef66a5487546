"""bf16 and verdicts that do not depend on the batch: a chain in bf16 equals the physically rebuilt model in bf16; a
sample's scores and tokens are bitwise equal alone and inside batches of other samples, other chains and other
lengths, in both dtypes and both modes; a resumed run in another dtype is refused; ``--dtype auto`` keeps float32
on a processor without native bf16; bf16 products through pre-packed weights equal the plain ones bitwise."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import EOS, PAD, mc_rows, reference_model, tiny_model

import cola.core.invariant
import cola.core.loading
from cola import Chain
from cola.cli import main
from cola.core.executor import forward
from cola.core.invariant import InvariantLinear, onednn_bf16, packed_weight
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.inference.generation import generate
from cola.storage import read_eval
from cola.tasks import get_task

CHAINS = [Chain.parse("0-5"), Chain.parse("0-2,2,3-5"), Chain.parse("0,1,4,5"), Chain.parse("5,4,3,2,1,0,0")]


def _bf16(family: str):
    cm = tiny_model(family)
    cm.model.to(torch.bfloat16)
    return cm


def test_a_chain_in_bf16_equals_the_physically_rebuilt_model_in_bf16():
    for family in ("llama", "gemma3_text"):
        cm = _bf16(family)
        ids = torch.tensor([[1, 7, 9, 11, 13, 17, 19, 23, 29, 31]])
        for chain in CHAINS:
            ref = reference_model(cm.model, chain)
            with torch.inference_mode():
                expected = ref(ids).logits
            got = forward(cm, chain, ids)
            assert got.dtype == torch.bfloat16 and torch.equal(got, expected), (family, str(chain))
            tokens = ref.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
            assert generate(cm, chain, ids, max_new_tokens=6)[0].tokens == tokens[0, ids.shape[1]:].tolist()


def test_a_samples_numbers_are_bitwise_the_same_alone_and_inside_any_batch():
    """Planted batches: samples of different lengths, each through several chains, run one at a time, all at once,
    and in two other groupings; every option log-likelihood, token and token log-probability must be equal."""
    task = get_task("mc_jsonl")
    rows = mc_rows(6, seed=3)
    for i, row in enumerate(rows):  # lengths 5 to 15 words
        row["question"] = " ".join([row["question"]] * (1 + i % 3))
    samples = [task.parse_row(r, r["id"]) for r in rows]
    for dtype in (torch.float32, torch.bfloat16):
        cm = tiny_model("llama")
        cm.model.to(dtype)
        assert any(isinstance(m, InvariantLinear) for m in cm.model.modules())
        for mode in ("score", "generate"):
            evaluator = Evaluator(cm, task, config=EvalConfig(mode=mode, chat=False, max_new_tokens=5))
            pairs = [(c, s) for c in CHAINS for s in samples]
            alone = {(str(c), s.id): evaluator.evaluate(c, [s])[0] for c, s in pairs}

            def grouped(size: int, order: list) -> dict:
                out = {}
                for start in range(0, len(order), size):
                    requests = evaluator.requests()
                    for c, s in order[start : start + size]:
                        requests.submit((str(c), s.id), c, s)
                    out.update(requests.drain())
                return out

            for size, order in ((len(pairs), pairs), (8, pairs[::-1]), (3, pairs[1::2] + pairs[::2])):
                together = grouped(size, order)
                for key, outcome in alone.items():
                    other = together[key]
                    assert (outcome.output, outcome.mean_logprob, outcome.answer) == (
                        other.output, other.mean_logprob, other.answer), (str(dtype), mode, size, key)


def test_a_resumed_run_in_another_dtype_is_refused(tiny_folder, tmp_path, capsys):
    run = ["search", "--model", str(tiny_folder), "--device", "cpu", "--task", "synthetic", "--n", "2", "--sims", "6",
           "--out", str(tmp_path / "run"), "--quiet"]
    assert main(run) == 0
    capsys.readouterr()
    assert main(run + ["--dtype", "bfloat16"]) == 2
    err = capsys.readouterr().err
    assert "holds results of another config (dtype: 'float32' -> 'bfloat16')" in err and err.count("\n") == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dtype"] == "float32"
    out = tmp_path / "e.jsonl"  # an evaluation's summary records its dtype too, and refuses another on resume
    evaluation = ["eval", "--model", str(tiny_folder), "--device", "cpu", "--task", "synthetic_mc", "--mode", "score",
                  "--n", "4", "--out", str(out)]
    assert main(evaluation + ["--dtype", "bfloat16"]) == 0
    assert read_eval(out)[0]["dtype"] == "bfloat16" and read_eval(out)[0]["batch_invariant"] is True
    assert main(evaluation + ["--dtype", "float32"]) == 2
    assert "dtype: 'bfloat16' -> 'float32'" in capsys.readouterr().err


def test_auto_keeps_float32_on_a_processor_without_native_bf16(tiny_folder, monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(cola.core.loading, "cpu_flags", lambda: {"avx2", "fma", "avx512f"})
    assert not cola.core.loading.native_bf16() and cola.core.loading.auto_dtype(cpu) == torch.float32
    assert cola.core.loading.load_model(str(tiny_folder), device="cpu", dtype="auto").dtype == torch.float32
    for flags in ({"avx512_bf16"}, {"amx_bf16", "amx_tile"}, {"fp", "asimd", "bf16"}):
        monkeypatch.setattr(cola.core.loading, "cpu_flags", lambda flags=flags: flags)
        assert cola.core.loading.auto_dtype(cpu) == torch.bfloat16
    assert cola.core.loading.load_model(str(tiny_folder), device="cpu", dtype="auto").dtype == torch.bfloat16
    assert cola.core.loading.native_bf16({"flags", "sse4_2"}) is False
    assert cola.core.loading.processor({"avx2", "amx_bf16", "fma", "avx512f"}).endswith(" (amx_bf16 avx512f avx2)")
    assert cola.core.loading.processor({"sse4_2"}).endswith(" (no listed extensions)")


def test_bf16_products_read_a_prepacked_weight_bitwise_equal_to_the_plain_product():
    """Where oneDNN has native bf16 (the project's machines), a bf16 InvariantLinear multiplies through its weight
    pre-packed, with results bitwise those of F.linear; an in-place change of the weight repacks it; float32 and a
    weight that autograd tracks stay plain."""
    if not onednn_bf16():
        pytest.skip("this CPU has no native bf16 in oneDNN: the products stay plain")
    torch.manual_seed(0)
    layer = InvariantLinear(96, 160, bias=True, dtype=torch.bfloat16)
    x = torch.randn(40, 96, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert packed_weight(layer) is not None
        for rows in range(1, 41):
            assert torch.equal(layer.product(x[:rows]), F.linear(x[:rows], layer.weight, layer.bias)), rows
        assert torch.equal(layer(x[None]), F.linear(x[None], layer.weight, layer.bias))
    before = packed_weight(layer)
    with torch.no_grad():
        layer.weight.mul_(2)
        assert packed_weight(layer) is not before
        assert torch.equal(layer.product(x), F.linear(x, layer.weight, layer.bias))
    assert packed_weight(layer) is None  # autograd on, weight trainable: plain, so gradients flow
    assert packed_weight(InvariantLinear(96, 160, dtype=torch.float32).requires_grad_(False)) is None


def test_a_prepacked_product_that_differs_from_the_plain_one_is_not_used(monkeypatch):
    if not onednn_bf16():
        pytest.skip("this CPU has no native bf16 in oneDNN: the products stay plain")
    layer = InvariantLinear(32, 48, bias=False, dtype=torch.bfloat16).requires_grad_(False)
    real = cola.core.invariant.packed_linear
    monkeypatch.setattr(cola.core.invariant, "packed_linear", lambda x, w, b: real(x, w, b) + 1)
    x = torch.randn(5, 32, dtype=torch.bfloat16)
    with pytest.warns(UserWarning, match="pre-packed bfloat16 product differs"):
        assert packed_weight(layer) is None
    assert torch.equal(layer.product(x), F.linear(x, layer.weight))
