"""Packed rows' attention in one call (cola.core.packing: ``one_call`` SDPA under a block mask, ``flex`` attention under
the same block mask): the logits, cache slots and answers of the per-row path, for prefill, decode, repeated layers,
sliding-window layers and Gemma 2's soft-capping (packed by ``flex`` only; ``one_call`` refuses it, with the
reason)."""

import pytest
import torch
from helpers import CHAINS, FAMILIES, decode_together_and_alone, packed_prompts, tiny_model

from cola import Chain
from cola.core.executor import advance, prefill, prompt_segment
from cola.core.packing import _one_call, block_mask, packed_mode, packs
from cola.core.prefix_cache import PrefixCache
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.search import MCTSConfig, SearchSpace
from cola.search.run import search_samples
from cola.tasks import get_task, load_samples

FLEX_FAMILIES = ("gemma2", "gemma3_text", "mistral", "llama", "qwen3_moe")  # eager flex is slow on a CPU


def test_block_mask_by_hand():
    # row 0: 2 new queries after 1 cached key (3 keys); row 1: one decoded token over 2 keys; window 2 on the second
    full = block_mask([(0, 2), (2, 3)], [3, 2], None, torch.device("cpu"))
    assert full.int().tolist() == [[1, 1, 0, 0, 0],
                                   [1, 1, 1, 0, 0],
                                   [0, 0, 0, 1, 1]]
    sliding = block_mask([(0, 2), (2, 3)], [3, 2], 2, torch.device("cpu"))
    assert sliding.int().tolist() == [[1, 1, 0, 0, 0],
                                      [0, 1, 1, 0, 0],
                                      [0, 0, 0, 1, 1]]


def test_modes_and_what_they_pack():
    cm = tiny_model("gemma2")
    assert packed_mode(cm) == "per_row"  # auto on a CPU
    assert not packs(cm, "one_call", "full_attention")  # SDPA cannot soft-cap
    assert packs(cm, "flex", "sliding_attention") and packs(cm, "flex", "full_attention")
    llama = tiny_model("llama")
    assert packs(llama, "per_row", "full_attention") and not packs(llama, "per_row", "sliding_attention")
    assert packs(llama, "one_call", "sliding_attention")
    q = torch.zeros(1, 4, 3, 16)
    with pytest.raises(ValueError, match="no attention-logit soft-capping; use packed_attention='flex'"):
        _one_call(q, q, q, torch.ones(3, 3, dtype=torch.bool), None, 20.0, "one_call")
    llama.packed_attention = "two_calls"
    with pytest.raises(ValueError, match="packed attention must be auto or one of"):
        packed_mode(llama)


def _cases():
    return [(f, "one_call") for f in sorted(FAMILIES)] + [(f, "flex") for f in FLEX_FAMILIES]


@pytest.mark.parametrize("family,mode", _cases())
def test_one_call_prefill_and_decode_match_each_row_alone(family, mode):
    cm = tiny_model(family)
    cm.packed_attention = mode
    chains, prompts = [Chain.parse(c) for c in CHAINS], packed_prompts([5, 9, 7, 12, 6, 10], seed=3)
    warm = Chain.parse("0-3,5")  # rows resume from prefix caches at different positions
    prefixes = [PrefixCache() if b % 2 else None for b in range(len(chains))]
    for prefix, ids in zip(prefixes, prompts):
        if prefix is not None:
            prefill(cm, warm, ids, prefix=prefix)
    segments = [prompt_segment(cm, c, ids, p) for c, ids, p in zip(chains, prompts, prefixes)]
    logits = advance(cm, segments)
    cm.packed_attention = "per_row"
    for b, (chain, ids) in enumerate(zip(chains, prompts)):
        expected, cache = prefill(cm, chain, ids)  # alone, the plain layer loop
        assert (logits[b] - expected[0, -1]).abs().max().item() <= 1e-4, str(chain)
        for slot in range(len(chain)):
            got, want = segments[b].row.cache.layers[slot], cache.layers[slot]
            assert (got.keys - want.keys).abs().max().item() <= 1e-4
    cm.packed_attention = mode
    decode_together_and_alone(cm, chains, prompts, steps=4)  # decoding together against each row alone


def test_one_call_search_gives_the_answers_of_the_per_row_path():
    cm = tiny_model("gemma3_text")  # sliding and global layers
    samples = load_samples(get_task("synthetic"), None, n=4, seed=1)
    space, config = SearchSpace(cm.depth), MCTSConfig(sims=15)

    def records(mode):
        cm.packed_attention = mode
        evaluator = Evaluator(cm, get_task("synthetic"), config=EvalConfig(mode="generate"))
        return {r["id"]: [(e["chain"], e["answer"]) for e in r["evaluations"]]
                for r in search_samples(evaluator, samples, space, config, seed=2, batch=4)}

    assert records("one_call") == records("per_row")
