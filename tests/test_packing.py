"""Many chains run together: one row is exactly the one-chain executor and generator; several rows with different
chains and prompt lengths, prefilling or decoding, packed into the same layer calls, match running each alone;
searching several samples at once equals searching them one by one."""

import pytest
import torch
from helpers import CHAINS, FAMILIES, decode_together_and_alone, packed_prompts, tiny_model

from cola import Chain
from cola.core.executor import advance, forward, prefill, prompt_segment
from cola.core.prefix_cache import PrefixCache
from cola.evaluation.evaluator import EvalConfig, Evaluator
from cola.inference.generation import RowDecoder, generate
from cola.search import MCTSConfig, SearchSpace
from cola.search.run import search_samples
from cola.tasks import get_task, load_samples


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def tiny(request):
    return tiny_model(request.param)


def test_one_request_is_exactly_recomputed_greedy_decoding(tiny):
    """The one decoding loop, one row: each token is the argmax of a fresh forward of prompt + tokens so far (no
    cache at all), bitwise."""
    for chain, ids in zip(map(Chain.parse, CHAINS), packed_prompts([5, 9, 7, 12, 6, 10])):
        got = generate(tiny, chain, ids, max_new_tokens=10)[0]
        tokens = ids[0].tolist()
        for token in got.tokens:
            assert int(forward(tiny, chain, torch.tensor([tokens]))[0, -1].argmax()) == token, str(chain)
            tokens.append(token)


def test_rows_together_match_rows_alone(tiny):
    chains, prompts = [Chain.parse(c) for c in CHAINS], packed_prompts([5, 9, 7, 12, 6, 10], seed=1)
    together = decode_together_and_alone(tiny, chains, prompts, steps=6)
    assert [r.length for r in together] == [p.shape[1] + 6 for p in prompts]
    assert all(len(r.cache.layers) == len(r.chain) for r in together)


def test_rows_together_with_a_mask_built_every_step():
    """With eager attention every decoding step has a real mask, sized from the row's cache: it must be built
    before a packed call writes the row's first slot, or a later single-row layer (a repeat) sees a wrong size."""
    cm = tiny_model("llama")
    cm.model.set_attn_implementation("eager")
    decode_together_and_alone(cm, [Chain.parse("0-5"), Chain.parse("0-2,1,2,3-5")], packed_prompts([6, 9], seed=5), steps=3)


def test_packed_prefills_match_prefill_alone(tiny):
    """Prompts of different lengths through different chains, packed into shared layer calls, some reusing a prefix
    cache that earlier chains filled: logits, every cache slot and the prefix caches' new entries match."""
    chains, prompts = [Chain.parse(c) for c in CHAINS], packed_prompts([5, 9, 7, 12, 6, 10], seed=3)
    warm = Chain.parse("0-3,5")  # fills the prefix caches' first positions, so rows start at different positions

    def caches():
        out = [PrefixCache() if b % 2 else None for b in range(len(chains))]
        for prefix, ids in zip(out, prompts):
            if prefix is not None:
                prefill(tiny, warm, ids, prefix=prefix)
        return out

    alone_prefix, packed_prefix = caches(), caches()
    alone = [prefill(tiny, c, ids, prefix=p) for c, ids, p in zip(chains, prompts, alone_prefix)]
    segments = [prompt_segment(tiny, c, ids, p) for c, ids, p in zip(chains, prompts, packed_prefix)]
    assert {s.start for s in segments} != {0}
    logits = advance(tiny, segments)
    for b, ((expected, cache), seg) in enumerate(zip(alone, segments)):
        assert (logits[b] - expected[0, -1]).abs().max().item() <= 1e-4, str(chains[b])
        assert seg.row.length == prompts[b].shape[1]
        for slot in range(len(chains[b])):
            for got, want in zip((seg.row.cache.layers[slot].keys, seg.row.cache.layers[slot].values),
                                 (cache.layers[slot].keys, cache.layers[slot].values)):
                assert (got - want).abs().max().item() <= 1e-4
    for a, p in zip(alone_prefix, packed_prefix):
        if a is not None:
            assert (p.layers_computed, p.nbytes) == (a.layers_computed, a.nbytes)
            node_a, node_p = a.lookup(chains[1].layers)[-1], p.lookup(chains[1].layers)[-1]
            assert (node_a.hidden - node_p.hidden).abs().max().item() <= 1e-4


def _cached_nodes(prefix):
    """Every node reachable from a prefix cache's roots."""
    nodes, stack = [], list(prefix.roots.values())
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.children.values())
    return nodes


@pytest.mark.parametrize("nodes", [4, 12, 1000])
def test_packed_chains_sharing_one_prefix_cache(tiny, nodes):
    """Chains of one prompt, packed in one call with one prefix cache that none of them has filled yet, compute the
    same shared prefix side by side: each position is cached once, evictions under a tight bound find the entries
    they drop (a packed menu of 201 chains on a long prompt raised KeyError here), and every logit matches."""
    ids = packed_prompts([9], seed=5)[0]
    chains = [Chain.parse(c) for c in CHAINS + ["0-3,5", "0-3,3,4,5", "0-2,4,5", "0-5"]]
    one = PrefixCache()
    prefill(tiny, Chain((0,)), ids, prefix=one)
    prefix = PrefixCache(max_bytes=nodes * one.nbytes)
    for _ in range(2):  # the second round finds some prefixes cached, evicts others
        logits = advance(tiny, [prompt_segment(tiny, c, ids, prefix) for c in chains])
        for b, chain in enumerate(chains):
            expected = forward(tiny, chain, ids, logits_to_keep=1)[0, -1]
            assert (logits[b] - expected).abs().max().item() <= 1e-4, str(chain)
        held = _cached_nodes(prefix)
        assert {id(n) for n in held} == set(prefix.lru)
        assert prefix.nbytes == sum(n.nbytes for n in held) <= prefix.max_bytes


def test_requests_joining_while_others_decode(tiny):
    """Continuous batching: requests added while others are decoding prefill in the same layer calls as those
    decoding tokens; every request's tokens are those of generating it alone."""
    chains, prompts = [Chain.parse(c) for c in CHAINS], packed_prompts([8, 3, 11, 5, 9, 4], seed=4)
    expected = [generate(tiny, c, p, max_new_tokens=9)[0] for c, p in zip(chains, prompts)]
    decoder, got = RowDecoder(tiny, max_new_tokens=9), {}
    for b in range(3):
        decoder.add(b, chains[b], prompts[b])
    for _ in range(2):
        got.update(decoder.step())
    for b in range(3, 6):
        decoder.add(b, chains[b], prompts[b])
    while len(got) < 6:
        got.update(decoder.step())
    assert [(got[b].tokens, got[b].stop_reason) for b in range(6)] == [(e.tokens, e.stop_reason) for e in expected]


def test_decoder_matches_generate_per_chain(tiny):
    chains, prompts = [Chain.parse(c) for c in CHAINS], packed_prompts([8, 3, 11, 5, 9, 4], seed=2)

    def done(b, text):  # rows 1 and 4 end early, so the batch shrinks while the others go on
        return b in (1, 4) and len(text.split()) >= 3

    expected = [generate(tiny, c, p, max_new_tokens=12, is_done=lambda _, text, b=b: done(b, text))[0]
                for b, (c, p) in enumerate(zip(chains, prompts))]
    decoder, got = RowDecoder(tiny, max_new_tokens=12), {}
    for b, (c, p) in enumerate(zip(chains, prompts)):
        decoder.add(b, c, p, is_done=lambda text, b=b: done(b, text))
    while decoder:
        got.update(decoder.step())
    assert [(got[b].tokens, got[b].stop_reason) for b in range(6)] == [(e.tokens, e.stop_reason) for e in expected]
    assert {got[1].stop_reason, got[4].stop_reason} == {"done"} and len(got[1].tokens) < 12


def test_searching_samples_together_equals_one_by_one():
    cm = tiny_model("llama")
    evaluator = Evaluator(cm, get_task("synthetic"), config=EvalConfig(mode="generate"))
    samples = load_samples(get_task("synthetic"), None, n=5, seed=1)
    space, config = SearchSpace(cm.depth), MCTSConfig(sims=12)
    alone = {r["id"]: r for r in search_samples(evaluator, samples, space, config, seed=4)}
    together = list(search_samples(evaluator, samples, space, config, seed=4, batch=3))
    assert sorted(r["id"] for r in together) == sorted(alone)
    for record in together:
        expected = alone[record["id"]]
        assert [(e["chain"], e["answer"]) for e in record["evaluations"]] == \
            [(e["chain"], e["answer"]) for e in expected["evaluations"]]
        assert record["best"] == expected["best"]
