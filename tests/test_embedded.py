"""The executor on the embedded real model (SmolLM2-135M-Instruct, 30 Llama layers)."""

import json

import torch
from helpers import random_chains, reference_model

from cola import Chain
from cola.cli import main
from cola.core.executor import forward
from cola.inference.generation import generate, generate_text

PROMPTS = ["What is the capital of France? Answer in one word.", "Compute 12 + 30. Reply with the number only."]


def test_full_chain_is_the_model(smol):
    ids, mask = smol.encode(PROMPTS[:1])
    with torch.inference_mode():
        expected = smol.model(ids).logits
    assert (forward(smol, Chain.full(smol.depth), ids) - expected).abs().max().item() <= 1e-4
    expected_tokens = smol.model.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False)
    got = generate(smol, Chain.full(smol.depth), ids, mask, max_new_tokens=24)[0]
    assert got.tokens == expected_tokens[0, ids.shape[1] :].tolist()
    assert "Paris" in got.text


def test_padded_batch_matches_hf_generate_and_each_prompt_alone(smol):
    ids, mask = smol.encode(PROMPTS)
    assert not bool(mask.all())  # the prompts differ in length, so the batch is really padded
    chain = Chain.full(smol.depth)
    batched = generate(smol, chain, ids, mask, max_new_tokens=8)
    expected = smol.model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    for b, prompt in enumerate(PROMPTS):
        alone = generate_text(smol, chain, [prompt], max_new_tokens=8)[0]
        assert batched[b].tokens == alone.tokens
        hf = [t for t in expected[b, ids.shape[1] :].tolist()][: len(batched[b].tokens)]
        assert batched[b].tokens == hf


def test_chains_equal_the_physically_rebuilt_model(smol):
    ids, _ = smol.encode(PROMPTS[1:])
    chains = [Chain.parse("0-13,13,14-29"), Chain.parse("0-20,18-20,21-29")]  # a layer, then a block, run again
    chains += random_chains(smol.depth, 1, seed=3)  # skips, repeats and a re-order (skips alone: test_families.py)
    for chain in chains:
        ref = reference_model(smol.model, chain)
        with torch.inference_mode():
            expected = ref(ids).logits
        assert (forward(smol, chain, ids) - expected).abs().max().item() <= 1e-4, str(chain)
        expected_tokens = ref.generate(ids, max_new_tokens=8, do_sample=False)
        assert generate(smol, chain, ids, max_new_tokens=8)[0].tokens == expected_tokens[0, ids.shape[1] :].tolist()
        del ref


def test_cli_generate_json(smol, capsys):
    assert main(["generate", "--chain", "0-13,13,14-29", "--prompt", PROMPTS[0], "--chat", "--json",
                 "--max-new-tokens", "8"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["chain"] == "0-13,13-29"
    direct = generate_text(smol, Chain.parse(out["chain"]), [PROMPTS[0]], max_new_tokens=8)[0]
    assert out["tokens"] == direct.tokens and out["text"] == direct.text


def test_cli_bad_chain_is_one_clear_error_before_the_model_loads(capsys, monkeypatch):
    import cola.core.loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the chain was checked")

    monkeypatch.setattr(cola.core.loading, "load_model", refuse)
    assert main(["generate", "--chain", "0-30", "--prompt", "hi"]) == 2
    assert "layer index 30 out of range for a model with 30 layers" in capsys.readouterr().err
    assert main(["eval", "--task", "synthetic_mc", "--mode", "score", "--chain", "0-2,x"]) == 2
    assert "malformed chain token 'x'" in capsys.readouterr().err


def test_cli_layers(smol, capsys):
    assert main(["layers"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "model: smollm2-135m (llama), depth: 30"
    assert len(lines) == 31 and all(line.split()[1] == "full_attention" for line in lines[1:])


def test_stop_strings_end_generation(smol):
    chain = Chain.full(smol.depth)
    free = generate_text(smol, chain, ["Count from 1 to 10, separated by commas."], max_new_tokens=20)[0]
    assert "4" in free.text and "7" in free.text
    stopped = generate_text(smol, chain, ["Count from 1 to 10, separated by commas."], max_new_tokens=20,
                            stop_strings=["4"])[0]
    assert stopped.stop_reason == "stop_string" and stopped.text.endswith("4")
    assert free.tokens[: len(stopped.tokens)] == stopped.tokens and len(stopped.tokens) < len(free.tokens)
