"""Work reuse across chains: prefix-cached prefill and shared-prompt option scoring give the plain executor's
results, within a memory bound."""


import pytest
import torch
from helpers import FAMILIES, random_chains, tiny_model

from cola import Chain
from cola.core.executor import forward, prefill
from cola.core.prefix_cache import PrefixCache
from cola.inference.generation import generate
from cola.inference.scoring import inputs_of_pairs, option_token_ids, score_many, score_options


@pytest.mark.parametrize("family", sorted(FAMILIES))  # sliding-window slots must be refilled exactly too
def test_prefix_cached_prefill_equals_plain_prefill(family):
    cm = tiny_model(family)
    ids = torch.randint(3, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    prefix = PrefixCache()
    root = Chain.full(cm.depth)
    chains = [root, root.skip(3, 2), root.repeat(2, 2, 1), root.repeat(2, 2, 1).skip(6, 1), root.skip(3, 1)]
    for chain in chains + random_chains(cm.depth, 4, seed=2):
        cached, _ = prefill(cm, chain, ids, prefix=prefix)
        plain = forward(cm, chain, ids, logits_to_keep=1)
        assert torch.equal(cached, plain), (family, str(chain))
        got = generate(cm, chain, ids, max_new_tokens=6, prefix=prefix)[0].tokens
        assert got == generate(cm, chain, ids, max_new_tokens=6)[0].tokens
    assert prefix.layers_computed < prefix.layers_requested


def test_memory_bound_evicts_and_stays_correct():
    cm = tiny_model("llama")
    ids = torch.randint(3, 96, (1, 10), generator=torch.Generator().manual_seed(1))
    one_node = PrefixCache()
    prefill(cm, Chain((0,)), ids, prefix=one_node)
    prefix = PrefixCache(max_bytes=5 * one_node.nbytes)
    for chain in random_chains(cm.depth, 12, seed=4):
        cached, _ = prefill(cm, chain, ids, prefix=prefix)
        assert torch.equal(cached, forward(cm, chain, ids, logits_to_keep=1))
        assert prefix.nbytes <= prefix.max_bytes


def test_prefix_cache_refuses_another_prompt():
    cm = tiny_model("llama")
    prefix = PrefixCache()
    prefill(cm, Chain.full(cm.depth), torch.tensor([[5, 6, 7]]), prefix=prefix)
    try:
        prefill(cm, Chain.full(cm.depth), torch.tensor([[5, 6, 8]]), prefix=prefix)
    except ValueError as err:
        assert "another prompt" in str(err)
    else:
        raise AssertionError("a prefix cache must not serve another prompt")


def test_shared_prompt_scoring_equals_each_option_alone(smol):
    context = "Question: Which gas do plants take in from the air?\nAnswer:"
    options = ["carbon dioxide", "oxygen", "nitrogen gas from the soil", "helium"]
    prefix = PrefixCache()
    for chain in [Chain.full(30), Chain.parse("0-13,13,14-29"), Chain.parse("0-9,12-29")]:
        scores = score_options(smol, chain, context, options, delimiter=" ")
        alone = []
        for ctx, cont in option_token_ids(smol, context, [" " + o for o in options]):
            logprobs = torch.log_softmax(forward(smol, chain, torch.tensor([ctx + cont[:-1]])).float(), -1)[0]
            alone.append(sum(float(logprobs[len(ctx) + j - 1, t]) for j, t in enumerate(cont)))
        assert max(abs(a - b) for a, b in zip(scores.logprobs, alone)) <= 1e-4
        assert scores.n_chars == [len(o) for o in options]  # acc_norm divides by the text without the delimiter
        assert score_options(smol, chain, context, options, prefix=prefix, delimiter=" ").logprobs == scores.logprobs
    assert prefix.computed_fraction < 1.0


def test_a_left_padded_row_gives_the_next_token_distribution_it_gives_alone():
    cm = tiny_model("qwen3")
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    chain = Chain.parse("0-3,3,5")
    batched = torch.log_softmax(forward(cm, chain, ids, mask)[:, -1].float(), dim=-1)
    alone = torch.log_softmax(forward(cm, chain, torch.tensor([[5, 6, 7]]))[:, -1].float(), dim=-1)
    assert torch.allclose(batched[0], alone[0], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)  # sliding-window slots are extended by the options too
def test_options_reuse_the_chain_prefix_they_ran_on_exactly(family):
    cm = tiny_model(family)
    rng = torch.Generator().manual_seed(5)
    context = torch.randint(3, 96, (9,), generator=rng).tolist()
    pairs = [(context, torch.randint(3, 96, (n,), generator=rng).tolist()) for n in (1, 4, 2, 3)]
    inputs = inputs_of_pairs(pairs, [4, 4, 4, 4])
    prefix = PrefixCache()
    calls = []
    hooks = [layer.register_forward_hook(lambda m, a, out: calls.append(1)) for layer in cm.layers]
    root = Chain.full(cm.depth)
    try:
        asked = [root, root.skip(3, 2), root.repeat(2, 2, 1), root.skip(3, 2), *random_chains(cm.depth, 4, seed=3)]
        for chain in asked:
            before = len(calls)
            cached = score_many(cm, [(chain, inputs, prefix)])[0]
            reused = len(calls) - before
            before = len(calls)
            plain = score_many(cm, [(chain, inputs, None)])[0]
            assert cached == plain, (family, str(chain))  # bitwise: the same floats
            assert reused <= len(calls) - before
        assert any(node.after for node in prefix.lru.values())
        before = len(calls)
        score_many(cm, [(root.skip(3, 2), inputs, prefix)])  # asked before: context and options all cached
        assert len(calls) == before
    finally:
        for hook in hooks:
            hook.remove()
    other = inputs_of_pairs([(context, [7, 8]), (context, [9])], [2, 1])  # other options after the same context
    assert score_many(cm, [(root.skip(3, 2), other, prefix)])[0] == score_many(cm, [(root.skip(3, 2), other, None)])[0]


def test_options_kept_within_the_memory_bound():
    cm = tiny_model("llama")
    context = list(range(5, 15))
    inputs = inputs_of_pairs([(context, [20, 21, 22]), (context, [23])], [3, 1])
    one_node = PrefixCache()
    prefill(cm, Chain((0,)), torch.tensor([context]), prefix=one_node)
    prefix = PrefixCache(max_bytes=6 * one_node.nbytes)
    for chain in random_chains(cm.depth, 12, seed=4):
        assert score_many(cm, [(chain, inputs, prefix)])[0] == score_many(cm, [(chain, inputs, None)])[0]
        assert prefix.nbytes <= prefix.max_bytes
        assert prefix.nbytes == sum(node.nbytes for node in prefix.lru.values())


def test_options_after_the_prompt_need_its_cache():
    cm = tiny_model("llama")
    with pytest.raises(ValueError, match="prompt's cache"):
        forward(cm, Chain.full(cm.depth), torch.tensor([[5, 6]]), prefix=PrefixCache())
